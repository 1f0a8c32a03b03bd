"""The boundary of training and inference: inputs and labels are checked once (shape, dtype,
NaN, label range) and copied to the model's device once. Every error names the problem and the
fix.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from portanet.backend import Backend, host_array
from portanet.finite import all_finite
from portanet.model import Sequential


def _host_or_device(backend: Backend, array: Any, what: str) -> tuple[Any, bool]:
    """``array`` and whether it is already on ``backend``; host data (NumPy, lists) is accepted
    as NumPy, arrays of another backend raise a ValueError naming ``what``."""
    if isinstance(array, (list, tuple)):
        array = host_array(array, what)
    on_device = backend.owns(array)
    if not on_device and not isinstance(array, np.ndarray):
        if not hasattr(array, "shape") or not hasattr(array, "dtype"):
            raise TypeError(
                f"{what} is a {type(array).__name__} ({array!r:.40}), not an array; pass an "
                f"array of shape (samples, ...), e.g. numpy.asarray(rows)"
            )
        backend.check_array(array, what)
    return array, on_device


def prepare_inputs(model: Sequential, X: Any, what: str = "X") -> Any:
    """Check ``X`` (host NumPy or an array of the model's backend) and return it on the device
    in the model's float dtype. Raises ValueError naming the problem and the fix."""
    backend, xp = model.backend, model.backend.xp
    X, on_device = _host_or_device(backend, X, what)
    dtype_ok = xp.isdtype(X.dtype, "real floating") if on_device else X.dtype.kind == "f"
    if not dtype_ok:
        raise ValueError(
            f"{what} has dtype {X.dtype}, but portanet computes in floating point; scale "
            f"images to [0, 1] first, e.g. portanet.data.to_device(images, labels, backend) "
            f"or X.astype('float32') / 255"
        )
    if X.ndim < 2 or X.shape[0] == 0:
        raise ValueError(
            f"{what} must have shape (samples, features...) with at least one sample, "
            f"got {tuple(X.shape)}"
        )
    _check_features(model, tuple(X.shape), what)
    if on_device:
        X = X if X.dtype == backend.dtype else xp.astype(X, backend.dtype)
    else:
        X = backend.asarray(X)
    if not bool(all_finite(xp, X)):
        raise ValueError(f"{what} contains NaN or infinite values; remove or impute them first")
    return X


def _check_features(model: Sequential, shape: tuple[int, ...], what: str) -> None:
    """Raise a ValueError when samples of ``shape[1:]`` do not fit the model's layers."""
    sample = tuple(shape[1:])
    expected = model.input_shape
    if expected is not None and sample != expected:
        fix = f" (it expects {expected[0]} features per sample)" if len(expected) == 1 else ""
        if len(expected) == 1 and len(sample) > 1:
            fix += "; add a Flatten() layer first or flatten the samples"
        elif math.prod(sample) == math.prod(expected):
            fix += f"; reshape it, e.g. X.reshape(-1, {', '.join(map(str, expected))})"
        raise ValueError(
            f"{what} has shape {shape}, but the model takes samples of shape {expected}{fix}"
        )
    model.shapes_from(sample, what)


def prepare_labels(model: Sequential, y: Any, n: int, what: str = "y") -> Any:
    """Check integer labels ``y`` (length ``n``, in ``[0, classes)``) and return them on the
    device as int64. Raises ValueError naming the problem and the fix."""
    backend, xp = model.backend, model.backend.xp
    y, on_device = _host_or_device(backend, y, what)
    integral = xp.isdtype(y.dtype, "integral") if on_device else y.dtype.kind in "iu"
    if not integral:
        raise ValueError(
            f"{what} has dtype {y.dtype}; labels must be integer class indices 0..k-1 "
            f"(convert one-hot rows with argmax(axis=1), whole-number floats with astype(int))"
        )
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"{what} must have shape ({n},) to match the inputs, got {tuple(y.shape)}")
    # The range is read in the labels' own dtype, so uint64 labels above 2**63 don't wrap.
    low, high = (int(xp.min(y)), int(xp.max(y))) if on_device else (int(y.min()), int(y.max()))
    classes = model.num_outputs
    if low < 0 or (classes is not None and high >= classes):
        bound = f"[0, {classes})" if classes is not None else "non-negative"
        raise ValueError(
            f"{what} holds labels from {low} to {high}, but the model has {classes} outputs, so "
            f"labels must be in {bound}; check the labels or widen the model's last layer"
        )
    y = y if on_device else backend.asarray(y)
    return y if y.dtype == xp.int64 else xp.astype(y, xp.int64)
