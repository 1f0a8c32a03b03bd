"""Issue 32, part A: a check that performs what the write will do (the partial file's name, the
rights to replace), SIGTERM as clean as Ctrl-C, an interrupted run that keeps the good model,
and one line instead of a traceback (stdout a broken pipe or a full disk, unreadable inputs,
long names, the draw server's huge images and vanished clients)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest

import portanet as pn
from portanet.app import cli
from portanet.file_checks import check_output_path
from portanet.files import TEMP_EXTRA, atomic_write
from tests.helpers import as_nobody, make_dataset, train_linear

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data") / "small.npz", n_train=200, n_test=60)


train = train_linear


def one_line(capsys: pytest.CaptureFixture[str], *needles: str, work: bool = False) -> str:
    """The last command printed one error line holding ``needles`` (and, unless ``work``, loaded
    no data)."""
    captured = capsys.readouterr()
    line = captured.err.strip()
    assert line and line.count("\n") == 0 and "Traceback" not in line, captured.err
    for needle in needles:
        assert needle in line, line
    assert work or "data:" not in captured.out
    return line


# --- cause 1: the check performs what the write will do -----------------------------------------


def test_a_name_whose_partial_file_is_too_long_is_refused_before_training(
        dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # 245 characters: a file of that name can exist, its partial file (15 longer) cannot.
    name = "model_" + "a" * 235 + ".npz"
    assert train(dataset, "--save", str(tmp_path / name), "--out", str(tmp_path / "r")) == 2
    one_line(capsys, "--save", f"temporary file whose name is {TEMP_EXTRA} longer",
             "at most 240 bytes")
    assert cli.main(["export", str(dataset), str(tmp_path / ("model_" + "a" * 235 + ".onnx"))]
                    ) == 2
    one_line(capsys, "the ONNX file", "at most 240 bytes")
    # The longest name the check passes is one the write can write.
    longest = tmp_path / ("b" * (255 - TEMP_EXTRA))
    assert check_output_path(longest) == longest
    atomic_write(longest, lambda f: f.write(b"x"))
    assert longest.read_bytes() == b"x"
    assert sorted(p.name for p in tmp_path.iterdir()) == [longest.name]  # no probe left


def test_names_and_paths_over_the_system_limits_are_one_line(
        dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert train(dataset, "--save", str(tmp_path / ("a" * 300 + ".npz"))) == 2
    one_line(capsys, "--save", "304 bytes long, over the limit of 255 for one name")
    deep = tmp_path.joinpath(*["d"] * 2100, "m.npz")
    assert train(dataset, "--save", str(deep)) == 2
    one_line(capsys, "--save", "over the system's limit of 4,095; choose a shorter path")
    assert cli.main(["evaluate", str(deep)]) == 2
    one_line(capsys, "the model", "give a shorter or corrected path")


def test_another_users_writable_file_in_a_sticky_folder_is_refused_before_work() -> None:
    """access(W_OK) passes for a 666 file, but in a sticky folder like /tmp only its owner may
    rename over it: the check knows the rule the write meets."""
    base = Path(tempfile.mkdtemp(prefix="portanet-sticky-"))
    try:
        base.chmod(0o1777)
        theirs = base / "m.npz"
        theirs.write_bytes(b"root's model")
        theirs.chmod(0o666)
        refused = as_nobody(lambda: check_output_path(theirs, what="--save"))
        assert refused == (f"refused: --save {theirs} belongs to another user in {base}, a "
                           f"shared folder (sticky bit, like /tmp) where only a file's owner may "
                           f"replace it; choose another file name")
        # the write meets the same rule, which the check now states first
        assert "permission denied" in as_nobody(
            lambda: atomic_write(theirs, lambda f: f.write(b"nobody's")))
        assert as_nobody(lambda: check_output_path(base / "mine.npz")).startswith("ok")
        assert theirs.read_bytes() == b"root's model"
        assert sorted(p.name for p in base.iterdir()) == ["m.npz"]
    finally:
        shutil.rmtree(base)


# --- causes 2 and 8: SIGTERM as clean as Ctrl-C; an interrupted run keeps the good model -------


def interrupted_run(dataset: Path, tmp_path: Path, sig: int, *extra: str
                    ) -> tuple[subprocess.CompletedProcess[str], Path]:
    """``portanet train`` of many epochs into ``tmp_path``, sent ``sig`` after its first epoch."""
    command = [sys.executable, "-m", "portanet", "train", "--dataset-file", str(dataset),
               "--model", "mlp512", "--hidden", "32", "--epochs", "1000", "--validation", "0",
               "--backend", "numpy", "--out", str(tmp_path / "run"), *extra]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=ENV)
    assert process.stdout is not None
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith("epoch"):
            process.send_signal(sig)
            break
    stdout, stderr = process.communicate(timeout=120)
    return subprocess.CompletedProcess(command, process.returncode, "".join(lines) + stdout,
                                       stderr), tmp_path / "run"


def test_sigterm_stops_training_after_the_step_and_keeps_the_good_model(
        dataset: Path, tmp_path: Path) -> None:
    keep = tmp_path / "keep.npz"
    keep.write_bytes(b"yesterday's good model")
    done, out = interrupted_run(dataset, tmp_path, signal.SIGTERM, "--save", str(keep))
    assert done.returncode == 143, done.stderr
    assert "interrupted: stopped after" in done.stdout and "Traceback" not in done.stderr
    assert keep.read_bytes() == b"yesterday's good model"
    beside = tmp_path / "keep.interrupted.npz"
    assert f"kept the existing {keep}; the part-trained model is saved beside it, to " \
           f"{beside}" in done.stdout
    assert pn.load(beside).num_parameters() > 0 and (out / "report.json").exists()
    assert not list(tmp_path.glob(".*.part"))


def test_ctrl_c_replaces_the_model_only_when_asked(dataset: Path, tmp_path: Path) -> None:
    keep = tmp_path / "keep.npz"
    keep.write_bytes(b"yesterday's model, not wanted")
    done, _ = interrupted_run(dataset, tmp_path, signal.SIGINT, "--save", str(keep),
                              "--overwrite-interrupted")
    assert done.returncode == 130, done.stderr
    assert f"model saved to {keep}" in done.stdout
    assert pn.load(keep).num_parameters() > 0
    assert not (tmp_path / "keep.interrupted.npz").exists()


def test_sigterm_while_saving_leaves_no_partial_file(dataset: Path, tmp_path: Path) -> None:
    """SIGTERM arriving in the middle of the write: the partial file is removed, the old model
    stays, one line, status 143 (before: killed at once, a hidden .part left behind)."""
    target = tmp_path / "m.npz"
    target.write_bytes(b"old model")
    script = textwrap.dedent(f"""
        import os, signal, sys
        import numpy as np
        from portanet.app import cli
        real = np.savez
        def savez(f, **arrays):
            f.write(b"x" * 100_000)
            f.flush()
            os.kill(os.getpid(), signal.SIGTERM)
            real(f, **arrays)
        np.savez = savez
        sys.exit(cli.main(["train", "--dataset-file", {str(dataset)!r}, "--model", "linear",
                           "--backend", "numpy", "--epochs", "1", "--validation", "0",
                           "--quiet", "--save", {str(target)!r},
                           "--out", {str(tmp_path / "run")!r}]))
    """)
    done = subprocess.run([sys.executable, "-c", script], env=ENV, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 143, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "portanet train: terminated (SIGTERM)"
    assert "Traceback" not in done.stderr
    assert target.read_bytes() == b"old model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]


# --- cause 7: one line instead of a traceback ---------------------------------------------------


@pytest.fixture(scope="module")
def saved(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A saved model of the small data set and a PNG of a stroke for predict."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("saved")
    assert train(dataset, "--save", str(folder / "m.npz"), "--out", str(folder / "run")) == 0
    image = np.zeros((28, 28), np.uint8)
    image[4:24, 12:16] = 255
    Image.fromarray(image).save(folder / "digit.png")
    return folder / "m.npz", folder / "digit.png"


def commands(dataset: Path, model: Path, image: Path, out: Path) -> dict[str, list[str]]:
    return {
        "train": ["train", "--dataset-file", str(dataset), "--model", "linear", "--backend",
                  "numpy", "--epochs", "1", "--validation", "0", "--save", str(out / "t.npz"),
                  "--out", str(out / "run")],
        "evaluate": ["evaluate", str(model), "--dataset-file", str(dataset), "--backend",
                     "numpy"],
        "predict": ["predict", str(model), str(image), "--backend", "numpy"],
        "export": ["export", str(model), str(out / "m.onnx")],
        "info": ["info"],
        "check": ["check", "--help"],
        "data": ["data", "--where"],
        "draw": ["draw", "--help"],
    }


@pytest.mark.parametrize("stdout", ["broken pipe", "full disk"])
@pytest.mark.parametrize("command", ["train", "evaluate", "predict", "export", "info", "check",
                                     "data", "draw"])
def test_every_command_ends_in_one_line_when_standard_output_fails(
        command: str, stdout: str, dataset: Path, saved: tuple[Path, Path],
        tmp_path: Path) -> None:
    """``portanet info | head -1`` and ``portanet predict ... > /dev/full``: the work goes on,
    then a broken pipe ends quietly (141) and a full disk says so in one line (1)."""
    argv = commands(dataset, *saved, tmp_path)[command]
    if stdout == "broken pipe":
        reader, target = os.pipe()
        os.close(reader)  # the reader is gone before the first line: every write fails
    else:
        target = os.open("/dev/full", os.O_WRONLY)
    try:
        done = subprocess.run([sys.executable, "-m", "portanet", *argv], stdout=target,
                              stderr=subprocess.PIPE, text=True, env=ENV, timeout=300)
    finally:
        os.close(target)
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr
    if stdout == "broken pipe":
        assert (done.returncode, done.stderr) == (141, "")
    else:
        assert done.returncode == 1
        line = done.stderr.strip()
        assert line.count("\n") == 0 and "cannot write to standard output (No space left on " \
                                          "device)" in line, done.stderr
        assert line.startswith(f"portanet {command}:" if "--help" not in argv else "portanet:")
    written = {"train": tmp_path / "t.npz", "export": tmp_path / "m.onnx"}.get(command)
    assert written is None or written.exists()  # the work went on


def as_nobody_cli(*argv: str) -> tuple[int, str]:
    """``portanet argv`` run as the user 'nobody': its status and what it printed on stderr."""
    import io

    def command() -> str:
        sys.stderr = io.StringIO()
        status = cli.main(list(argv))
        return f"{status} {sys.stderr.getvalue()}"

    text = as_nobody(command)
    assert text.startswith("ok: "), text
    status, printed = text[4:].split(" ", 1)
    return int(status), printed


def test_unreadable_models_and_data_are_one_line(dataset: Path, saved: tuple[Path, Path]
                                                 ) -> None:
    base = Path(tempfile.mkdtemp(prefix="portanet-unreadable-"))
    try:
        base.chmod(0o755)
        locked = base / "locked"
        locked.mkdir(mode=0o700)  # root's: 'nobody' may not look inside
        shutil.copy(saved[0], locked / "m.npz")
        shutil.copy(dataset, locked / "d.npz")
        private = base / "private.npz"
        shutil.copy(saved[0], private)
        private.chmod(0o600)
        (base / "out").mkdir(mode=0o777)
        (base / "out").chmod(0o777)
        data = ["--dataset-file", str(dataset), "--backend", "numpy"]
        for argv, words in [
            (["evaluate", str(locked / "m.npz"), *data], "permission denied on a folder"),
            (["evaluate", str(private), *data], "is not readable (permission denied)"),
            (["predict", str(locked / "m.npz"), str(saved[1])], "permission denied"),
            (["train", "--dataset-file", str(locked / "d.npz"), "--model", "linear",
              "--out", str(base / "out")], "permission denied"),
            (["train", "--data-dir", str(locked), "--model", "linear", "--epochs", "1",
              "--limit", "100", "--out", str(base / "out")], "permission denied"),
        ]:
            status, printed = as_nobody_cli(*argv)
            assert status == 2 and printed.count("\n") == 1 and words in printed, printed
            assert "Traceback" not in printed and "chmod" in printed, printed
    finally:
        shutil.rmtree(base)


def test_the_copy_an_interrupted_run_would_write_is_checked_before_work(
        dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from portanet.app.arg_types import interrupted_path

    assert interrupted_path("runs/keep.npz") == os.path.join("runs", "keep.interrupted.npz")
    assert interrupted_path("model") == "model.interrupted"
    keep = tmp_path / "keep.npz"
    keep.write_bytes(b"yesterday's good model")
    (tmp_path / "keep.interrupted.npz").mkdir()  # where an interrupted run would save
    assert train(dataset, "--save", str(keep), "--out", str(tmp_path / "run")) == 2
    one_line(capsys, "keep.interrupted.npz is a folder, not a regular file")
    # asked to overwrite, there is no copy to check
    assert train(dataset, "--save", str(keep), "--out", str(tmp_path / "run"),
                 "--overwrite-interrupted") == 0
    assert pn.load(keep).num_parameters() > 0
