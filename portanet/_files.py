"""Writing files so that nothing a user has is lost or left half-written.

:func:`atomic_write` writes through symbolic links to their target, refuses to replace anything
that is not a regular file (a folder, a FIFO, ``/dev/null``), and removes the partial files that
an earlier save of the same target left behind when it was killed. :func:`check_output_path`
and :func:`check_output_dir` let a command refuse a bad output path before any work is done.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Any

try:
    import fcntl
except ImportError:  # Windows: an open file cannot be deleted there, which protects it anyway
    fcntl = None  # type: ignore[assignment]

__all__ = ["InputPathError", "OutputPathError", "atomic_write", "check_input_file",
           "check_output_dir", "check_output_path"]

PathLike = str | os.PathLike[str]
Inputs = Mapping[str, PathLike | None] | Iterable[PathLike | None]
_PART_SUFFIX = ".part"


class OutputPathError(OSError, ValueError):
    """An output path that cannot or must not be written; the message names it and the fix.

    Both an ``OSError`` (what a failed write raises) and a ``ValueError`` (a bad argument).
    """


class InputPathError(OSError, ValueError):
    """An input path that is not a readable regular file; the message names it and the fix."""


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
            folder, a FIFO, a device such as ``/dev/null``), or its folder cannot be created or
            written; nothing is written then.
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
                os.replace(tmp, target)  # still open and locked: no cleanup can take it
        if fcntl is None:
            os.replace(tmp, target)  # Windows cannot rename an open file
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_folder(target.parent)
    return path


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


def _labelled(inputs: Inputs) -> list[tuple[str, PathLike]]:
    if isinstance(inputs, Mapping):
        return [(label, p) for label, p in inputs.items() if p]
    return [(f"the input {p}", p) for p in inputs if p]


def check_output_path(path: PathLike, inputs: Inputs = (), *, what: str = "the output") -> Path:
    """Check, before any work, that :func:`atomic_write` can write ``path`` without losing
    anything; return the file that will be written (links followed).

    Args:
        path: the output file.
        inputs: files the command reads; the output must not be any of them (compared by
            device and inode, so through links and hard links). A mapping gives each a label
            for the message, e.g. ``{"the dataset file (--dataset-file)": args.dataset_file}``.
            ``None`` and empty entries are skipped.
        what: how the message names the output, e.g. ``"--save"``.

    Raises:
        OutputPathError: one line naming the path, the problem and the fix, for an empty path,
            a link loop, an existing folder, FIFO or device, a file that is one of ``inputs``,
            a parent that is a file, or a folder that cannot be written.
    """
    if not str(path):
        raise OutputPathError(f"{what}: the path is empty; give a file name such as model.npz")
    path = Path(path)
    target = _resolve(path)
    _refuse_non_regular(path, target)
    if target.exists():
        mine = target.stat()
        for label, source in _labelled(inputs):
            try:
                same = os.path.samestat(mine, os.stat(source))
            except OSError:
                continue
            if same:
                raise OutputPathError(
                    f"{what} {path} is the same file as {label} ({source}); writing it would "
                    f"destroy that input: choose another file name"
                )
    _check_writable_folder(path, target.parent)
    return target


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
