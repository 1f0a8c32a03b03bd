"""Issue 14 on the command line: every bad input is one clear line before any work, no input
is ever overwritten, and divergence is loud (exit 1, nothing saved, no invalid JSON)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

import portanet as pn
from portanet.app import arg_types as options
from portanet.app import cli
from tests.helpers import make_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data") / "small.npz", n_train=300, n_test=100)


@pytest.fixture(scope="module")
def model_path(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("model")
    assert cli.main(["train", "--dataset-file", str(dataset), "--model", "linear", "--backend",
                     "numpy", "--epochs", "1", "--validation", "0", "--quiet",
                     "--save", str(folder / "m.npz"), "--out", str(folder / "run")]) == 0
    return folder / "m.npz"


def train(dataset: Path, tmp_path: Path, *extra: str) -> int:
    return cli.main(["train", "--dataset-file", str(dataset), "--model", "linear", "--backend",
                     "numpy", "--epochs", "1", "--validation", "0", "--quiet", *extra])


# --- outputs are checked before any work, and never an input ----------------------------------


def test_save_over_the_dataset_file_is_refused_and_the_file_kept(
        dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    copy = tmp_path / "mydata.npz"
    copy.write_bytes(dataset.read_bytes())
    before = copy.read_bytes()
    assert train(copy, tmp_path, "--save", str(copy), "--out", str(tmp_path / "run")) == 2
    err = capsys.readouterr().err
    assert "--save" in err and "same file as the dataset file" in err
    assert copy.read_bytes() == before
    assert not (tmp_path / "run").exists()


def test_out_and_save_problems_come_before_the_first_epoch(
        dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    assert train(dataset, tmp_path, "--out", str(tmp_path / "afile")) == 2
    assert "--out" in capsys.readouterr().err
    assert train(dataset, tmp_path, "--save", str(tmp_path / "adir"),
                 "--out", str(tmp_path / "run")) == 2
    captured = capsys.readouterr()
    assert "adir is a folder" in captured.err
    assert "data:" not in captured.out  # refused before the data was loaded


def test_evaluate_out_may_not_hold_the_model(model_path: Path, dataset: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    # --out is the model's folder and report.json there *is* the model (a hard link)
    os.link(model_path, tmp_path / "report.json")
    assert cli.main(["evaluate", str(tmp_path / "report.json"), "--dataset-file", str(dataset),
                     "--out", str(tmp_path)]) == 2
    assert "the model" in capsys.readouterr().err


# --- numeric options name the option ----------------------------------------------------------


@pytest.mark.parametrize("option, value, message", [
    ("--limit", "-5", "must be a non-negative integer"),
    ("--validation", "-1", "must be a non-negative integer"),
    ("--epochs", "-2", "must be a non-negative integer"),
    ("--batch-size", "-3", "a batch size is at least 1"),
    ("--seed", "-1", "must be a non-negative integer"),
    ("--lr", "inf", "must be a finite number > 0"),
    ("--lr", "nan", "must be a finite number > 0"),
    ("--lr", "-0.1", "must be a finite number > 0"),
    ("--dropout", "1", "must be in [0, 1)"),
    ("--dropout", "-0.1", "must be in [0, 1)"),
    ("--weight-decay", "-1", "must be a finite number >= 0"),
    ("--weight-decay", "nan", "must be a finite number >= 0"),
    ("--weight-decay", "inf", "must be a finite number >= 0"),
    ("--hidden", "", "give at least one hidden layer width"),
])
def test_numeric_options_are_range_checked(option: str, value: str, message: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["train", option, value]) == 2
    err = capsys.readouterr().err
    assert f"argument {option}: {message}" in err
    assert "lr must" not in err and "rate must" not in err  # the option, not a parameter


def test_a_network_beyond_memory_is_refused_before_allocating(
        dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["train", "--dataset-file", str(dataset), "--model", "mlp800",
                     "--hidden", "100000000",
                     "--validation", "0", "--backend", "numpy",
                     "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "784-100000000-10" in err and "GiB" in err and "--hidden" in err
    with pytest.raises(ValueError, match="GiB"):
        options.check_memory((784, 1000, 10), 4, bound=1000)
    assert options.check_memory((784, 10), 4, bound=10**6) == 4 * 7850 * 4


# --- data and labels --------------------------------------------------------------------------


def _npz(path: Path, **changes: np.ndarray) -> Path:
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
              "y_train": rng.integers(0, 10, 20), "x_test": rng.integers(0, 256, (5, 784),
                                                                         dtype=np.uint8),
              "y_test": rng.integers(0, 10, 5)}
    np.savez(path, **{**arrays, **changes})
    return path


@pytest.mark.parametrize("changes, message", [
    ({"x_train": np.zeros((20, 28, 28))}, "x_train must be uint8 images"),
    ({"x_test": np.zeros((5, 27, 27), np.uint8)}, "x_test must be uint8 images"),
    ({"y_train": np.zeros(20)}, "y_train must be integer labels"),
    ({"y_test": np.zeros((5, 2), np.int64)}, "y_test must be integer labels"),
    ({"y_test": np.array([0, 1, -1, 2, 3])}, "negative label -1"),
])
def test_malformed_dataset_files_get_one_line(changes: dict[str, np.ndarray], message: str,
                                              tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = _npz(tmp_path / "d.npz", **changes)
    assert train(path, tmp_path, "--out", str(tmp_path / "run")) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(path) in err and message in err


def test_a_text_file_or_device_as_dataset(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "t.npz").write_text("x_train,y_train\n1,2\n")
    assert train(tmp_path / "t.npz", tmp_path) == 2
    err = capsys.readouterr().err
    assert "is not an .npz file of arrays" in err and "allow_pickle" not in err
    assert train(Path(os.devnull), tmp_path) == 2
    assert "not a regular file" in capsys.readouterr().err
    os.mkfifo(tmp_path / "fifo.npz")
    assert train(tmp_path / "fifo.npz", tmp_path) == 2  # would block forever if read
    assert "FIFO" in capsys.readouterr().err or "not a regular file" in capsys.readouterr().err


def test_test_labels_beyond_the_models_classes(model_path: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    # the model predicts 10 classes; this file's labels go to 11
    path = _npz(tmp_path / "d.npz", y_test=np.array([0, 1, 2, 11, 3]))
    assert cli.main(["evaluate", str(model_path), "--dataset-file", str(path)]) == 2
    assert "labels of" in capsys.readouterr().err


def test_evaluate_normalises_and_refuses_dataset_names(
        model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = pn.load(model_path)
    pn.save(model, tmp_path / "odd.npz", dataset="Digits-2000")
    assert cli.main(["evaluate", str(tmp_path / "odd.npz")]) == 2
    assert "'Digits-2000'" in capsys.readouterr().err
    assert options.saved_dataset("m", {"dataset": "mnist"}) == "mnist"
    from portanet import data

    spec = data.get_spec("fashion-mnist")
    for alias in spec.aliases:
        assert options.saved_dataset("m", {"dataset": alias}) == spec.name


# --- backend from the environment -------------------------------------------------------------


def test_a_bogus_backend_variable_is_named(dataset: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PORTANET_BACKEND", "bogus")
    assert cli.main(["train", "--dataset-file", str(dataset), "--model", "linear"]) == 2
    assert "environment variable PORTANET_BACKEND" in capsys.readouterr().err
    assert cli.main(["info"]) == 0
    assert "warning: PORTANET_BACKEND='bogus' is not a backend" in capsys.readouterr().out


# --- divergence -------------------------------------------------------------------------------


def test_divergence_exits_1_and_saves_nothing(dataset: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    status = cli.main(["train", "--dataset-file", str(dataset), "--model", "mlp800",
                       "--hidden", "32", "--backend",
                       "numpy", "--validation", "0", "--quiet", "--lr", "1e30", "--epochs", "3",
                       "--save", str(tmp_path / "m.npz"), "--out", str(tmp_path / "run")])
    assert status == 1
    assert "diverged" in capsys.readouterr().err
    assert not (tmp_path / "m.npz").exists() and not (tmp_path / "run").exists()


def test_report_json_is_always_valid_json() -> None:
    from portanet.app.report import _finite

    text = json.dumps(_finite({"loss": [1.0, float("nan")], "x": (float("inf"), 2)}),
                      allow_nan=False)
    assert json.loads(text) == {"loss": [1.0, None], "x": [None, 2]}


# --- predict ----------------------------------------------------------------------------------


def test_predict_checks_the_model_file_first(model_path: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["predict", os.devnull, "x.png"]) == 2
    assert "not a regular file" in capsys.readouterr().err
    assert cli.main(["predict", str(tmp_path / "none.npz"), "x.png"]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "t.npz").write_text("not a model\n")
    assert cli.main(["predict", str(tmp_path / "t.npz"), "x.png"]) == 2
    err = capsys.readouterr().err
    assert "not a readable portanet model" in err and "allow_pickle" not in err
    (tmp_path / "t.png").write_text("not an image")
    assert cli.main(["predict", str(model_path), str(tmp_path / "t.png")]) == 1
    line = capsys.readouterr().err.strip()
    assert line.count(str(tmp_path / "t.png")) == 1
