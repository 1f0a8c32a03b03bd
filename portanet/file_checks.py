"""The checks before any work: that :func:`portanet.files.atomic_write` can write a path
without losing anything, and that a run's outputs are none of its inputs.

:func:`check_output_path` performs what the write will do (the same partial file name, the same
rights to replace), so a write cannot fail where its check passed; :func:`check_output_dir`
checks a folder and the files it will receive; :func:`check_run_files` is the one rule for a
whole run; :func:`check_input_file` refuses inputs that are no readable regular file. All are
also importable from :mod:`portanet.files`.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from portanet.files import (
    NAME_MAX,
    PATH_MAX,
    TEMP_EXTRA,
    InputPathError,
    OutputPathError,
    PathLike,
    _folder_error,
    _kind,
    _new_temp,
    _refuse_non_regular,
    _resolve,
    _short,
)

__all__ = ["check_input_file", "check_output_dir", "check_output_path", "check_run_files"]

Inputs = Mapping[str, PathLike | None] | Iterable[PathLike | None]
Labelled = Iterable[tuple[str, PathLike]]

def _name_max(folder: Path) -> int:
    """The longest file name, in bytes, that ``folder`` (or its deepest existing ancestor)
    allows."""
    while not folder.is_dir() and folder.parent != folder:
        folder = folder.parent
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return NAME_MAX


def _check_lengths(path: Path, what: str) -> None:
    """Refuse a path the system cannot open (over ``PATH_MAX``, or a name over ``NAME_MAX``),
    before anything touches it."""
    full = os.path.abspath(path)
    size = len(os.fsencode(full))
    if size >= PATH_MAX:
        raise OutputPathError(f"{what} {_short(path)}: the path is {size:,} bytes long, over "
                              f"the system's limit of {PATH_MAX - 1:,}; choose a shorter path")
    for part in Path(full).parts:
        if len(os.fsencode(part)) > NAME_MAX:
            raise OutputPathError(
                f"{what} {_short(path)}: the name {_short(part, 40)} is "
                f"{len(os.fsencode(part)):,} bytes long, over the limit of {NAME_MAX} for one "
                f"name; choose a shorter name")


def _check_temp_fits(path: Path, target: Path, what: str) -> None:
    """Refuse a target whose partial file (:func:`_new_temp`, :data:`TEMP_EXTRA` longer) the
    file system cannot name, although the target's own name may fit."""
    limit = _name_max(target.parent)
    name = len(os.fsencode(target.name))
    if name + TEMP_EXTRA > limit:
        raise OutputPathError(
            f"{what} {_short(path)}: the name is {name} bytes long, and portanet writes it "
            f"through a temporary file whose name is {TEMP_EXTRA} longer, over this file "
            f"system's limit of {limit}; choose a name of at most {limit - TEMP_EXTRA} bytes")
    if len(os.fsencode(target.parent)) + 1 + name + TEMP_EXTRA >= PATH_MAX:
        raise OutputPathError(
            f"{what} {_short(path)}: the path of its temporary file would be over the system's "
            f"limit of {PATH_MAX - 1:,} bytes; choose a shorter path")


def _check_replace_rights(path: Path, target: Path, what: str) -> None:
    """Refuse an existing ``target`` that this user may write but not replace: in a folder with
    the sticky bit (``/tmp``), only the file's owner, the folder's owner and root may rename
    over it, whatever the file's permission bits say."""
    try:
        folder, mine = os.stat(target.parent), os.stat(target)
    except OSError:
        return
    uid = os.geteuid() if hasattr(os, "geteuid") else None
    if folder.st_mode & stat.S_ISVTX and uid not in (None, 0, mine.st_uid, folder.st_uid):
        raise OutputPathError(
            f"{what} {path} belongs to another user in {target.parent}, a shared folder (sticky "
            f"bit, like /tmp) where only a file's owner may replace it; choose another file "
            f"name")


def _probe_write(path: Path, target: Path) -> None:
    """Create and remove the very partial file a write of ``target`` creates (same folder,
    same name length): what the write needs of the folder, proven (root, ACLs, read-only
    mounts, name limits), not guessed from permission bits."""
    try:
        fd, tmp = _new_temp(target)
    except OSError as exc:
        raise _folder_error(path, target.parent, exc) from exc
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(tmp)


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
            write (``access(W_OK)``: read-only for this user, or immutable) or not replace
            (another user's file in a sticky folder such as ``/tmp``), a parent that is a
            file, a folder that cannot be written, or a name or path too long for the file
            system, counting the partial file the write goes through (:data:`TEMP_EXTRA`
            characters longer). Where the folder exists, the check creates and removes that
            very partial file, so the write cannot fail where the check passed.
    """
    if not str(path):
        raise OutputPathError(f"{what}: the path is empty; give a file name such as model.npz")
    path = Path(path)
    _check_lengths(path, what)
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
    _check_replace_rights(path, target, what)
    _check_temp_fits(path, target, what)
    if target.parent.is_dir():
        _probe_write(path, target)
    else:  # created by the write: its deepest existing ancestor must take a new folder
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
        InputPathError: ``path`` is empty, or a folder, FIFO, device or socket, or it cannot
            be read (permission denied on it or a folder of its path, a name too long).
    """
    if not str(path):
        raise InputPathError(f"{what}: the path is empty")
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise FileNotFoundError(f"{what} {_short(path)} does not exist") from None
    except PermissionError:
        raise InputPathError(f"{what} {path} cannot be reached: permission denied on a folder "
                             f"of its path; make the folders readable (chmod a+rx) or copy the "
                             f"file elsewhere") from None
    except OSError as exc:  # a name or path too long, a link loop
        raise InputPathError(f"{what} {_short(path)} cannot be opened: "
                             f"{exc.strerror or exc}; give a shorter or corrected path") from None
    if not stat.S_ISREG(mode):
        raise InputPathError(f"{what} {path} is {_kind(mode)}, not a regular file; give the "
                             f"path of a file")
    if not os.access(path, os.R_OK):
        raise InputPathError(f"{what} {path} is not readable (permission denied); make it "
                             f"readable (chmod a+r) or copy it elsewhere")
    return path
