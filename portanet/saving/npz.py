"""Saving and loading models: one ``.npz`` file of host arrays plus JSON metadata.

The file holds the parameters and buffers as plain NumPy arrays (named like ``"0.W"`` and
``"3.running_mean"``) and an entry ``__portanet__`` with UTF-8 JSON: format version, layer
list (each layer's registered type name and its ``config()``), per-sample input shape, dtype.
It is read with ``allow_pickle=False``, so loading a file runs no code, and it loads onto any
backend. Format 1 files (before buffers and input shapes) still load.
"""

from __future__ import annotations

import contextlib
import json
import os
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from portanet.backend import Backend
from portanet.data import bounds
from portanet.file_checks import check_input_file
from portanet.files import atomic_write
from portanet.finite import not_finite
from portanet.layers import LAYER_TYPES, AvgPool2D, Conv2D, Layer, MaxPool2D
from portanet.model import Sequential
from portanet.version import __version__

FORMAT = "portanet-model"
FORMAT_VERSION = 2
METADATA_KEY = "__portanet__"


def save(model: Sequential, path: str | os.PathLike[str], **extra: Any) -> Path:
    """Save ``model`` to ``path`` (``.npz``), atomically. ``extra`` JSON-able metadata is kept
    (e.g. the training configuration) and returned by :func:`load_metadata`."""
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "portanet_version": __version__,
        "dtype": model.backend.dtype_name,
        "input_shape": list(model.input_shape) if model.input_shape is not None else None,
        "layers": [{"type": type(layer).__name__, **layer.config()} for layer in model.layers],
        "extra": extra,
    }
    arrays = model.state_dict()
    bad = not_finite(arrays)
    if bad:
        raise ValueError(f"not saving {path}: {', '.join(bad)} hold NaN or infinite values (the "
                         f"training diverged); train again with a lower learning rate")
    arrays[METADATA_KEY] = np.frombuffer(json.dumps(metadata).encode("utf-8"), dtype=np.uint8)
    return atomic_write(path, lambda f: np.savez(f, **arrays))


def load_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON metadata of a saved model, checked for format and version (the arrays are
    not read)."""
    with _archive(path) as (archive, members):
        return _metadata(path, archive, members)


def load(
    path: str | os.PathLike[str],
    backend: Backend | str | None = None,
    dtype: str | None = None,
    input_shape: Sequence[int] | None = None,
) -> Sequential:
    """Load a model saved by :func:`save` onto ``backend`` (default: ``PORTANET_BACKEND`` or
    ``"auto"``), in ``dtype`` (default: the dtype it was saved in).

    ``input_shape`` is for files that do not record one (a model whose first layer is a
    convolution or pooling, saved without ``Sequential(..., input_shape=...)``): such a file
    is refused without it, since its inputs could not be checked or reshaped.

    Nothing is read or allocated before the file's structure is checked: duplicate member
    names are refused; each member's header (shape and dtype) is read and compared with the
    layers the file declares (``Layer.state_shapes()``) before any array data is read. Then
    every array must be finite in the model's dtype (after the cast: 1e300 does not fit in
    float32) and in its layer's domain (``Layer.check_state()``: a variance is >= 0). Each
    problem is a ValueError naming the file.
    """
    with _archive(path) as (archive, members):
        metadata = _metadata(path, archive, members)
        layers = [_layer(path, i, spec) for i, spec in enumerate(metadata["layers"])]
        _check_members(path, layers, members)
        arrays = {name: _read_array(path, archive, info) for name, (info, _, _) in
                  members.items() if name != METADATA_KEY}
    arrays = _check_values(path, layers, arrays, dtype or metadata["dtype"])
    shape = input_shape if input_shape is not None else metadata.get("input_shape")
    try:
        model = Sequential(layers, backend=backend, seed=0, dtype=dtype or metadata["dtype"],
                           input_shape=shape)
        model.load_state_dict(arrays)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    _check_input_shape(path, model)
    model.eval()
    return model


def _layer(path: Any, i: int, spec: Any) -> Layer:
    """Layer ``i`` from its saved spec (``{"type": name, **config}``); allocates nothing."""
    if not isinstance(spec, dict):
        raise ValueError(f"{path}: layer {i} is described by a {type(spec).__name__}, not an "
                         f"object with a 'type'; the file is damaged or not portanet's")
    spec = dict(spec)
    name = spec.pop("type", None)
    cls = LAYER_TYPES.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(
            f"{path}: layer {i} has the unknown type {name!r}; this portanet knows "
            f"{', '.join(sorted(LAYER_TYPES))}. If it is your own Layer subclass, import "
            f"the module that defines it before loading"
        )
    try:
        return cls(**spec)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: layer {i} ({cls.__name__}) is invalid: {exc}") from exc


Member = tuple[zipfile.ZipInfo, tuple[int, ...], np.dtype]
"""An archive member: its zip entry, and the shape and dtype its ``.npy`` header declares."""

MAX_METADATA_BYTES = 1 << 20
"""The JSON metadata of a model is a few kilobytes; a larger one is refused unread."""


class _FileError(ValueError):
    """A problem found in the file by this module (passed through, not re-described)."""


@contextlib.contextmanager
def _archive(path: str | os.PathLike[str]) -> Iterator[tuple[zipfile.ZipFile, dict[str, Member]]]:
    """The open archive and its members by array name, from their headers alone."""
    path = Path(path)
    check_input_file(path, what="the model file")
    with path.open("rb") as f:
        if f.read(6) == b"\x93NUMPY":
            raise ValueError(
                f"{path} is a single NumPy array (.npy), not a portanet model; a model is the "
                f".npz archive that portanet.save (or portanet train --save) writes")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise _unreadable(path, exc) from None
    with archive:
        try:
            members = _members(path, archive)
        except _FileError:
            raise
        except _READ_ERRORS as exc:
            raise _unreadable(path, exc) from None
        yield archive, members


_READ_ERRORS = (zipfile.BadZipFile, OSError, ValueError, EOFError, zlib.error)
"""What reading a damaged archive raises, depending on where the damage is."""


def _unreadable(path: Any, exc: BaseException) -> ValueError:
    # NumPy's own advice for a non-archive ("allow_pickle=True") would be unsafe here.
    detail = "it is not an .npz archive" if isinstance(exc, zipfile.BadZipFile) else str(exc)
    return ValueError(f"{path} is not a readable portanet model file (corrupt, truncated or "
                      f"another format): {detail}")


def _members(path: Path, archive: zipfile.ZipFile) -> dict[str, Member]:
    """Each member's name, shape and dtype from its ``.npy`` header (no data read); duplicate
    names (of which NumPy would silently use one) and members that are not arrays refused."""
    infos = archive.infolist()
    names = [info.filename for info in infos]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise _FileError(f"{path} holds {', '.join(twice)} more than once, so which array "
                         f"counts is ambiguous; the file is damaged or was edited")
    members: dict[str, Member] = {}
    size = path.stat().st_size
    for info in infos:
        if not info.filename.endswith(".npy"):
            raise _FileError(f"{path} holds {info.filename!r}, which is not an array; it is "
                             f"not a portanet model file")
        problem = bounds.member_problem(info)
        if problem is not None:
            raise _FileError(f"{path}: {problem}; it is not a portanet model file as saved")
        shape, dtype, header = bounds.npy_header(archive, info)
        problem = bounds.member_size_problem(info, header, shape, dtype, size)
        if dtype.hasobject:
            raise _FileError(f"{path}: {info.filename} holds Python objects, which a model "
                             f"file never does; it is not a portanet model file")
        if problem is not None:
            raise _FileError(f"{path}: {problem}; the file is truncated, damaged or was edited")
        members[info.filename[: -len(".npy")]] = (info, shape, dtype)
    if not members:
        raise _FileError(f"{path} is not a portanet model file (an .npz with no arrays)")
    need = sum(bounds.declared_bytes(shape, dtype) for name, (_, shape, dtype) in
               members.items() if name != METADATA_KEY)
    try:
        bounds.check_fits_memory(str(path), need, "its weights")
    except ValueError as exc:
        raise _FileError(str(exc)) from None
    return members


def _read_array(path: Any, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    """One member's array (its header already checked)."""
    try:
        with archive.open(info) as f:
            return np.lib.format.read_array(f, allow_pickle=False)
    except _READ_ERRORS as exc:
        raise _unreadable(path, exc) from None


def _metadata(path: Any, archive: zipfile.ZipFile, members: dict[str, Member]
              ) -> dict[str, Any]:
    """The metadata member, parsed and checked (format, version, field types)."""
    if METADATA_KEY not in members:
        raise _FileError(f"{path} is an .npz file but not a portanet model (no {METADATA_KEY})")
    info, shape, dtype = members[METADATA_KEY]
    if dtype != np.uint8 or len(shape) != 1 or shape[0] > MAX_METADATA_BYTES:
        raise _FileError(f"{path}: the model metadata is {shape} {dtype}, not up to "
                         f"{MAX_METADATA_BYTES:,} bytes of JSON; the file is damaged or not "
                         f"portanet's")
    raw = _read_array(path, archive, info)
    try:
        metadata = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _FileError(f"{path}: the model metadata is corrupt ({exc})") from exc
    if not isinstance(metadata, dict):
        raise _FileError(f"{path}: the model metadata is a {type(metadata).__name__}, not an "
                         f"object; the file is damaged or not portanet's")
    if metadata.get("format") != FORMAT:
        raise _FileError(
            f"{path} is not a portanet model file (format {metadata.get('format')!r})")
    version = metadata.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise _FileError(
            f"{path}: the model metadata's format_version is {version!r} (a "
            f"{type(version).__name__}), not a whole number from 1 to {FORMAT_VERSION}; the "
            f"file was edited or not written by portanet")
    if version > FORMAT_VERSION:
        raise _FileError(
            f"{path} was written in model format {version}, newer than the formats this "
            f"portanet reads (1 to {FORMAT_VERSION}); upgrade portanet"
        )
    try:
        _check_metadata(path, metadata)
    except ValueError as exc:
        raise _FileError(str(exc)) from None
    return metadata


def _check_members(path: Any, layers: list[Layer], members: dict[str, Member]) -> None:
    """The file's arrays, as their headers declare them, are exactly what its layers declare,
    and floating point: checked before any array is read (a small file cannot make the loader
    decompress gigabytes it then refuses) and before any layer allocates."""
    declared = {f"{i}.{key}": shape for i, layer in enumerate(layers)
                for key, shape in layer.state_shapes().items()}
    arrays = {name: (shape, dtype) for name, (_, shape, dtype) in members.items()
              if name != METADATA_KEY}
    problems = []
    missing = [name for name in declared if name not in arrays]
    if missing:
        problems.append(f"missing {', '.join(missing)}")
    unexpected = [name for name in arrays if name not in declared]
    if unexpected:
        problems.append(f"unexpected {', '.join(unexpected)}")
    wrong = [f"{name} is {arrays[name][0]}, its layer declares {shape}"
             for name, shape in declared.items()
             if name in arrays and tuple(arrays[name][0]) != tuple(shape)]
    if wrong:
        problems.append("; ".join(wrong))
    if problems:
        raise ValueError(f"{path}: the arrays do not match the layers the file declares: "
                         + "; ".join(problems) + "; the file is damaged or was edited")
    not_float = [name for name, (_, dtype) in arrays.items() if dtype.kind != "f"]
    if not_float:
        raise ValueError(f"{path}: {', '.join(not_float)} not floating point; the file is "
                         f"damaged or not portanet's")


def _check_values(path: Any, layers: list[Layer], arrays: dict[str, np.ndarray],
                  dtype: str) -> dict[str, np.ndarray]:
    """The arrays in the model's ``dtype``, every value finite there (checked after the
    cast: float64 1e300 becomes inf in float32) and in its layer's domain."""
    if dtype in ("float32", "float64"):  # anything else: Sequential names the problem
        with np.errstate(over="ignore"):
            arrays = {name: a.astype(dtype, copy=False) for name, a in arrays.items()}
    bad = not_finite(arrays)
    if bad:
        raise ValueError(
            f"{path}: {', '.join(bad)} hold NaN or infinite values in {dtype} (values beyond "
            f"{dtype}'s range become infinite when loaded): the model diverged when it was "
            f"trained, or the file was edited. Train it again with a lower learning rate"
        )
    for i, layer in enumerate(layers):
        state = {key: arrays[f"{i}.{key}"] for key in layer.state_shapes()}
        problems = layer.check_state(state)
        if problems:
            raise ValueError(f"{path}: layer {i} ({layer!r}): {'; '.join(problems)}; the file "
                             f"is damaged or was edited")
    return arrays


def _check_input_shape(path: Any, model: Sequential) -> None:
    """A model whose first layers take images must know their shape (else inputs could not be
    checked or reshaped); saved files record it, older or hand-made ones may not."""
    first = next((layer for layer in model.layers if not layer.keeps_shape), None)
    if model.input_shape is None and isinstance(first, (Conv2D, MaxPool2D, AvgPool2D)):
        raise ValueError(
            f"{path} does not record the shape of the images its first layer ({first!r}) "
            f"takes, so its inputs cannot be checked or reshaped. Record it once: python -c "
            f"\"import portanet as pn; pn.save(pn.load('{path}', input_shape=(1, 28, 28)), "
            f"'{path}')\" (channels, height, width: (1, 28, 28) for MNIST), or train the model "
            f"again with portanet train, which records it"
        )


def _check_metadata(path: Path, metadata: dict[str, Any]) -> None:
    """Each field a loader reads has the type it needs (one line naming the field if not)."""
    layers = metadata.get("layers")
    if not isinstance(layers, list) or not layers:
        raise ValueError(f"{path}: the model metadata has no list of layers; the file is "
                         f"damaged or not portanet's")
    if metadata.get("dtype") not in ("float32", "float64"):
        raise ValueError(f"{path}: the model metadata names the dtype {metadata.get('dtype')!r}, "
                         f"not 'float32' or 'float64'")
    if not isinstance(metadata.setdefault("extra", {}), dict):
        raise ValueError(f"{path}: the model metadata's 'extra' is a "
                         f"{type(metadata['extra']).__name__}, not an object")
    shape = metadata.get("input_shape")
    if shape is not None and not (isinstance(shape, list)
                                  and all(isinstance(d, int) and d > 0 for d in shape)):
        raise ValueError(f"{path}: the model metadata's input_shape {shape!r} is not a list of "
                         f"positive whole numbers")
