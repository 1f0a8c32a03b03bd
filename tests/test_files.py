"""Nothing a user has is lost: atomic_write through links, refusals, stale partial files, and
the output-path checks a command makes before any work."""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from portanet import files as _files
from portanet.file_checks import check_input_file, check_output_dir, check_output_path
from portanet.files import InputPathError, OutputPathError, atomic_write
from tests.helpers import as_nobody

ROOT = Path(__file__).resolve().parents[1]


def writer(data: bytes):
    calls = []

    def write(f):
        calls.append(1)
        f.write(data)

    write.calls = calls
    return write


def test_writes_through_a_symlink_and_keeps_it(tmp_path: Path) -> None:
    real = tmp_path / "models" / "real.npz"
    real.parent.mkdir()
    real.write_bytes(b"old")
    link = tmp_path / "link.npz"
    link.symlink_to(Path("models") / "real.npz")  # relative, as users make them
    chain = tmp_path / "chain.npz"
    chain.symlink_to(link)

    assert atomic_write(chain, writer(b"new")) == chain
    assert chain.is_symlink() and link.is_symlink()
    assert os.readlink(link) == str(Path("models") / "real.npz")
    assert real.read_bytes() == b"new"
    assert sorted(p.name for p in real.parent.iterdir()) == ["real.npz"]  # no partial left


def test_dangling_symlink_creates_its_target(tmp_path: Path) -> None:
    link = tmp_path / "m.npz"
    link.symlink_to(tmp_path / "elsewhere" / "target.npz")
    atomic_write(link, writer(b"x"))
    assert link.is_symlink() and (tmp_path / "elsewhere" / "target.npz").read_bytes() == b"x"


def test_symlink_loop_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    write = writer(b"x")
    with pytest.raises(OutputPathError, match="loop"):
        atomic_write(tmp_path / "a", write)
    assert not write.calls


def test_existing_permissions_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "private.npz"
    path.write_bytes(b"old")
    path.chmod(0o600)
    atomic_write(path, writer(b"new"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    atomic_write(tmp_path / "fresh.npz", writer(b"new"))
    assert stat.S_IMODE((tmp_path / "fresh.npz").stat().st_mode) == 0o644


def _is_untouched_fifo(path: Path) -> bool:
    return stat.S_ISFIFO(os.lstat(path).st_mode)


@pytest.mark.parametrize("via_link", [False, True], ids=["direct", "via-link"])
def test_fifo_is_refused_before_anything_is_written(tmp_path: Path, via_link: bool) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    path = fifo
    if via_link:
        path = tmp_path / "model.npz"
        path.symlink_to(fifo)
    write = writer(b"x")
    with pytest.raises(OutputPathError, match=r"pipe.* is a FIFO \(named pipe\), not a regular"):
        atomic_write(path, write)
    assert not write.calls
    assert _is_untouched_fifo(fifo)
    assert not list(tmp_path.glob(".*.part"))
    with pytest.raises(OutputPathError, match="FIFO"):
        check_output_path(path)


def test_device_node_is_refused(tmp_path: Path) -> None:
    if not stat.S_ISCHR(os.stat("/dev/null").st_mode):
        pytest.skip("no /dev/null character device here")
    link = tmp_path / "model.npz"
    link.symlink_to("/dev/null")
    for path in ("/dev/null", link):
        write = writer(b"x")
        with pytest.raises(OutputPathError, match=r"/dev/null.* is a character device"):
            atomic_write(path, write)
        assert not write.calls
        with pytest.raises(OutputPathError, match="character device"):
            check_output_path(path, what="--save")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_directory_is_refused_with_a_file_name_suggested(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    write = writer(b"x")
    with pytest.raises(OutputPathError,
                       match=r"out is a folder, not a regular file.*out/model\.npz"):
        atomic_write(tmp_path / "out", write)
    assert not write.calls
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"
    with pytest.raises(OutputPathError, match="is a folder"):
        check_output_path(tmp_path / "out", what="--save")


def test_only_our_own_stale_partial_files_are_removed(tmp_path: Path) -> None:
    target = tmp_path / "m.npz"
    ours = [tmp_path / ".m.npz.abcd_123.part", tmp_path / ".m.npz.zz99zz99.part"]
    for p in ours:
        p.write_bytes(b"half a model")
    others = {
        ".m.npz.abcd123.part": b"7 random characters",
        ".m.npz.abcd1234.part.bak": b"another suffix",
        ".m.npz.ABCD1234.part": b"upper case: not mkstemp's",
        "m.npz.abcd1234.part": b"not hidden",
        ".n.npz.abcd1234.part": b"another target's",
        ".xm.npz.abcd1234.part": b"another target's",
        "notes.txt": b"the user's",
    }
    for name, data in others.items():
        (tmp_path / name).write_bytes(data)
    victim = tmp_path / "precious.txt"
    victim.write_bytes(b"keep me")
    (tmp_path / ".m.npz.linklink.part").symlink_to(victim)  # a link: never followed or removed
    theirs = tmp_path / ".m.npz.others12.part"  # another user's save: not ours to remove
    theirs.write_bytes(b"someone else's")
    if os.geteuid() == 0:
        os.chown(theirs, 65534, 65534)
    else:
        theirs.unlink()  # an unprivileged test cannot give a file away
    busy = tmp_path / ".m.npz.busy1234.part"  # a save running right now holds its lock
    busy.write_bytes(b"in progress")
    held = os.open(busy, os.O_RDONLY)
    fcntl.flock(held, fcntl.LOCK_EX)
    try:
        atomic_write(target, writer(b"model"))
    finally:
        os.close(held)

    assert target.read_bytes() == b"model"
    assert not any(p.exists() for p in ours)
    for name, data in others.items():
        assert (tmp_path / name).read_bytes() == data, name
    assert (tmp_path / ".m.npz.linklink.part").is_symlink() and victim.read_bytes() == b"keep me"
    assert busy.read_bytes() == b"in progress"
    assert theirs.exists() or os.geteuid() != 0


def test_partial_file_of_a_killed_save_is_cleaned_up_by_the_next(tmp_path: Path) -> None:
    target = tmp_path / "model.npz"
    target.write_bytes(b"old model")
    script = textwrap.dedent(f"""
        import os, signal
        from portanet.files import atomic_write
        def write(f):
            f.write(b"x" * 100_000)
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        atomic_write({str(target)!r}, write)
    """)
    proc = subprocess.run([sys.executable, "-c", script],
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == -9
    parts = list(tmp_path.glob(".model.npz.*.part"))
    assert len(parts) == 1 and parts[0].stat().st_size == 100_000
    assert target.read_bytes() == b"old model"  # the killed save changed nothing

    atomic_write(target, writer(b"new model"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]
    assert target.read_bytes() == b"new model"


def test_failed_write_removes_its_partial_and_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "m.npz"
    target.write_bytes(b"old")

    def fail(f):
        f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, fail)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]


# --- check_output_path -------------------------------------------------------------------------


def test_output_that_is_an_input_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "mydata.npz"
    data.write_bytes(b"the user's dataset")
    inputs = {"the dataset file (--dataset-file)": str(data)}
    with pytest.raises(OutputPathError, match=r"--save .*mydata\.npz is the same file as the "
                                              r"dataset file \(--dataset-file\)"):
        check_output_path(str(data), inputs, what="--save")
    # Through a link, a hard link, a relative path, and in a plain list of inputs.
    link = tmp_path / "link.npz"
    link.symlink_to(data)
    hard = tmp_path / "hard.npz"
    os.link(data, hard)
    for other in (link, hard):
        with pytest.raises(OutputPathError, match="same file as"):
            check_output_path(other, inputs, what="--save")
        with pytest.raises(OutputPathError, match=r"same file as the input .*mydata\.npz"):
            check_output_path(other, [None, data])
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        (tmp_path / "sub").mkdir()
        with pytest.raises(OutputPathError, match="same file as"):
            check_output_path("./sub/../mydata.npz", inputs)
    finally:
        os.chdir(cwd)
    assert data.read_bytes() == b"the user's dataset"
    # Another file, an output that does not exist yet, and missing inputs are fine.
    assert check_output_path(tmp_path / "model.npz", inputs) == tmp_path / "model.npz"
    assert check_output_path(tmp_path / "new" / "deeper" / "m.npz", [tmp_path / "gone.npz"])
    assert not (tmp_path / "new").exists()  # the check creates nothing


def test_output_paths_checks_name_the_problem(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(OutputPathError, match="--save: the path is empty"):
        check_output_path("", what="--save")
    blocker = tmp_path / "results"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(OutputPathError, match=r"results is a file, so the folder .*results "
                                              r"cannot be created"):
        check_output_path(blocker / "m.npz")
    with pytest.raises(OutputPathError, match=r"results is a file, so the folder .*results/deep "
                                              r"cannot be created"):
        check_output_path(blocker / "deep" / "m.npz")
    with pytest.raises(OutputPathError, match="a file is in the way"):
        atomic_write(blocker / "m.npz", writer(b"x"))  # the write itself says so too

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)  # a folder the write creates
    monkeypatch.setattr(tempfile, "mkstemp", read_only)  # the partial file of an existing one
    with pytest.raises(OutputPathError, match=r"folder .* is on a read-only file system; choose"):
        check_output_path(tmp_path / "m.npz")
    with pytest.raises(OutputPathError, match=r"folder .* is on a read-only file system; choose"):
        check_output_path(tmp_path / "new" / "m.npz")


def test_read_only_folder_is_refused(tmp_path: Path) -> None:
    """Root may write anywhere, so as root the checks run in a child as the user 'nobody'."""
    base = Path(tempfile.mkdtemp(prefix="portanet-ro-"))  # tmp_path is private to root
    try:
        base.chmod(0o755)
        ro = base / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        out = ro / "sub" / "m.npz"
        expected = (f"cannot write {out}: the folder {ro} is not writable (permission denied); "
                    f"choose another path")
        if os.geteuid() != 0:
            with pytest.raises(OutputPathError) as info:
                check_output_path(out)
            assert str(info.value) == expected
            with pytest.raises(OutputPathError, match="not writable"):
                atomic_write(ro / "m.npz", writer(b"x"))
        else:
            assert as_nobody(lambda: check_output_path(out)) == f"refused: {expected}"
            assert "not writable" in as_nobody(
                lambda: atomic_write(ro / "m.npz", writer(b"x")))
            assert as_nobody(lambda: check_output_path(base / "m.npz")).startswith("refused")
            assert as_nobody(lambda: check_output_path(Path(tempfile.gettempdir()) / "m.npz")
                              ) == f"ok: {Path(tempfile.gettempdir()).resolve() / 'm.npz'}"
        assert list(ro.iterdir()) == []
    finally:
        shutil.rmtree(base)


def test_check_output_dir(tmp_path: Path) -> None:
    data = tmp_path / "data.npz"
    data.write_bytes(b"d")
    with pytest.raises(OutputPathError, match=r"--out .*data\.npz is a file, not a folder"):
        check_output_dir(data, what="--out")
    out = tmp_path / "run"
    assert check_output_dir(out, ["report.json"]) == out and not out.exists()
    out.mkdir()
    (out / "report.json").mkdir()
    with pytest.raises(OutputPathError, match=r"report\.json is a folder, not a regular file"):
        check_output_dir(out, ["report.json", "confusion_matrix.png"])
    with pytest.raises(OutputPathError, match=r"same file as the model"):
        check_output_dir(tmp_path, ["data.npz"], {"the model": data}, what="--out")
    with pytest.raises(OutputPathError, match="path is empty"):
        check_output_dir("")


def test_output_path_error_is_both_oserror_and_valueerror() -> None:
    # Callers that catch OSError around writes (the dataset cache) and the command line, which
    # turns ValueError into a one-line message, both see it.
    assert issubclass(OutputPathError, OSError) and issubclass(OutputPathError, ValueError)
    assert _files.__all__


def test_check_input_file(tmp_path: Path) -> None:
    data = tmp_path / "data.npz"
    data.write_bytes(b"d")
    link = tmp_path / "link.npz"
    link.symlink_to(data)
    assert check_input_file(data) == data and check_input_file(link) == link
    os.mkfifo(tmp_path / "pipe")  # reading it would block for ever
    with pytest.raises(InputPathError, match=r"--dataset-file .*pipe is a FIFO \(named pipe\), "
                                             r"not a regular file"):
        check_input_file(tmp_path / "pipe", what="--dataset-file")
    with pytest.raises(InputPathError, match=r"the model file /dev/null is a character device"):
        check_input_file("/dev/null", what="the model file")
    with pytest.raises(InputPathError, match="is a folder"):
        check_input_file(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"the input file .*gone\.npz does not exist"):
        check_input_file(tmp_path / "gone.npz")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        check_input_file(data / "below-a-file.npz")
    with pytest.raises(InputPathError, match="the path is empty"):
        check_input_file("")
