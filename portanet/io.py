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

from portanet._files import atomic_write, check_input_file
from portanet._version import __version__
from portanet.backend import Backend
from portanet.layers import LAYER_TYPES, Layer
from portanet.model import Sequential

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
    bad = [name for name, a in arrays.items() if not np.isfinite(a).all()]
    if bad:
        raise ValueError(f"not saving {path}: {', '.join(bad)} hold NaN or infinite values (the "
                         f"training diverged); train again with a lower learning rate")
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
    ``"auto"``), in ``dtype`` (default: the dtype it was saved in).

    Before anything is allocated, the layers the file declares are checked against the arrays
    it holds (names and shapes) and every array must be finite; each problem is a ValueError
    naming the file.
    """
    metadata, arrays = _read(path)
    layers = [_layer(path, i, spec) for i, spec in enumerate(metadata["layers"])]
    _check_arrays(path, layers, arrays)
    try:
        model = Sequential(layers, backend=backend, seed=0, dtype=dtype or metadata["dtype"],
                           input_shape=metadata.get("input_shape"))
        model.load_state_dict(arrays)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from None
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


def _check_arrays(path: Any, layers: list[Layer], arrays: dict[str, np.ndarray]) -> None:
    """The file's arrays are exactly what its layers declare, and finite: checked before any
    layer allocates (a small file cannot ask for gigabytes of weights it does not hold)."""
    declared = {f"{i}.{key}": shape for i, layer in enumerate(layers)
                for key, shape in layer.state_shapes().items()}
    problems = []
    missing = [name for name in declared if name not in arrays]
    if missing:
        problems.append(f"missing {', '.join(missing)}")
    unexpected = [name for name in arrays if name not in declared]
    if unexpected:
        problems.append(f"unexpected {', '.join(unexpected)}")
    wrong = [f"{name} is {arrays[name].shape}, its layer declares {shape}"
             for name, shape in declared.items()
             if name in arrays and tuple(arrays[name].shape) != tuple(shape)]
    if wrong:
        problems.append("; ".join(wrong))
    if problems:
        raise ValueError(f"{path}: the arrays do not match the layers the file declares: "
                         + "; ".join(problems) + "; the file is damaged or was edited")
    not_float = [name for name, a in arrays.items() if a.dtype.kind != "f"]
    if not_float:
        raise ValueError(f"{path}: {', '.join(not_float)} not floating point; the file is "
                         f"damaged or not portanet's")
    bad = [name for name, a in arrays.items() if not np.isfinite(a).all()]
    if bad:
        raise ValueError(
            f"{path}: {', '.join(bad)} hold NaN or infinite values: the model diverged when it "
            f"was trained. Train it again with a lower learning rate"
        )


def _read(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    path = Path(path)
    check_input_file(path, what="the model file")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        # NumPy's own advice for a non-archive ("allow_pickle=True") would be unsafe here.
        detail = "it is not an .npz archive" if "pickle" in str(exc) else str(exc)
        raise ValueError(
            f"{path} is not a readable portanet model file (corrupt, truncated or another "
            f"format): {detail}"
        ) from None
    if not isinstance(arrays, dict) or not arrays:
        raise ValueError(f"{path} is not a portanet model file (an .npz with no arrays)")
    raw = arrays.pop(METADATA_KEY, None)
    if raw is None:
        raise ValueError(f"{path} is an .npz file but not a portanet model (no {METADATA_KEY})")
    try:
        metadata = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: the model metadata is corrupt ({exc})") from exc
    if not isinstance(metadata, dict):
        raise ValueError(f"{path}: the model metadata is a {type(metadata).__name__}, not an "
                         f"object; the file is damaged or not portanet's")
    if metadata.get("format") != FORMAT:
        raise ValueError(f"{path} is not a portanet model file (format {metadata.get('format')!r})")
    version = metadata.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"{path} was written in model format {version!r}, newer than this portanet reads "
            f"({FORMAT_VERSION}); upgrade portanet"
        )
    _check_metadata(path, metadata)
    return metadata, arrays


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
