"""What a file may make portanet allocate, bounded from its headers before anything is read.

A file's headers declare sizes (an ``.npy`` member's shape and dtype, an IDX header's sizes, a
zip entry's uncompressed size); a hostile or damaged file can declare petabytes in a few bytes.
Every route that reads a file (models, ``--dataset-file`` archives, IDX files raw or gzipped)
checks here, from the headers alone, that what it declares is what the file can hold (no more
bytes than are stored, or than its compression can expand to) and fits in this machine's
memory, and says so in one line otherwise.
"""

from __future__ import annotations

import math
import os
import zipfile
import zlib
from collections.abc import Sequence

import numpy as np

DEFLATE_MAX_RATIO = 1032
"""The most deflate (zip, gzip) expands: 258 bytes from each 2 bits, about 1032 to 1 (zlib's
technical details); a member claiming more than this times its compressed size is forged."""

READABLE = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate",
            zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "lzma"}
"""The zip compression methods Python reads (NumPy writes the first two)."""

METHOD_NAMES = {9: "deflate64", 10: "PKWARE DCL implode", 6: "implode", 93: "zstandard",
                95: "xz", 98: "PPMd", 99: "AES encryption"}


def size_text(n: int) -> str:
    """A byte count for messages: ``3,136 bytes``, ``2.79 PiB``."""
    if n < 1 << 20:
        return f"{n:,} bytes"
    exponent = min(int(math.log(n, 1024)), 6)
    return f"{n / 1024 ** exponent:.3g} {' KMGTPE'[exponent]}iB"


def physical_memory() -> int | None:
    """This machine's memory in bytes, or None where the system does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return None


def check_fits_memory(where: str, need: int, what: str) -> None:
    """Refuse, before allocating, ``need`` bytes that exceed this machine's memory.

    Raises:
        ValueError: naming ``where``, ``what`` would take and what the machine has.
    """
    memory = physical_memory()
    if memory is not None and need > memory:
        raise ValueError(f"{where}: {what} would take {size_text(need)}, more than this "
                         f"machine's {size_text(memory)} of memory; the file is damaged or "
                         f"was edited, or needs a larger machine")


def declared_bytes(shape: Sequence[int], dtype: np.dtype) -> int:
    """The bytes an array of ``shape`` and ``dtype`` takes (Python integers: no overflow)."""
    return math.prod(int(d) for d in shape) * dtype.itemsize


def member_problem(info: zipfile.ZipInfo) -> str | None:
    """What keeps a zip member from being read without a traceback: encryption, or a
    compression method Python cannot read (deflate64 from Windows' zip); None if nothing."""
    if info.flag_bits & 0x1:
        return (f"{info.filename} is encrypted (a password-protected archive), which NumPy and "
                f"portanet never write")
    if info.compress_type not in READABLE:
        method = METHOD_NAMES.get(info.compress_type, "an unknown method")
        return (f"{info.filename} is compressed with {method} (zip method "
                f"{info.compress_type}), which cannot be read here; unpack it and pack it "
                f"again uncompressed or with deflate (zip -0, or Python's zipfile)")
    return None


def member_size_problem(info: zipfile.ZipInfo, header: int, shape: Sequence[int],
                        dtype: np.dtype, archive_bytes: int) -> str | None:
    """What is wrong with the sizes of an ``.npy`` member whose header (``header`` bytes)
    declares ``shape`` and ``dtype``: more data than the member holds, or a member claiming
    more than the archive (``archive_bytes`` on disk) can store or its compression expand to;
    None if nothing."""
    need = declared_bytes(shape, dtype)
    holds = info.file_size - header
    if need > holds:
        return (f"{info.filename} declares shape {tuple(shape)} {dtype} ({size_text(need)}) "
                f"but holds {size_text(max(holds, 0))}")
    stored = min(info.compress_size, archive_bytes)
    most = {zipfile.ZIP_STORED: stored,
            zipfile.ZIP_DEFLATED: DEFLATE_MAX_RATIO * stored + 1024}.get(info.compress_type)
    if most is not None and info.file_size > most:
        return (f"{info.filename} claims {size_text(info.file_size)} from "
                f"{size_text(stored)} stored, more than its compression can hold")
    return None


HEADER_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error)
"""What reading a damaged member's header raises, depending on the damage."""


def npy_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo
               ) -> tuple[tuple[int, ...], np.dtype, int]:
    """The shape, dtype and header length an ``.npy`` member declares (its header alone read;
    raises one of :data:`HEADER_ERRORS` for a damaged one)."""
    with archive.open(info) as f:
        version = np.lib.format.read_magic(f)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, _, dtype = read_header(f)
        return tuple(shape), dtype, f.tell()


def npy_headers(where: str, archive: zipfile.ZipFile, archive_bytes: int
                ) -> dict[str, tuple[zipfile.ZipInfo, tuple[int, ...], np.dtype]]:
    """Each ``.npy`` member of ``archive`` by array name, with the shape and dtype its header
    declares, every member readable and its sizes bounded (nothing but headers read; other
    members are skipped).

    Raises:
        ValueError: a member that is encrypted or compressed unreadably, declares more than it
            holds, or would not fit in memory (all of them together); one line naming it.
    """
    found, total = {}, 0
    for info in archive.infolist():
        if not info.filename.endswith(".npy"):
            continue
        problem = member_problem(info)
        if problem is None:
            try:
                shape, dtype, header = npy_header(archive, info)
            except HEADER_ERRORS as exc:
                raise ValueError(f"{where}: {info.filename} is not a readable NumPy array "
                                 f"({exc}); the file is damaged or not one NumPy wrote"
                                 ) from None
            problem = member_size_problem(info, header, shape, dtype, archive_bytes)
        if problem is not None:
            raise ValueError(f"{where}: {problem}; the file is damaged, was edited, or is not "
                             f"one NumPy wrote")
        found[info.filename[: -len(".npy")]] = (info, tuple(shape), dtype)
        total += declared_bytes(shape, dtype)
    check_fits_memory(where, total, "its arrays")
    return found
