"""The boundary of training and inference: inputs and labels are checked once (shape, dtype,
NaN, label range) and copied to the model's device once; ``fit``'s other arguments (epochs,
l2, callbacks, the batch a BatchNorm model needs, the augmentation, the schedule's rates) are
checked before the first step. Every error names the problem and the fix.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from portanet import number_checks
from portanet.backend import Backend, host_array
from portanet.callbacks import Callback
from portanet.finite import all_finite
from portanet.layers import BatchNorm
from portanet.model import Sequential

if TYPE_CHECKING:
    from portanet.optim import Schedule
    from portanet.parallel.mpi import Communicator

Augment = Callable[[Any, Backend], Any]


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


# --- fit's other arguments, checked before the first step ---------------------------------


def check_fit_arguments(model: Sequential, epochs: Any, l2: Any, callbacks: Any,
                        validation_data: Any) -> tuple[float, list[Callback]]:
    """Check fit's arguments that bypass the optimizer; returns ``l2`` and the callbacks."""
    if not isinstance(model, Sequential):
        raise TypeError(f"model must be a portanet.Sequential, got {type(model).__name__}")
    if not model.parameter_slots():
        raise ValueError(f"the model has no parameters to train ({model!r}); add a Dense layer")
    fixed = [f"layer {i} ({layer!r})" for i, layer in enumerate(model.layers)
             if not layer.trainable]
    if fixed:
        raise ValueError(f"{', '.join(fixed)} cannot be trained: an ensemble averages models "
                         f"trained on their own; train each member with portanet.fit, then "
                         f"combine them with portanet.ensemble(models)")
    number_checks.non_negative_int("epochs", epochs)
    l2 = number_checks.finite_non_negative("l2", l2)
    if isinstance(callbacks, Callback):
        callbacks = [callbacks]
    callbacks = list(callbacks)
    for i, cb in enumerate(callbacks):
        if not isinstance(cb, Callback):
            raise TypeError(
                f"callbacks[{i}] is a {type(cb).__name__}, not a portanet.train.Callback; "
                f"subclass Callback and override on_epoch_end (or on_batch_end)"
            )
    if validation_data is not None and (
            not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2):
        raise ValueError("validation_data must be a pair (X_val, y_val)")
    return l2, callbacks


def scheduled_lr(schedule: Schedule, epoch: int, epochs: int) -> float:
    value = schedule(epoch, epochs)
    try:
        lr = float(value)
    except (TypeError, ValueError):
        lr = math.nan
    if not (math.isfinite(lr) and lr > 0.0):
        raise ValueError(
            f"lr_schedule returned {value!r} for epoch {epoch + 1} of {epochs}; a schedule must "
            f"return a finite learning rate > 0"
        )
    return lr


def check_batch_statistics(model: Sequential, batch: int, n: int, sample: tuple[int, ...],
                           comm: Communicator) -> None:
    """Refuse training steps whose BatchNorm statistics would come from a single value per
    channel (the batch variance is 0, the running variance learns nothing, and the model
    answers one class for everything), as PyTorch does ("Expected more than 1 value per
    channel when training"). The last, short batch is never one sample: the training loop
    merges it into the one before."""
    smallest = smallest_batch(model, sample, comm)
    ranks = comm.size
    if batch < smallest:
        where = f"{batch} over {ranks} processes" if ranks > 1 else f"{batch}"
        raise ValueError(
            f"the model has a BatchNorm layer that sees one value per channel per sample, so "
            f"it needs more than one sample per batch to compute a variance (PyTorch: "
            f"'Expected more than 1 value per channel when training'), but the batch size "
            f"is {where} (with {n} training samples); use a batch size of at least "
            f"{smallest} (e.g. 32), or remove the BatchNorm layers"
        )


def check_augment(model: Sequential, augment: Augment | None, X: Any) -> None:
    """Let an augmentation that has a ``check(sample_shape)`` method refuse the inputs'
    shape before the first step (RandomShift: a shift that would blank the images)."""
    check = getattr(augment, "check", None)
    if callable(check):
        check(tuple(X.shape[1:]))


def smallest_batch(model: Sequential, sample: tuple[int, ...], comm: Communicator) -> int:
    """The fewest samples a training step may have for samples of shape ``sample``: 2 per
    process when a BatchNorm layer sees one value per channel per sample (features, or 1x1
    images), else 1."""
    shapes = model.shapes_from(sample)
    single = any(isinstance(layer, BatchNorm) and math.prod(shapes[i][1:]) == 1
                 for i, layer in enumerate(model.layers))
    return 2 * comm.size if single else 1
