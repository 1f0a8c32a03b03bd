"""One home for the class names of a saved model (portanet.app.run_data.saved_labels), which
``portanet predict`` and ``portanet draw`` both answer with."""

from __future__ import annotations

from pathlib import Path

import pytest

import portanet as pn
from portanet.app.run_data import saved_labels
from portanet.saving import npz


def saved(tmp_path: Path, extra: dict) -> tuple[pn.Sequential, str, dict]:
    model = pn.Sequential([pn.Dense(4, 10)], backend="numpy")
    path = str(tmp_path / "m.npz")
    pn.save(model, path, **extra)
    return model, path, npz.load_metadata(path)["extra"]


def test_the_metadata_names_come_first(tmp_path: Path) -> None:
    names = [f"class {i}" for i in range(10)]
    model, path, extra = saved(tmp_path, {"class_names": names, "dataset": "fashion-mnist"})
    assert saved_labels(model, path, extra) == names


def test_else_the_data_sets_names(tmp_path: Path) -> None:
    model, path, extra = saved(tmp_path, {"dataset": "fashion-mnist"})
    assert saved_labels(model, path, extra) == list(pn.data.get_spec("fashion-mnist").classes)


def test_else_numbers_and_an_unknown_data_set_is_refused(tmp_path: Path) -> None:
    model, path, extra = saved(tmp_path, {})
    assert saved_labels(model, path, extra) == [str(i) for i in range(10)]
    model, path, extra = saved(tmp_path, {"dataset": "cifar"})
    with pytest.raises(ValueError, match="does not know"):
        saved_labels(model, path, extra)
