"""Issue 32, part B: evaluate maps a built-in data set's labels by the model's class names (or
refuses), MPI ranks agree on the optimizer, and a file route bounds what it allocates before it
allocates (model files declaring huge layers, encrypted or deflate64 members, data files whose
headers declare 10**12 images)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import portanet as pn
from portanet.app import cli, run_data

# --- evaluate on a built-in data set: labels by the model's class names ------------------------


@pytest.fixture
def fake_mnist(monkeypatch: pytest.MonkeyPatch) -> tuple[np.ndarray, np.ndarray]:
    """``load_dataset`` answers a small MNIST-shaped set with labels 0..9, two of each."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (20, 28, 28)).astype(np.uint8)
    y = np.repeat(np.arange(10, dtype=np.uint8), 2)
    monkeypatch.setattr(run_data.data, "load_dataset", lambda name, data_dir=None: ((x, y), (x, y)))
    return x, y


def saved_model(path: Path, names: list[str], dataset: str = "mnist") -> Path:
    pn.save(pn.Sequential([pn.Dense(784, len(names))], backend="numpy"), str(path),
            class_names=names, dataset=dataset)
    return path


def test_a_model_of_labels_1_to_10_is_refused_on_mnist(
        fake_mnist: tuple, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = saved_model(tmp_path / "m.npz", [str(i) for i in range(1, 11)])
    assert cli.main(["evaluate", str(model), "--backend", "numpy"]) == 2
    captured = capsys.readouterr()
    line = captured.err.strip()
    assert "\n" not in line and "Traceback" not in line, line
    assert "MNIST's class '0' is not a class the model predicts (1, 2, 3, 4, 5, 6, 7, 8, 9, 10)" \
        in line and "--dataset-file" in line
    assert "test accuracy" not in captured.out


def test_a_built_in_data_set_is_mapped_by_the_models_names(fake_mnist: tuple) -> None:
    _, y = fake_mnist
    # the labels 1..10 model on MNIST's 1..9 only: each digit is the class of its name
    names = tuple(str(i) for i in range(1, 11))
    classes, (mapped,) = run_data.spec_classes(pn.data.get_spec("mnist"), y[y > 0],
                                               classes=names)
    assert classes == names and mapped.tolist() == (y[y > 0] - 1).tolist()
    # names in another order, through load_data
    backwards = [str(i) for i in range(9, -1, -1)]
    loaded = run_data.load_data("mnist", classes=backwards)
    assert loaded.class_names == tuple(backwards)
    assert loaded.test[1].tolist() == (9 - y).tolist()
    # the data set's own names (or none) keep the labels
    for same in (None, list(pn.data.get_spec("mnist").classes)):
        assert run_data.load_data("mnist", classes=same).test[1].tolist() == y.tolist()


def test_plain_numbers_on_a_named_data_set_keep_the_labels(fake_mnist: tuple) -> None:
    _, y = fake_mnist
    loaded = run_data.load_data("fashion-mnist", classes=[str(i) for i in range(10)])
    assert loaded.test[1].tolist() == y.tolist()
    assert loaded.class_names == pn.data.get_spec("fashion-mnist").classes
    with pytest.raises(ValueError, match="Fashion-MNIST's class 'T-shirt/top' is not a class"):
        run_data.load_data("fashion-mnist", classes=["cat", "dog"])
