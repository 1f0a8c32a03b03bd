"""Issue 19 on the command line: one rule for a run's files (no output is a file the run reads
or another output), classes from the labels that occur with a limit and bounded reports, and
errors that come before the work or as one line (full disk, empty splits, .npy files, read-only
targets, a read-only cache, PORTANET_BACKEND naming an unusable backend, empty paths)."""

from __future__ import annotations

import dataclasses
import errno
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

import portanet as pn
from portanet import files as _files
from portanet.app import cli, metrics, plots
from portanet.data import FILES, TRAIN_IMAGES, get_spec, sources
from portanet.data.verify import Place
from portanet.file_checks import check_output_path, check_run_files
from portanet.files import DiskFullError, OutputPathError
from tests.helpers import make_dataset, train_linear


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data") / "small.npz", n_train=200, n_test=60)


train = train_linear


def refused_before_work(capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    """The last command printed one error line holding ``needles`` and loaded no data."""
    captured = capsys.readouterr()
    line = captured.err.strip()
    assert line.count("\n") == 0 and "Traceback" not in line, line
    for needle in needles:
        assert needle in line, line
    assert "data:" not in captured.out
    return line


# --- an output may be any file the run reads or writes -----------------------------------------


def test_save_into_the_report_folder_is_refused_before_training(
        dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o"
    assert train(dataset, "--save", str(out / "report.json"), "--out", str(out)) == 2
    refused_before_work(capsys, "--save", "report.json", "are the same file")
    assert not out.exists()
    # through a link to the folder, and for each picture too
    (tmp_path / "link").symlink_to(out, target_is_directory=True)
    assert train(dataset, "--save", str(tmp_path / "link" / "misclassified.png"),
                 "--out", str(out)) == 2
    refused_before_work(capsys, "misclassified.png", "are the same file")


@pytest.mark.parametrize("how", ["data-dir folder", "data-dir file", "PORTANET_DATA folder",
                                 "PORTANET_DATA idx"])
def test_save_onto_the_data_of_any_source_is_refused(
        how: str, dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    keras = folder / "mnist.npz"
    keras.write_bytes(b"the user's Keras mnist.npz")
    idx = folder / f"{TRAIN_IMAGES}.gz"
    idx.write_bytes(b"the user's IDX file")
    given, target = {
        "data-dir folder": (["--data-dir", str(folder)], keras),
        "data-dir file": (["--data-dir", str(keras)], keras),
        "PORTANET_DATA folder": ([], keras),
        "PORTANET_DATA idx": ([], idx),
    }[how]
    if how.startswith("PORTANET_DATA"):
        monkeypatch.setenv("PORTANET_DATA", str(folder))
    status = cli.main(["train", "--model", "linear", "--backend", "numpy", "--epochs", "1",
                       *given, "--save", str(target), "--out", str(tmp_path / "run")])
    assert status == 2
    refused_before_work(capsys, "--save", "same file as the data")
    assert keras.read_bytes() == b"the user's Keras mnist.npz"
    assert idx.read_bytes() == b"the user's IDX file"


def test_save_onto_the_cache_or_a_file_a_data_folder_would_hold_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    cached = tmp_path / "cache" / "portanet" / "fashion-mnist" / FILES[3]
    args = ["train", "--model", "linear", "--backend", "numpy", "--out", str(tmp_path / "r")]
    assert cli.main([*args, "--save", str(cached)]) == 2
    refused_before_work(capsys, "same file as the data cache")
    # not there yet, but a later search of this data folder would read it as data
    assert cli.main([*args, "--data-dir", str(tmp_path), "--save",
                     str(tmp_path / "mnist" / FILES[1])]) == 2
    refused_before_work(capsys, "same file as the data folder")
    assert not (tmp_path / "mnist").exists()


def test_the_default_out_folder_is_checked_before_training(
        dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").write_text("a file where the runs folder would go")
    assert train(dataset) == 2
    refused_before_work(capsys, "runs")


def test_two_outputs_that_are_one_file_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a.npz").write_bytes(b"x")
    os.link(tmp_path / "a.npz", tmp_path / "b.npz")
    (tmp_path / "c.npz").symlink_to(tmp_path / "d.npz")  # dangling: d.npz is written
    for first, second in (("a.npz", "b.npz"), ("c.npz", "d.npz"), ("a.npz", "./a.npz")):
        with pytest.raises(OutputPathError, match="are the same file"):
            check_run_files([("--save", tmp_path / first), ("--out's x", tmp_path / second)])
    assert check_run_files([("--save", tmp_path / "a.npz"), ("--out's x", tmp_path / "e")])


# --- classes from the labels that occur, reports bounded ---------------------------------------


def _labelled(path: Path, y_train: np.ndarray, y_test: np.ndarray) -> Path:
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.integers(0, 256, (len(y_train), 784), dtype=np.uint8),
             y_train=y_train, x_test=rng.integers(0, 256, (len(y_test), 784), dtype=np.uint8),
             y_test=y_test)
    return path


def test_labels_990_to_999_are_ten_classes_named_by_their_labels(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _labelled(tmp_path / "d.npz", np.arange(200) % 10 + 990, np.arange(40) % 10 + 990)
    assert train(path, "--save", str(tmp_path / "m.npz"), "--out", str(tmp_path / "run")) == 0
    out = capsys.readouterr().out
    assert "are classes 0..9, named by their labels" in out
    model = pn.load(tmp_path / "m.npz")
    assert model.num_outputs == 10
    names = pn.saving.npz.load_metadata(tmp_path / "m.npz")["extra"]["class_names"]
    assert names == [str(k) for k in range(990, 1000)]
    # evaluate maps another file's labels by those names, and refuses one the model lacks
    other = _labelled(tmp_path / "e.npz", np.arange(20) % 3 + 990, np.arange(9) % 3 + 997)
    assert cli.main(["evaluate", str(tmp_path / "m.npz"), "--dataset-file", str(other)]) == 0
    assert "on 9 images" in capsys.readouterr().out
    bad = _labelled(tmp_path / "f.npz", np.arange(20) % 3 + 990, np.array([990, 5]))
    assert cli.main(["evaluate", str(tmp_path / "m.npz"), "--dataset-file", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "test labels of" in err and "include 5, which is not a class the model predicts" in err


@pytest.mark.parametrize("y_train, message", [
    (np.full(50, 10**9), "every label is 1000000000; a classifier needs at least two"),
    (np.arange(1500) % 1001, "1,001 different values; portanet builds classifiers of at most "
                             "1,000 classes"),
])
def test_too_many_or_too_few_classes_are_one_quick_line(
        y_train: np.ndarray, message: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    path = _labelled(tmp_path / "d.npz", y_train, y_train[:10])
    started = time.perf_counter()
    assert train(path, "--out", str(tmp_path / "run")) == 2
    assert time.perf_counter() - started < 5
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_a_label_of_a_billion_among_others_is_a_class_not_a_memory_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    y = np.r_[np.arange(59) % 10, 10**9]
    path = _labelled(tmp_path / "d.npz", y, y[:10])
    assert train(path, "--out", str(tmp_path / "run")) == 0
    assert "the 11 that occur (0, 1, ..., 1000000000)" in capsys.readouterr().out


def test_reports_and_pictures_of_1000_classes_are_bounded(tmp_path: Path) -> None:
    k = 1000
    rng = np.random.default_rng(0)
    y = np.arange(5000) % k
    predicted = np.where(rng.random(5000) < 0.5, y, rng.integers(0, k, 5000))
    report = metrics.classification_report(y, predicted, num_classes=k)
    started = time.perf_counter()
    text = metrics.format_report(report)
    assert time.perf_counter() - started < 2
    lines = text.splitlines()
    assert len(lines) < 3 * metrics.FULL_TABLE_CLASSES + 10
    assert "lowest F1 of 1,000" in lines[0] and "largest confusions of 1,000 classes" in text
    if not plots.plotting_available()[0]:
        pytest.skip("matplotlib is not installed")
    started = time.perf_counter()
    plots.plot_confusion_matrix(np.asarray(report["confusion_matrix"]), tmp_path / "cm.png")
    assert time.perf_counter() - started < 10  # the 1000x1000 heat-map took over a minute
    assert (tmp_path / "cm.png").stat().st_size > 0


def test_top_confusions() -> None:
    cm = np.array([[5, 2, 0], [7, 1, 2], [0, 2, 9]])
    assert metrics.top_confusions(cm, 3) == [(1, 0, 7), (0, 1, 2), (1, 2, 2)]
    assert metrics.top_confusions(np.eye(3, dtype=int)) == []


# --- errors before the work, or as one line ----------------------------------------------------


def _fill_the_disk(written: int = 1000):
    def write(out) -> None:
        out.write(b"x" * written)
        raise OSError(errno.ENOSPC, "No space left on device")
    return write


def test_disk_full_while_writing_pictures_keeps_the_model_and_report(
        dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    if not plots.plotting_available()[0]:
        pytest.skip("matplotlib is not installed")
    monkeypatch.setattr(plots, "_save", lambda fig, path: _files.atomic_write(
        path, _fill_the_disk(5000)))
    out = tmp_path / "run"
    assert train(dataset, "--save", str(tmp_path / "m.npz"), "--out", str(out)) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert f"cannot write {out / 'learning_curves.png'}: no space left" in err
    assert "needs more than 5.0 kB" in err and " free in " in err
    assert f"kept what was written before it: {tmp_path / 'm.npz'}, {out / 'report.json'}" in err
    assert pn.load(tmp_path / "m.npz").num_outputs == 10
    assert sorted(p.name for p in out.iterdir()) == ["report.json"]  # no partial file


def test_disk_full_while_saving_the_model_writes_nothing_after_it(
        dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "m.npz").write_bytes(b"the previous model")

    def savez(file, **arrays) -> None:
        _fill_the_disk(300)(file)

    monkeypatch.setattr(pn.saving.npz.np, "savez", savez)
    assert train(dataset, "--save", str(tmp_path / "m.npz"),
                 "--out", str(tmp_path / "run")) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"cannot write {tmp_path / 'm.npz'}: no space left" in err
    assert (tmp_path / "m.npz").read_bytes() == b"the previous model"
    assert not (tmp_path / "run").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]


def test_quota_exceeded_is_named(tmp_path: Path) -> None:
    with pytest.raises(DiskFullError, match="disk quota is used up") as info:
        _files.atomic_write(tmp_path / "x", lambda f: (_ for _ in ()).throw(
            OSError(errno.EDQUOT, "Disk quota exceeded")))
    assert info.value.errno == errno.EDQUOT and not list(tmp_path.iterdir())


@pytest.mark.parametrize("arrays, message", [
    ({"x_train": np.zeros((0, 784), np.uint8), "y_train": np.zeros(0, np.int64)},
     "the training split holds no images"),
    ({"x_test": np.zeros((0, 28, 28), np.uint8), "y_test": np.zeros(0, np.int64)},
     "the test split holds no images"),
])
def test_an_empty_split_is_one_line(arrays: dict[str, np.ndarray], message: str, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    full = {"x_train": rng.integers(0, 256, (20, 784), dtype=np.uint8),
            "y_train": np.arange(20) % 10, "x_test": rng.integers(0, 256, (5, 784),
                                                                  dtype=np.uint8),
            "y_test": np.arange(5)}
    np.savez(tmp_path / "d.npz", **{**full, **arrays})
    assert train(tmp_path / "d.npz", "--out", str(tmp_path / "run")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_an_npy_dataset_file_is_one_line(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    np.save(tmp_path / "x.npy", np.zeros((3, 784), np.uint8))
    assert train(tmp_path / "x.npy") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a single array (an .npy file)" in err


def test_a_read_only_save_target_is_refused_before_training(
        dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "m.npz"
    target.write_bytes(b"protected")
    real_access = os.access
    # Tests run as root, for whom the permission bits do not stop a write: the check's own
    # question, access(W_OK), answers as it does for an immutable file or a non-root user.
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == target
                        else real_access(p, mode, **kw))
    assert train(dataset, "--save", str(target), "--out", str(tmp_path / "run")) == 2
    refused_before_work(capsys, "is read-only (or immutable)")
    with pytest.raises(OutputPathError, match="read-only"):
        check_output_path(target, what="--save")
    assert target.read_bytes() == b"protected"


def test_a_target_that_cannot_be_replaced_is_one_line(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(src: str, dst: str) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OutputPathError, match=r"cannot replace .*m\.npz: permission denied"):
        _files.atomic_write(tmp_path / "m.npz", lambda f: f.write(b"x"))
    assert not list(tmp_path.iterdir())


def test_a_bad_file_in_a_read_only_cache_is_not_said_to_be_removed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / FILES[1]
    bad.write_bytes(b"not an IDX file")

    def unlink(self: Path, missing_ok: bool = False) -> None:
        raise PermissionError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(Path, "unlink", unlink)
    search = sources._Search(get_spec("mnist"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sources._use_place(search, Place("cache", tmp_path, "folder", "cache"))
    text = " ".join(str(w.message) for w in caught)
    assert "could not remove it (Read-only file system), so it stays and is not used" in text
    assert "removed it" not in text
    assert bad.exists()


def test_an_unusable_backend_from_the_environment_is_named(
        dataset: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from portanet.backend import BackendUnavailableError
    from portanet.backend.table import SEAMS

    def unavailable(device: object = None) -> None:
        raise BackendUnavailableError("the 'cupy' backend is unavailable: no CUDA device")

    monkeypatch.setitem(SEAMS, "cupy", dataclasses.replace(SEAMS["cupy"], load=unavailable))
    monkeypatch.setenv("PORTANET_BACKEND", "cupy")
    assert cli.main(["train", "--dataset-file", str(dataset), "--model", "linear",
                     "--epochs", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "PORTANET_BACKEND=cupy: the 'cupy' backend is unavailable" in err


@pytest.mark.parametrize("option", ["--save", "--out", "--dataset-file", "--data-dir"])
def test_empty_paths_are_refused(option: str, dataset: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--dataset-file", str(dataset)] if option != "--dataset-file" else []
    assert cli.main(["train", "--model", "linear", "--backend", "numpy", *args,
                     option, ""]) == 2
    assert f"argument {option}: the path is empty" in capsys.readouterr().err
