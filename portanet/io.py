"""Saving and loading models: one ``.npz`` file of host arrays plus JSON metadata.

The file holds the parameters and buffers as plain NumPy arrays (named like ``"0.W"`` and
``"3.running_mean"``) and an entry ``__portanet__`` with UTF-8 JSON: format version, layer
list (each layer's registered type name and its ``config()``), per-sample input shape, dtype.
It is read with ``allow_pickle=False``, so loading a file runs no code, and it loads onto any
backend. Format 1 files (before buffers and input shapes) still load.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from portanet._files import atomic_write
from portanet.backend import Backend
from portanet.layers import LAYER_TYPES
from portanet.model import Sequential

FORMAT = "portanet-model"
FORMAT_VERSION = 2
METADATA_KEY = "__portanet__"


def save(model: Sequential, path: str | os.PathLike[str], **extra: Any) -> Path:
    """Save ``model`` to ``path`` (``.npz``), atomically. ``extra`` JSON-able metadata is kept
    (e.g. the training configuration) and returned by :func:`load_metadata`."""
    from portanet import __version__

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
    arrays[METADATA_KEY] = np.frombuffer(json.dumps(metadata).encode("utf-8"), dtype=np.uint8)
    return atomic_write(path, lambda f: np.savez(f, **arrays))


def load_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON metadata of a saved model, checked for format and version."""
    return _read(path)[0]


def load(
    path: str | os.PathLike[str],
    backend: Backend | str | None = None,
    dtype: str | None = None,
) -> Sequential:
    """Load a model saved by :func:`save` onto ``backend`` (default: ``PORTANET_BACKEND`` or
    ``"auto"``), in ``dtype`` (default: the dtype it was saved in)."""
    metadata, arrays = _read(path)
    layers = []
    for i, spec in enumerate(metadata["layers"]):
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
            layers.append(cls(**spec))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: layer {i} ({cls.__name__}) is invalid: {exc}") from exc
    try:
        model = Sequential(layers, backend=backend, seed=0, dtype=dtype or metadata["dtype"],
                           input_shape=metadata.get("input_shape"))
        model.load_state_dict(arrays)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    model.eval()
    return model


def _read(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no model file at {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise ValueError(
            f"{path} is not a readable portanet model file (corrupt, truncated or another "
            f"format): {exc}"
        ) from exc
    raw = arrays.pop(METADATA_KEY, None)
    if raw is None:
        raise ValueError(f"{path} is an .npz file but not a portanet model (no {METADATA_KEY})")
    try:
        metadata = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: the model metadata is corrupt ({exc})") from exc
    if metadata.get("format") != FORMAT:
        raise ValueError(f"{path} is not a portanet model file (format {metadata.get('format')!r})")
    version = metadata.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"{path} was written in model format {version!r}, newer than this portanet reads "
            f"({FORMAT_VERSION}); upgrade portanet"
        )
    return metadata, arrays
