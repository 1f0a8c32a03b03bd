"""Model files that are damaged, edited or not ours: one clear line, before any allocation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import portanet as pn
from portanet.saving import npz as io
from tests.helpers import assert_load_refused_within


def small_model() -> pn.Sequential:
    return pn.Sequential([pn.Dense(4, 3), pn.ReLU(), pn.Dense(3, 2)], backend="numpy", seed=0)


def write(path: Path, metadata: object, arrays: dict[str, np.ndarray]) -> Path:
    """A file in the model format with whatever metadata and arrays a test wants."""
    raw = np.frombuffer(json.dumps(metadata).encode("utf-8"), dtype=np.uint8)
    np.savez(path, **arrays, **{io.METADATA_KEY: raw})
    return path


def saved(tmp_path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    pn.save(small_model(), tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as data:
        arrays = {k: data[k] for k in data.files if k != io.METADATA_KEY}
    return io.load_metadata(tmp_path / "m.npz"), arrays


@pytest.mark.parametrize(("change", "message"), [
    (lambda m: m.pop("layers"), "no list of layers"),
    (lambda m: m.update(layers=[]), "no list of layers"),
    (lambda m: m.update(layers=["Dense"]), "layer 0 is described by a str"),
    (lambda m: m.update(extra="a string"), "'extra' is a str"),
    (lambda m: m.update(dtype="int8"), "dtype 'int8'"),
    (lambda m: m.update(input_shape=[-1, "x"]), "input_shape"),
])
def test_malformed_metadata_is_one_line(tmp_path: Path, change, message: str) -> None:
    metadata, arrays = saved(tmp_path)
    change(metadata)
    path = write(tmp_path / "bad.npz", metadata, arrays)
    with pytest.raises(ValueError, match=message) as info:
        pn.load(path, backend="numpy")
    assert str(path) in str(info.value)


def test_metadata_that_is_a_list(tmp_path: Path) -> None:
    _, arrays = saved(tmp_path)
    path = write(tmp_path / "list.npz", ["portanet-model"], arrays)
    with pytest.raises(ValueError, match="metadata is a list"):
        pn.load(path, backend="numpy")


def test_declared_shapes_are_checked_before_anything_is_allocated(tmp_path: Path) -> None:
    """A small file declaring Dense(4, 200000) is refused without allocating its weights."""
    metadata, arrays = saved(tmp_path)
    metadata["layers"][0]["out_features"] = 200_000
    metadata["layers"][2]["in_features"] = 200_000
    path = write(tmp_path / "big.npz", metadata, arrays)
    assert_load_refused_within(path, r"0\.W is \(4, 3\), its layer declares \(4, 200000\)",
                               1_000_000)


def test_missing_and_unexpected_arrays_are_named(tmp_path: Path) -> None:
    metadata, arrays = saved(tmp_path)
    arrays["9.W"] = arrays.pop("2.b")
    path = write(tmp_path / "edited.npz", metadata, arrays)
    with pytest.raises(ValueError, match=r"missing 2\.b; unexpected 9\.W"):
        pn.load(path, backend="numpy")


def test_non_finite_weights_are_refused_on_load_and_save(tmp_path: Path) -> None:
    metadata, arrays = saved(tmp_path)
    arrays["2.W"][0, 0] = np.nan
    path = write(tmp_path / "nan.npz", metadata, arrays)
    with pytest.raises(ValueError, match=r"2\.W hold NaN or infinite values"):
        pn.load(path, backend="numpy")
    model = small_model()
    model.layers[0].load_param("b", np.array([np.inf, 0, 0]))
    with pytest.raises(ValueError, match=r"not saving .*0\.b hold NaN"):
        pn.save(model, tmp_path / "never.npz")
    assert not (tmp_path / "never.npz").exists()


def test_a_text_file_is_not_a_model_and_no_pickle_advice(tmp_path: Path) -> None:
    path = tmp_path / "notes.npz"
    path.write_text("just some text\n")
    with pytest.raises(ValueError, match="not an .npz archive") as info:
        pn.load(path, backend="numpy")
    assert "allow_pickle" not in str(info.value)


def test_a_fifo_is_refused_not_read(tmp_path: Path) -> None:
    import os

    path = tmp_path / "pipe.npz"
    os.mkfifo(path)
    with pytest.raises(ValueError, match="pipe.npz"):
        pn.load(path, backend="numpy")


def test_predict_refuses_a_model_with_non_finite_weights(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from portanet.app import cli
    metadata, arrays = saved(tmp_path)
    arrays["0.W"][1, 1] = np.inf
    path = write(tmp_path / "inf.npz", metadata, arrays)
    assert cli.main(["predict", str(path), str(tmp_path / "whatever.png")]) == 2
    assert "NaN or infinite" in capsys.readouterr().err
