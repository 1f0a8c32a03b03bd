"""The portanet command end to end on small generated data: train, save, evaluate, predict."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import portanet as pn
from portanet.app import cli
from tests.helpers import make_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data") / "small.npz")


@pytest.mark.parametrize("backend", ["numpy", "array_api_strict"])
def test_train_save_evaluate_predict(backend: str, dataset: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip(backend)
    model_path, out = tmp_path / "model.npz", tmp_path / "run"
    status = cli.main(["train", "--dataset-file", str(dataset), "--model", "mlp512",
                       "--hidden", "64", "--optimizer", "adam", "--lr", "0.003",
                       "--epochs", "3", "--batch-size", "32", "--validation", "200",
                       "--backend", backend, "--save", str(model_path), "--out", str(out)])
    printed = capsys.readouterr().out
    assert status == 0, printed
    assert f"backend: {backend}" in printed
    assert "epoch   3/3" in printed and "val " in printed and "samples/s" in printed
    report = json.loads((out / "report.json").read_text())
    assert report["report"]["accuracy"] > 0.9  # chance is 0.1
    assert report["config"]["recipe"]["hidden"] == [64]
    assert report["environment"]["backend"] == backend
    assert len(report["history"]["val_accuracy"]) == 3
    for picture in ("learning_curves.png", "confusion_matrix.png", "misclassified.png"):
        assert (out / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"test accuracy {report['report']['accuracy']:.2%}" in printed

    assert cli.main(["evaluate", str(model_path), "--dataset-file", str(dataset),
                     "--backend", backend]) == 0
    evaluated = capsys.readouterr().out
    assert f"test accuracy {report['report']['accuracy']:.2%}" in evaluated

    from PIL import Image

    from portanet.reader import digit as images
    # A drawn stroke: the synthetic dataset's images are random dots, which predict refuses
    # as "no stroke-like content".
    image = np.zeros((28, 28), np.uint8)
    image[4:24, 12:16] = 255
    Image.fromarray(image).save(tmp_path / "digit.png")
    assert cli.main(["predict", str(model_path), str(tmp_path / "digit.png"), "--json",
                     "--backend", backend]) == 0
    answer = json.loads(capsys.readouterr().out.strip())
    assert answer["path"].endswith("digit.png") and len(answer["top3"]) == 3
    # The command's answer is the saved model's own prediction on the prepared image.
    proba = pn.predict_proba(pn.load(model_path), images.load_digit(tmp_path / "digit.png")
                             .reshape(1, -1))[0]
    expected = np.argsort(proba)[::-1][:3]
    assert [t["digit"] for t in answer["top3"]] == expected.tolist()
    assert [t["label"] for t in answer["top3"]] == [str(k) for k in expected]
    np.testing.assert_allclose([t["probability"] for t in answer["top3"]], proba[expected],
                               atol=1e-5)


def test_number_of_classes_comes_from_the_data(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Three classes in the file: a 3-way model, a 3x3 report, and predict names three."""
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (90, 28, 28)).astype(np.uint8)
    labels = np.arange(90, dtype=np.uint8) % 3
    np.savez(tmp_path / "three.npz", x_train=images[:60], y_train=labels[:60],
             x_test=images[60:], y_test=labels[60:])
    assert cli.main(["train", "--dataset-file", str(tmp_path / "three.npz"), "--model", "mlp512",
                     "--hidden", "8", "--epochs", "1", "--validation", "0", "--quiet",
                     "--save", str(tmp_path / "m.npz"), "--out", str(tmp_path / "run")]) == 0
    report = json.loads((tmp_path / "run" / "report.json").read_text())["report"]
    assert report["num_classes"] == 3 and len(report["confusion_matrix"]) == 3
    assert report["class_names"] == ["0", "1", "2"]
    assert pn.load(tmp_path / "m.npz").num_outputs == 3


def test_full_batch_and_float64(dataset: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["train", "--dataset-file", str(dataset), "--model", "tiny", "--epochs",
                     "30", "--batch-size", "full", "--dtype", "float64", "--validation", "0",
                     "--out", str(tmp_path), "--quiet"]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["config"]["recipe"]["batch_size"] is None
    assert report["environment"]["dtype"] == "float64"
    assert "epoch " not in capsys.readouterr().out  # --quiet


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--hidden", "12,x"], "argument --hidden: hidden layer widths are whole"),
        (["train", "--batch-size", "many"], "argument --batch-size: a batch size is a whole"),
        (["train", "--lr", "-1"], "argument --lr: must be a finite number > 0"),
        (["train", "--dropout", "1.5"], "argument --dropout: must be in [0, 1)"),
        (["train", "--validation", "5000"], "leaves no training images"),
        (["evaluate", "missing.npz"], "the model missing.npz does not exist"),
        (["train", "--dataset-file", "nowhere.npz"], "nowhere.npz does not exist"),
    ],
)
def test_bad_arguments_say_what_is_wrong(argv: list[str], message: str, dataset: Path,
                                         tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                         ) -> None:
    if argv[0] == "train" and "--dataset-file" not in argv:
        argv = [*argv, "--dataset-file", str(dataset), "--limit", "300", "--out", str(tmp_path)]
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_dataset_file_without_the_arrays(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                         ) -> None:
    np.savez(tmp_path / "odd.npz", images=np.zeros((2, 28, 28), np.uint8))
    assert cli.main(["train", "--dataset-file", str(tmp_path / "odd.npz")]) == 2
    assert "needs x_train, y_train, x_test, y_test" in capsys.readouterr().err


def test_predict_reports_bad_images_and_goes_on(dataset: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    model_path = tmp_path / "m.npz"
    assert cli.main(["train", "--dataset-file", str(dataset), "--model", "linear",
                     "--limit", "200", "--validation", "0", "--save", str(model_path),
                     "--out", str(tmp_path / "run"), "--quiet"]) == 0
    capsys.readouterr()
    (tmp_path / "blank.png").write_bytes(b"")
    from PIL import Image

    Image.fromarray(np.zeros((40, 40), np.uint8)).save(tmp_path / "empty.png")
    Image.fromarray(np.full((40, 40), 255, np.uint8)).save(tmp_path / "white.png")
    status = cli.main(["predict", str(model_path), str(tmp_path / "blank.png"),
                       str(tmp_path / "empty.png"), str(tmp_path / "white.png")])
    err = capsys.readouterr().err
    assert status == 1
    assert "blank.png" in err and "empty.png" in err and "white.png" in err


def test_info_lists_backends(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "numpy" in out and "cupy" in out and "auto picks:" in out


def test_ctrl_c_stops_cleanly_and_still_saves(dataset: Path, tmp_path: Path) -> None:
    """The first Ctrl-C ends training after the current step; the model and report are written."""
    model_path, out = tmp_path / "m.npz", tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "portanet", "train", "--dataset-file", str(dataset),
         "--model", "mlp512", "--hidden", "32", "--epochs", "1000", "--validation", "0",
         "--backend", "numpy", "--save", str(model_path), "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "MPLBACKEND": "Agg"},
    )
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("epoch"):
            process.send_signal(signal.SIGINT)
            break
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "interrupted: stopped after" in stdout
    assert model_path.exists() and (out / "report.json").exists()
