"""Reading and writing IDX files, the format MNIST and Fashion-MNIST are published in.

An IDX file is a big-endian header ``00 00 TT NN`` (``TT`` the element type, ``NN`` the number of
dimensions), then ``NN`` big-endian uint32 sizes, then the elements in C order. These data sets
use unsigned bytes only (``TT = 0x08``), so that is the only element type accepted: labels have
the magic number ``0x00000801`` (one dimension) and images ``0x00000803`` (three dimensions).
Files may be gzipped; that is recognised from their content, not their name.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from portanet.data import bounds
from portanet.files import atomic_write

UBYTE = 0x08
LABELS_MAGIC = 0x00000801
IMAGES_MAGIC = 0x00000803
GZIP_MAGIC = b"\x1f\x8b"


class IDXFormatError(ValueError):
    """A file is not a well-formed IDX file of unsigned bytes (the message names it and why)."""


def parse_idx(data: bytes, source: str = "<bytes>", *, magic: int | None = None) -> np.ndarray:
    """Decode the bytes of an (uncompressed) IDX file into a new uint8 array.

    Args:
        data: the whole file.
        source: the file's name, used in error messages.
        magic: the magic number required (:data:`LABELS_MAGIC`, :data:`IMAGES_MAGIC`), or
            ``None`` for any uint8 IDX file.

    Raises:
        IDXFormatError: bad magic number, element type other than uint8, or a payload whose
            length does not match the sizes in the header.
    """
    if len(data) < 4:
        raise IDXFormatError(f"{source}: only {len(data)} bytes, too short for an IDX header")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    found = (dtype_code << 8) | ndim
    if zero != 0 or ndim == 0:
        raise IDXFormatError(f"{source}: bad magic number 0x{data[:4].hex()}, not an IDX file")
    if dtype_code != UBYTE:
        raise IDXFormatError(
            f"{source}: element type 0x{dtype_code:02x} is not unsigned byte (0x08)"
        )
    if magic is not None and found != magic:
        raise IDXFormatError(
            f"{source}: magic number 0x{found:08x}, expected 0x{magic:08x} "
            f"({_describe(magic)})"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IDXFormatError(
            f"{source}: truncated header ({len(data)} bytes, the {ndim} sizes need {header})"
        )
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + math.prod(shape)
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise IDXFormatError(
            f"{source}: {what}: header says shape {shape} ({expected} bytes in all), "
            f"the file has {len(data)} bytes"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape).copy()


def read_idx(path: str | os.PathLike[str], *, magic: int | None = None) -> np.ndarray:
    """Read an IDX file, gzipped or raw, into a new uint8 array (see :func:`parse_idx`)."""
    path = Path(path)
    return parse_idx(read_idx_bytes(path), str(path), magic=magic)


def read_idx_bytes(path: Path) -> bytes:
    """The uncompressed bytes of a file that may be gzipped. A gzipped file is decompressed as
    far as its IDX header declares (and a little beyond, to see trailing bytes), once that
    size is known to fit what the compressed bytes can expand to and this machine's memory:
    a small file cannot make it decompress gigabytes.

    Raises:
        IDXFormatError: the file is gzipped but the gzip stream is corrupt or truncated, or
            its header declares more than it can hold or than fits in memory.
        OSError: the file cannot be read.
    """
    data = path.read_bytes()
    if data[:2] != GZIP_MAGIC:
        return data
    most = bounds.DEFLATE_MAX_RATIO * len(data) + 1024
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
            head = stream.read(4)
            ndim = head[3] if len(head) == 4 and head[:2] == b"\0\0" else 0
            head += stream.read(4 * ndim)
            declared = most
            if ndim and len(head) == 4 + 4 * ndim:
                declared = len(head) + math.prod(struct.unpack(f">{ndim}I", head[4:]))
            if declared > most:
                raise IDXFormatError(
                    f"{path}: the header declares shape "
                    f"{struct.unpack(f'>{ndim}I', head[4:])} ({declared:,} bytes), more than "
                    f"{len(data):,} bytes of gzip data can hold; the file is damaged or edited")
            try:
                bounds.check_fits_memory(str(path), declared, "its data")
            except ValueError as exc:
                raise IDXFormatError(str(exc)) from None
            return head + stream.read(declared - len(head)) + stream.read(1 << 16)
    except (OSError, EOFError, zlib.error) as exc:
        raise IDXFormatError(f"{path}: corrupt or truncated gzip data ({exc})") from exc


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding (header and payload) of a uint8 array with at least one dimension."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise TypeError(f"IDX files here hold uint8 data, got {array.dtype}")
    if array.ndim == 0 or array.ndim > 255:
        raise ValueError(f"cannot write a {array.ndim}-dimensional array as IDX")
    header = struct.pack(f">HBB{array.ndim}I", 0, UBYTE, array.ndim, *array.shape)
    return header + np.ascontiguousarray(array).tobytes()


def write_idx(path: str | os.PathLike[str], array: np.ndarray, *, compress: bool = False) -> None:
    """Write ``array`` as an IDX file, gzipped when ``compress``; atomic (temp file + rename)."""
    data = idx_bytes(array)
    if compress:
        data = gzip.compress(data, mtime=0)
    atomic_write(path, lambda f: f.write(data))


def _describe(magic: int) -> str:
    if magic == LABELS_MAGIC:
        return "uint8 labels, one dimension"
    if magic == IMAGES_MAGIC:
        return "uint8 images, three dimensions"
    return f"uint8, {magic & 0xFF} dimensions"
