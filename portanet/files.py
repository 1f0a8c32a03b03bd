"""Writing files so that nothing a user has is lost or left half-written.

:func:`atomic_write` writes through symbolic links to their target, refuses to replace anything
that is not a regular file (a folder, a FIFO, ``/dev/null``), and removes the partial files that
an earlier save of the same target left behind when it was killed; a full disk is one
:class:`DiskFullError` line naming the file and the space it needs. :func:`check_output_path`
and :func:`check_output_dir` let a command refuse a bad output path before any work is done, and
:func:`check_run_files` is the one rule for a whole run: no file it writes is a file it reads or
another file it writes.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Any

try:
    import fcntl
except ImportError:  # Windows: an open file cannot be deleted there, which protects it anyway
    fcntl = None  # type: ignore[assignment]

__all__ = ["DiskFullError", "InputPathError", "OutputPathError", "atomic_write",
           "check_input_file", "check_output_dir", "check_output_path", "check_run_files"]

PathLike = str | os.PathLike[str]
Inputs = Mapping[str, PathLike | None] | Iterable[PathLike | None]
Labelled = Iterable[tuple[str, PathLike]]
_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
_PART_SUFFIX = ".part"


class OutputPathError(OSError, ValueError):
    """An output path that cannot or must not be written; the message names it and the fix.

    Both an ``OSError`` (what a failed write raises) and a ``ValueError`` (a bad argument).
    """


class InputPathError(OSError, ValueError):
    """An input path that is not a readable regular file; the message names it and the fix."""


class DiskFullError(OSError):
    """A write that ran out of disk space (ENOSPC) or quota (EDQUOT). Nothing of the file is
    left behind and an old file at the path is untouched; the one-line message names the path,
    the space it needed (at least the bytes written when the disk filled) and the space free.

    Attributes:
        path: the file that could not be written.
        kept: files a command wrote before this one, which stay (a caller may add to it).
    """

    def __init__(self, path: PathLike, needed: int, free: int | None, code: int) -> None:
        super().__init__(code, os.strerror(code))
        self.path, self.needed, self.free = Path(path), needed, free
        self.kept: list[Path] = []

    def __str__(self) -> str:
        what = "the disk quota is used up" if self.errno != errno.ENOSPC else \
            "no space left on the device"
        free = "" if self.free is None else f", {_size(self.free)} free"
        kept = f"; kept what was written before it: {', '.join(map(str, self.kept))}" \
            if self.kept else ""
        return (f"cannot write {self.path}: {what} (it needs more than {_size(self.needed)}"
                f"{free} in {self.path.parent}); free some space or choose another place{kept}")


def _size(count: int) -> str:
    for unit in ("bytes", "kB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:,} {unit}" if unit == "bytes" else f"{count:,.1f} {unit}"
        count /= 1000
    return ""  # not reached


def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISREG, "a file"), (stat.S_ISDIR, "a folder"),
                       (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _resolve(path: Path) -> Path:
    """The file that writing ``path`` changes: symbolic links followed to their target (which
    need not exist yet)."""
    target = Path(os.path.realpath(path))
    if target.is_symlink():  # realpath gives up on a loop and returns a link
        raise OutputPathError(f"{path}: its symbolic links form a loop ({target}); fix them")
    return target


def _refuse_non_regular(path: Path, target: Path) -> None:
    try:
        mode = target.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):  # nothing there (yet)
        return
    if stat.S_ISREG(mode):
        return
    via = f" (where the link {path} points)" if target != Path(os.path.abspath(path)) else ""
    if stat.S_ISDIR(mode):
        fix = f"give a file name inside it, e.g. {target / 'model.npz'}"
    else:
        fix = "give the path of a regular file"
    raise OutputPathError(
        f"{target}{via} is {_kind(mode)}, not a regular file; portanet replaces files whole "
        f"and will not replace it: {fix}"
    )


def _part_pattern(name: str) -> re.Pattern[str]:
    """Names of our own partial files for target ``name``: ``.NAME.XXXXXXXX.part`` where the 8
    characters are ``tempfile.mkstemp``'s random part."""
    return re.compile(rf"\.{re.escape(name)}\.[a-z0-9_]{{8}}{re.escape(_PART_SUFFIX)}")


def _remove_stale_parts(target: Path) -> list[Path]:
    """Delete partial files of ``target`` left by a save that was killed; return them.

    Only files whose name is exactly one of ours for this target, that are regular files (not
    links) owned by this user, and that no running save holds locked, are removed.
    """
    pattern = _part_pattern(target.name)
    removed: list[Path] = []
    try:
        names = os.listdir(target.parent)
    except OSError:
        return removed
    for name in names:
        if not pattern.fullmatch(name):
            continue
        part = target.parent / name
        try:
            fd = os.open(part, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:  # gone already, a link, or unreadable: not ours to touch
            continue
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or (
                hasattr(os, "getuid") and info.st_uid != os.getuid()
            ):
                continue
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:  # a save in progress holds it
                    continue
            if not os.path.samestat(os.lstat(part), info):
                continue  # replaced since we opened it
            os.unlink(part)
            removed.append(part)
        except OSError:
            continue
        finally:
            os.close(fd)
    return removed


def _locked_temp(target: Path) -> tuple[int, str]:
    """A new partial file beside ``target``, locked so that no other save removes it as stale."""
    while True:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.",
                                   suffix=_PART_SUFFIX)
        if fcntl is None:
            return fd, tmp
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:  # a concurrent cleanup may have removed it before we locked it
            same = os.path.samestat(os.lstat(tmp), os.fstat(fd))
        except FileNotFoundError:
            same = False
        if same:
            return fd, tmp
        os.close(fd)


def atomic_write(path: PathLike, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(binary_file)`` on a temporary file beside ``path``, then rename it into place.

    Readers see the old file or the whole new one, never a part: ``os.replace`` is atomic within
    one file system. If ``write`` raises, the temporary file is removed and an existing file at
    ``path`` is left untouched. A symbolic link is kept and its target is written; an existing
    file keeps its permission bits. Partial files that an earlier, killed save of the same
    target left behind are removed. Creates the parent folder; returns ``path``.

    Raises:
        OutputPathError: ``path`` (or its link target) exists and is not a regular file (a
            folder, a FIFO, a device such as ``/dev/null``), its folder cannot be created or
            written, or it cannot be replaced (immutable); nothing is written then.
        DiskFullError: the disk or the quota filled up while writing; the partial file is
            removed and an old file at ``path`` is untouched.
    """
    path = Path(path)
    target = _resolve(path)
    _refuse_non_regular(path, target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _folder_error(path, target.parent, exc) from exc
    _remove_stale_parts(target)
    try:
        fd, tmp = _locked_temp(target)
    except OSError as exc:
        raise _folder_error(path, target.parent, exc) from exc
    try:
        with os.fdopen(fd, "wb") as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())
            try:
                mode = stat.S_IMODE(target.stat().st_mode)
            except FileNotFoundError:
                mode = 0o644  # mkstemp makes it private; a saved model or cache file is not
            os.chmod(tmp, mode)
            if fcntl is not None:
                _replace(tmp, path, target)  # still open and locked: no cleanup can take it
        if fcntl is None:
            _replace(tmp, path, target)  # Windows cannot rename an open file
    except OSError as exc:
        if exc.errno not in _FULL:
            _discard(tmp)
            raise
        needed = _discard(tmp)
        raise DiskFullError(path, needed, _free_bytes(target.parent), exc.errno) from None
    except BaseException:
        _discard(tmp)
        raise
    _fsync_folder(target.parent)
    return path


def _replace(tmp: str, shown: Path, target: Path) -> None:
    """Rename ``tmp`` over ``target``; an immutable or protected target is one line."""
    try:
        os.replace(tmp, target)
    except PermissionError as exc:
        raise OutputPathError(f"cannot replace {shown}: permission denied ({exc.strerror}); it "
                              f"is protected (read-only, immutable, or another user's): choose "
                              f"another path") from None


def _discard(tmp: str) -> int:
    """Remove a partial file; the bytes it held (0 when it is gone)."""
    size = 0
    with contextlib.suppress(OSError):
        size = os.stat(tmp).st_size
    with contextlib.suppress(OSError):
        os.unlink(tmp)
    return size


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX; a no-op where folders cannot be opened)."""
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _folder_error(shown: Path, folder: Path, exc: OSError) -> OutputPathError:
    if exc.errno == errno.EROFS:
        why = "is on a read-only file system"
    elif isinstance(exc, PermissionError):
        why = "is not writable (permission denied)"
    elif isinstance(exc, (FileExistsError, NotADirectoryError)):
        why = "cannot be created: a file is in the way"
    else:
        why = f"cannot be written ({exc.strerror or exc})"
    error = OutputPathError(f"cannot write {shown}: the folder {folder} {why}; choose another path")
    error.errno = exc.errno  # kept for callers, but not in the one-line message
    return error


def _check_writable_folder(shown: Path, folder: Path) -> None:
    """Refuse if files cannot be created in ``folder``; ``shown`` is what the message says is
    being written. A missing ``folder`` is created by the write, so then its deepest existing
    ancestor must be a writable folder."""
    existing, missing = folder, None
    while not os.path.lexists(existing) and existing.parent != existing:
        existing, missing = existing.parent, existing
    if not existing.is_dir():
        raise OutputPathError(
            f"cannot write {shown}: {existing} is {_kind(existing.stat().st_mode)}, so the "
            f"folder {missing or folder} cannot be created; move it or choose another path"
        )
    # The honest test, which knows what access() and the permission bits do not (root ignores
    # them; read-only mounts, ACLs): make an unnamed file there and drop it.
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise _folder_error(shown, existing, exc) from exc


def _labelled(inputs: Inputs | Labelled) -> list[tuple[str, PathLike]]:
    """``(label, path)`` pairs from a mapping, a list of pairs or a list of paths."""
    if isinstance(inputs, Mapping):
        return [(label, p) for label, p in inputs.items() if p]
    pairs = [item if isinstance(item, tuple) else (f"the input {item}", item) for item in inputs]
    return [(label, p) for label, p in pairs if p]


def check_output_path(path: PathLike, inputs: Inputs | Labelled = (), *,
                      what: str = "the output") -> Path:
    """Check, before any work, that :func:`atomic_write` can write ``path`` without losing
    anything; return the file that will be written (links followed).

    Args:
        path: the output file.
        inputs: files the command reads; the output must not be any of them (compared by
            resolved path and by device and inode, so through links and hard links; an input
            need not exist). A mapping or a list of ``(label, path)`` pairs gives each a label
            for the message, e.g. ``{"the dataset file (--dataset-file)": args.dataset_file}``.
            ``None`` and empty entries are skipped.
        what: how the message names the output, e.g. ``"--save"``.

    Raises:
        OutputPathError: one line naming the path, the problem and the fix, for an empty path,
            a link loop, an existing folder, FIFO or device, a file that is one of ``inputs``
            (the same resolved path, or the same inode), an existing file this process may not
            write (``access(W_OK)``: read-only for this user, or immutable), a parent that is
            a file, or a folder that cannot be written.
    """
    if not str(path):
        raise OutputPathError(f"{what}: the path is empty; give a file name such as model.npz")
    path = Path(path)
    target = _resolve(path)
    _refuse_non_regular(path, target)
    for label, source in _labelled(inputs):
        if _same_file(target, source):
            raise OutputPathError(
                f"{what} {path} is the same file as {label} ({source}); writing it would "
                f"destroy that input: choose another file name"
            )
    if os.path.lexists(target) and not os.access(target, os.W_OK):
        raise OutputPathError(
            f"{what} {path} is read-only (or immutable); portanet will not replace a "
            f"protected file: make it writable or choose another file name")
    _check_writable_folder(path, target.parent)
    return target


def _same_file(target: Path, other: PathLike) -> bool:
    """Whether writing ``target`` (links already followed) changes the file ``other``: the
    same resolved path (which need not exist yet), or the same device and inode (a hard link)."""
    try:
        if Path(os.path.realpath(other)) == target:
            return True
        return os.path.samestat(target.stat(), os.stat(other))
    except (OSError, ValueError):
        return False


def check_run_files(writes: Labelled, reads: Labelled = ()) -> list[Path]:
    """The one rule for a run's files, checked before any work: every file in ``writes`` can
    be written (:func:`check_output_path`), none is a file in ``reads``, and no two are the
    same file. Each entry is ``(label, path)``, e.g. ``("--save", "m.npz")`` or
    ``("the data folder", ".../train-images-idx3-ubyte")``; read paths need not exist (a file a
    later search would read is protected too). Returns the files that will be written.

    Raises:
        OutputPathError: one line naming both files and the fix.
    """
    reads = list(reads)
    done: list[tuple[str, Path, Path]] = []
    for label, path in writes:
        target = check_output_path(path, reads, what=label)
        for other_label, other_path, other in done:
            if _same_file(target, other):
                raise OutputPathError(
                    f"{other_label} {other_path} and {label} {path} are the same file; the "
                    f"second write would replace the first: choose another file name or folder")
        done.append((label, Path(path), target))
    return [target for _, _, target in done]


def check_output_dir(
    folder: PathLike, names: Iterable[str] = (), inputs: Inputs = (), *,
    what: str = "the output folder",
) -> Path:
    """Check, before any work, that the files ``names`` can be written into ``folder`` (which
    may not exist yet); return ``folder``.

    Raises:
        OutputPathError: ``folder`` exists and is not a folder, a file is in the way of
            creating it, it cannot be written, or one of ``names`` inside it fails
            :func:`check_output_path` (a folder or FIFO of that name, or one of ``inputs``).
    """
    if not str(folder):
        raise OutputPathError(f"{what}: the path is empty; give a folder name such as runs/x")
    folder = Path(folder)
    resolved = _resolve(folder)
    if resolved.exists() and not resolved.is_dir():
        raise OutputPathError(
            f"{what} {folder} is {_kind(resolved.stat().st_mode)}, not a folder; choose a "
            f"folder name (it is created if missing)"
        )
    _check_writable_folder(folder, resolved)
    for name in names:
        check_output_path(folder / name, inputs, what=f"{what} {folder}:")
    return folder


def check_input_file(path: PathLike, *, what: str = "the input file") -> Path:
    """Check that ``path`` is an existing regular file (through links) before reading it: a
    FIFO would block the reader forever, and a folder or ``/dev/null`` gives a baffling error.

    Raises:
        FileNotFoundError: nothing is at ``path`` (the message names ``what`` and the path).
        InputPathError: ``path`` is empty, or a folder, FIFO, device or socket.
    """
    if not str(path):
        raise InputPathError(f"{what}: the path is empty")
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise FileNotFoundError(f"{what} {path} does not exist") from None
    if not stat.S_ISREG(mode):
        raise InputPathError(f"{what} {path} is {_kind(mode)}, not a regular file; give the "
                             f"path of a file")
    return path
