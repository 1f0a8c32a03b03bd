"""Ensembles on the command line: ``train --ensemble K`` and ``portanet ensemble`` give the same
file as K runs with their seeds combined; evaluate, predict, export and draw take it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import portanet as pn
from portanet.app import cli, cli_train, recipes
from portanet.layers import Ensemble
from portanet.train import History
from tests.helpers import make_dataset

TRAIN = ["--model", "cnn-fast", "--epochs", "1", "--batch-size", "64", "--validation", "100",
         "--quiet"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data") / "small.npz", n_train=600, n_test=200)


@pytest.fixture(scope="module")
def trained(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Seeds 3 and 4 trained alone, and ``--ensemble 2`` from seed 3."""
    folder = tmp_path_factory.mktemp("models")
    paths = {name: folder / f"{name}.npz" for name in ("seed3", "seed4", "both")}
    for name, extra in (("seed3", ["--seed", "3"]), ("seed4", ["--seed", "4"]),
                        ("both", ["--seed", "3", "--ensemble", "2"])):
        assert cli.main(["train", "--dataset-file", str(dataset), *TRAIN, *extra, "--save",
                         str(paths[name]), "--out", str(folder / f"{name}-run")]) == 0
    return paths


def images(dataset: Path) -> np.ndarray:
    with np.load(dataset) as arrays:
        return (arrays["x_test"].reshape(-1, 1, 28, 28) / 255).astype(np.float32)


def test_train_ensemble_is_the_seeds_runs_combined(trained: dict[str, Path], dataset: Path,
                                                    tmp_path: Path) -> None:
    both = pn.load(trained["both"])
    assert isinstance(both.layers[0], Ensemble) and len(both.layers[0].members) == 2
    alone = [pn.load(trained[name]) for name in ("seed3", "seed4")]
    x = images(dataset)
    expected = np.mean([pn.predict_proba(m, x) for m in alone], axis=0)
    np.testing.assert_allclose(pn.predict_proba(both, x), expected, atol=1e-6)
    metadata = pn.saving.npz.load_metadata(trained["both"])["extra"]
    assert metadata["seeds"] == [3, 4] and metadata["recipe"]["name"] == "cnn-fast"
    report = json.loads((trained["both"].parent / "both-run" / "report.json").read_text())
    assert report["config"]["ensemble"] == [3, 4]
    assert len(report["timings"]["member_seconds"]) == 2


def test_the_ensemble_command_combines_saved_files(trained: dict[str, Path], dataset: Path,
                                                   tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "combined.npz"
    assert cli.main(["ensemble", str(trained["seed3"]), str(trained["seed4"]), "--save",
                     str(out)]) == 0
    assert "ensemble of 2 networks saved" in capsys.readouterr().out
    x = images(dataset)
    np.testing.assert_allclose(pn.predict_proba(pn.load(out), x),
                               pn.predict_proba(pn.load(trained["both"]), x), atol=1e-6)
    members = pn.saving.npz.load_metadata(out)["extra"]["members"]
    assert [m["file"] for m in members] == ["seed3.npz", "seed4.npz"]
    assert all(0.0 <= m["test_accuracy"] <= 1.0 for m in members)


def test_evaluate_predict_and_draw_take_an_ensemble(trained: dict[str, Path], dataset: Path,
                                                    tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = trained["both"]
    capsys.readouterr()
    assert cli.main(["evaluate", str(path), "--dataset-file", str(dataset)]) == 0
    model = pn.load(path)
    with np.load(dataset) as arrays:
        labels = arrays["y_test"]
    accuracy = float(np.mean(pn.predict(model, images(dataset)) == labels))
    assert f"test accuracy {accuracy:.2%}" in capsys.readouterr().out
    Image = pytest.importorskip("PIL.Image", reason="predict and draw read images with Pillow")
    picture = np.zeros((28, 28), np.uint8)
    picture[4:24, 12:16] = 255
    Image.fromarray(picture).save(tmp_path / "digit.png")
    assert cli.main(["predict", str(path), str(tmp_path / "digit.png"), "--json"]) == 0
    answer = json.loads(capsys.readouterr().out.strip())
    from portanet.app.draw import server
    from portanet.reader.digit import load_digit

    proba = pn.predict_proba(model, load_digit(tmp_path / "digit.png").reshape(1, 1, 28, 28))[0]
    assert answer["top3"][0]["digit"] == int(np.argmax(proba))
    reader = server.Reader(model, [str(k) for k in range(10)])
    drawn = reader.answer((tmp_path / "digit.png").read_bytes())
    np.testing.assert_allclose(drawn["probabilities"], proba, atol=1e-5)
    assert drawn["first_layer"]["title"].startswith("layer 0, Conv2D")


def test_export_takes_an_ensemble(trained: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("ndonnx", reason="ndonnx is not installed")
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    out = tmp_path / "both.onnx"
    assert cli.main(["export", str(trained["both"]), str(out)]) == 0  # verified on export
    assert out.stat().st_size > 0


@pytest.mark.parametrize(("argv", "message"), [
    (["ensemble", "{seed3}", "--save", "{out}"], "two or more networks, got 1"),
    (["ensemble", "{seed3}", "--shift", "-1", "--save", "{out}"], "--shift: must be"),
    (["ensemble", "{seed3}", "{seed4}", "--save", "{seed3}"], "same file as the model file"),
    (["ensemble", "{seed3}", "{missing}", "--save", "{out}"], "missing.npz"),
    (["train", "--ensemble", "0"], "--ensemble: must be a positive integer"),
])
def test_bad_ensembles_are_refused(argv: list[str], message: str, trained: dict[str, Path],
                                   tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    names = {"seed3": trained["seed3"], "seed4": trained["seed4"], "out": tmp_path / "o.npz",
             "missing": tmp_path / "missing.npz"}
    before = trained["seed3"].read_bytes()
    assert cli.main([a.format(**names) for a in argv]) == 2
    assert message in capsys.readouterr().err
    assert trained["seed3"].read_bytes() == before and not (tmp_path / "o.npz").exists()


def test_models_of_other_classes_are_refused(trained: dict[str, Path], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "letters.npz"
    model = pn.load(trained["seed4"])
    pn.save(model, other, class_names=list("abcdefghij"))
    assert cli.main(["ensemble", str(trained["seed3"]), str(other), "--save",
                     str(tmp_path / "o.npz")]) == 2
    assert "an ensemble's models must agree" in capsys.readouterr().err


def member(seed: int, interrupted: bool) -> cli_train.Member:
    model = pn.Sequential([pn.Flatten(), pn.Dense(16, 2)], backend="numpy", seed=seed,
                          input_shape=(1, 4, 4))
    return cli_train.Member(model, seed, History(interrupted=interrupted), 1.0)


@pytest.mark.parametrize(("flags", "kept"), [
    ([False, False, True], [0, 1]),  # the interrupted member is dropped
    ([False, True], [0]),  # one finished member: that model alone
    ([True], [0]),  # nothing finished: the part-trained model, as without --ensemble
])
def test_an_interrupted_ensemble_keeps_its_finished_members(flags: list[bool],
                                                            kept: list[int]) -> None:
    members = [member(seed, flag) for seed, flag in enumerate(flags)]
    model, held = cli_train.combined(recipes.PRESETS["cnn"], members)
    assert [m.seed for m in held] == kept
    assert isinstance(model.layers[0], Ensemble) == (len(kept) > 1)
    model, held = cli_train.combined(recipes.PRESETS["cnn-best"], members)  # test_shift 1
    assert isinstance(model.layers[0], Ensemble) and model.layers[0].shift == 1
    assert len(model.layers[0].members) == len(kept)


def test_errors_name_the_files(trained: dict[str, Path], tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    mlp = tmp_path / "flat.npz"
    pn.save(pn.Sequential([pn.Dense(784, 10)], backend="numpy", seed=0), mlp)
    assert cli.main(["ensemble", str(mlp), str(trained["seed3"]), "--save",
                     str(tmp_path / "o.npz")]) == 2
    err = capsys.readouterr().err
    assert f"{trained['seed3']} has the input shape (1, 28, 28), {mlp} has (784,)" in err
    assert cli.main(["ensemble", str(trained["seed4"]), str(trained["both"]), str(mlp),
                     "--save", str(tmp_path / "o.npz")]) == 2  # networks 1, 2 are both's
    assert f"{mlp} has the input shape (784,), {trained['seed4']} has (1, 28, 28)" in \
        capsys.readouterr().err


def test_files_of_ensembles_give_their_members_and_shift(trained: dict[str, Path],
                                                         dataset: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    x = images(dataset)
    seed3, both = pn.load(trained["seed3"]), pn.load(trained["both"])
    one = tmp_path / "one.npz"
    assert cli.main(["ensemble", str(trained["seed3"]), "--shift", "1", "--save", str(one)]) == 0
    assert "ensemble of 1 network, each reading 5 views shifted by 1 pixel," in \
        capsys.readouterr().out
    np.testing.assert_allclose(pn.predict_proba(pn.load(one), x),
                               pn.predict_proba(pn.ensemble([seed3], shift=1), x), atol=1e-6)
    two = tmp_path / "two.npz"
    assert cli.main(["ensemble", str(one), str(trained["seed4"]), "--save", str(two)]) == 0
    model = pn.load(two)  # the shift of one.npz, the only ensemble among them, carries over
    assert len(model.layers[0].members) == 2 and model.layers[0].shift == 1
    seed4 = pn.load(trained["seed4"])
    np.testing.assert_allclose(pn.predict_proba(model, x),
                               pn.predict_proba(pn.ensemble([seed3, seed4], shift=1), x),
                               atol=1e-6)
    three = tmp_path / "three.npz"
    assert cli.main(["ensemble", str(one), str(trained["both"]), "--save", str(three)]) == 2
    assert f"{one}: shift 1, {trained['both']}: shift 0" in capsys.readouterr().err
    assert not three.exists()
    assert cli.main(["ensemble", str(one), str(trained["both"]), "--save", str(three),
                     "--shift", "2"]) == 0
    model = pn.load(three)
    assert len(model.layers[0].members) == 3 and model.layers[0].shift == 2
    np.testing.assert_allclose(pn.predict_proba(model, x),
                               pn.predict_proba(pn.ensemble([seed3, both], shift=2), x),
                               atol=1e-6)
