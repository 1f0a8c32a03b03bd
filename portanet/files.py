"""Writing files so that nothing a user has is lost or left half-written.

:func:`atomic_write` writes through symbolic links to their target, refuses to replace anything
that is not a regular file (a folder, a FIFO, ``/dev/null``), and removes the partial files that
an earlier save of the same target left behind when it was killed; a full disk is one
:class:`DiskFullError` line naming the file and the space it needs. The checks that refuse a
bad path before any work (:mod:`portanet.file_checks`) use this module's partial-file name
(:func:`_new_temp`), so what a check passes the write can do.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

try:
    import fcntl
except ImportError:  # Windows: an open file cannot be deleted there, which protects it anyway
    fcntl = None  # type: ignore[assignment]

__all__ = ["DiskFullError", "InputPathError", "OutputPathError", "atomic_write"]

PathLike = str | os.PathLike[str]
_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
_PART_SUFFIX = ".part"
TEMP_EXTRA = len(".") + len(".XXXXXXXX") + len(_PART_SUFFIX)
"""How much longer than the target's name the name of its partial file is (15 characters)."""
NAME_MAX = 255
"""Bytes in one file name where the file system does not say (Linux, macOS, Windows)."""
PATH_MAX = 4096
"""Bytes in a path, the final NUL included, where the system does not say (Linux)."""


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


def _new_temp(target: Path) -> tuple[int, str]:
    """Create the partial file beside ``target`` that a write of it uses: ``.NAME.XXXXXXXX.part``,
    :data:`TEMP_EXTRA` characters longer than ``NAME``. :func:`atomic_write` writes through it
    and :func:`check_output_path` creates (and removes) one to prove the write will work."""
    return tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=_PART_SUFFIX)


def _locked_temp(target: Path) -> tuple[int, str]:
    """A new partial file beside ``target``, locked so that no other save removes it as stale."""
    while True:
        fd, tmp = _new_temp(target)
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
    if exc.errno == errno.ENAMETOOLONG:
        why = (f"allows no name this long (the temporary name it is written through is "
               f"{TEMP_EXTRA} characters longer); choose a shorter name")
        return _with_errno(OutputPathError(f"cannot write {_short(shown)}: the folder "
                                           f"{_short(folder)} {why}"), exc)
    if exc.errno == errno.EROFS:
        why = "is on a read-only file system"
    elif isinstance(exc, PermissionError):
        why = "is not writable (permission denied)"
    elif isinstance(exc, (FileExistsError, NotADirectoryError)):
        why = "cannot be created: a file is in the way"
    else:
        why = f"cannot be written ({exc.strerror or exc})"
    return _with_errno(OutputPathError(f"cannot write {shown}: the folder {folder} {why}; "
                                       f"choose another path"), exc)


def _with_errno(error: OutputPathError, exc: OSError) -> OutputPathError:
    error.errno = exc.errno  # kept for callers, but not in the one-line message
    return error


def _short(path: PathLike, keep: int = 100) -> str:
    """``path`` as a message shows it: a very long one as its start and end."""
    text = str(path)
    return text if len(text) <= keep else f"{text[:keep // 2]}...{text[-keep // 2:]}"

