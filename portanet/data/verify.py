"""Reading the copies of a data set's files in one local place (a folder of IDX files, raw or
``.gz``, or an ``.npz`` archive) and checking each against the sha256 of its canonical IDX bytes.

:mod:`portanet.data.sources` decides which places to search, in what order, and what to do with
a copy that fails; this module only reads and verifies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from portanet.data import bounds
from portanet.data.download import sha256_hex
from portanet.data.idx import (
    IMAGES_MAGIC,
    LABELS_MAGIC,
    IDXFormatError,
    idx_bytes,
    parse_idx,
    read_idx_bytes,
)
from portanet.data.specs import (
    IMAGE_SHAPE,
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    DatasetSpec,
)

# The key sets an .npz may use: Keras' mnist.npz, and the 2023 article's mndata.npz.
NPZ_KEYS: tuple[dict[str, str], ...] = (
    {TRAIN_IMAGES: "x_train", TRAIN_LABELS: "y_train",
     TEST_IMAGES: "x_test", TEST_LABELS: "y_test"},
    {TRAIN_IMAGES: "trainimages", TRAIN_LABELS: "trainlabels",
     TEST_IMAGES: "testimages", TEST_LABELS: "testlabels"},
)


@dataclass
class Copy:
    """One file found somewhere: its array when it verified, else what is wrong with it."""

    name: str
    where: str
    path: Path
    array: np.ndarray | None = None
    problem: str | None = None


@dataclass
class Place:
    """A local place data may be in: a folder of IDX files, or an .npz file."""

    label: str
    path: Path
    kind: str  # "folder" or "npz"
    role: str  # "user", "cache" or "system": decides what happens to a bad copy

def scan_place(
    spec: DatasetSpec, place: Place, names: Sequence[str]
) -> tuple[list[Copy], list[str], str | None]:
    """Read and verify ``names`` in ``place``: (copies found, names absent, place-wide error)."""
    if place.kind == "npz":
        return (*_scan_npz(spec, place.path, names), None)
    if not place.path.is_dir():
        return [], list(names), "does not exist"
    copies: list[Copy] = []
    absent: list[str] = []
    for name in names:
        candidates = [p for p in (place.path / name, place.path / f"{name}.gz") if p.is_file()]
        if not candidates:
            absent.append(name)
        for path in candidates:
            copy = Copy(name, str(path), path)
            try:
                data = read_idx_bytes(path)
                copy.problem = problem_with(spec, name, data)
                if copy.problem is None:
                    copy.array = parse_idx(data, str(path), magic=_magic(name))
            except (OSError, IDXFormatError) as exc:
                copy.problem = str(exc)
            copies.append(copy)
            if copy.problem is None:
                break
    return copies, absent, None


def _scan_npz(
    spec: DatasetSpec, path: Path, names: Sequence[str]
) -> tuple[list[Copy], list[str]]:
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as exc:  # not a NumPy file, unreadable, truncated zip...
        return [Copy(name, str(path), path, problem=f"cannot read: {exc}") for name in names], []
    if not hasattr(archive, "files"):
        return [Copy(name, str(path), path, problem="not an .npz archive") for name in names], []
    copies = []
    with archive:
        try:  # what the arrays declare, bounded before any is read
            bounds.npy_headers(str(path), archive.zip, path.stat().st_size)
        except (ValueError, OSError) as exc:
            problem = str(exc).removeprefix(f"{path}: ")
            return [Copy(name, str(path), path, problem=problem) for name in names], []
        keys = next((k for k in NPZ_KEYS if set(k.values()) <= set(archive.files)), None)
        if keys is None:
            wanted = " or ".join(", ".join(k.values()) for k in NPZ_KEYS)
            problem = f"has keys {sorted(archive.files)}, expected {wanted}"
            return [Copy(name, str(path), path, problem=problem) for name in names], []
        for name in names:
            copy = Copy(name, f"{path}[{keys[name]}]", path)
            try:
                array = _as_uint8(name, archive[keys[name]])
                copy.problem = problem_with(spec, name, idx_bytes(array))
                if copy.problem is None:
                    copy.array = array
            except Exception as exc:  # object arrays refused by allow_pickle=False, bad zip...
                copy.problem = f"{type(exc).__name__}: {exc}"
            copies.append(copy)
    return copies, []

def problem_with(spec: DatasetSpec, name: str, data: bytes) -> str | None:
    """None when ``data`` hashes to the expected sha256, else what is wrong with it."""
    digest = sha256_hex(data)
    expected = spec.sha256[name]
    if digest == expected:
        return None
    problem = f"sha256 mismatch (got {digest[:16]}..., expected {expected[:16]}...)"
    try:
        parse_idx(data, name, magic=_magic(name))
    except IDXFormatError as exc:
        problem += f"; {exc}"
    return problem


def _magic(name: str) -> int:
    return IMAGES_MAGIC if "images" in name else LABELS_MAGIC


def _as_uint8(name: str, array: np.ndarray) -> np.ndarray:
    """An .npz array as the uint8 array of its IDX file (lossless, or an error)."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        if array.dtype.kind not in "iu":
            raise TypeError(f"dtype {array.dtype} is not an integer type")
        if array.size and (array.min() < 0 or array.max() > 255):
            raise ValueError("values outside 0..255")
        array = array.astype(np.uint8)
    if "images" in name and array.ndim == 2 and array.shape[1] == IMAGE_SHAPE[0] * IMAGE_SHAPE[1]:
        array = array.reshape(-1, *IMAGE_SHAPE)
    return array
