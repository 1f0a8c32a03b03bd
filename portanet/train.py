"""Training and inference loops: ``fit``, ``evaluate``, ``predict``, ``predict_proba``.

Inputs are checked once, at the boundary (shape, dtype, NaN, label range), then copied to the
model's device once. Inside an epoch nothing is read back to the host: loss and accuracy are
accumulated as device arrays and read once per epoch (or when a callback asks for them).
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import numpy as np

from portanet.backend import Backend
from portanet.layers import Softmax, softmax
from portanet.losses import LOSSES, ONE_HOT_FORMS, l2_penalty, one_hot, softmax_cross_entropy
from portanet.model import Sequential
from portanet.optim import SGD, Optimizer, Schedule

LossFn = Callable[[Any, Any], tuple[Any, Any]]


@dataclass
class History:
    """Per-epoch figures of a :func:`fit` run (validation lists stay empty without val data)."""

    loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    samples_per_second: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    interrupted: bool = False

    @property
    def epochs(self) -> int:
        """Number of epochs run (an interrupted epoch counts)."""
        return len(self.loss)

    def as_dict(self) -> dict[str, Any]:
        """The history as a JSON-serialisable dict."""
        return asdict(self)


class Callback:
    """Hooks called by :func:`fit`. Override what you need; all default to doing nothing."""

    def on_epoch_begin(self, epoch: int, epochs: int, num_batches: int) -> None:
        """Before the first batch of ``epoch`` (0-based)."""

    def on_batch_end(self, batch: int, running: Callable[[], tuple[float, float]]) -> None:
        """After each step. ``running()`` returns (mean loss, accuracy) so far in this epoch;
        calling it reads the device, so call it only now and then (e.g. to redraw a bar)."""

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        """After each epoch, with that epoch's loss, accuracy, val figures, seconds and lr."""


class PrintEpochs(Callback):
    """Prints one line per epoch (what ``fit(..., verbose=True)`` uses)."""

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        line = f"epoch {epoch + 1}: loss {logs['loss']:.4f}  accuracy {logs['accuracy']:.4f}"
        if "val_accuracy" in logs:
            line += f"  val_loss {logs['val_loss']:.4f}  val_accuracy {logs['val_accuracy']:.4f}"
        line += f"  {logs['seconds']:.2f}s  {logs['samples_per_second']:,.0f} samples/s"
        print(line, flush=True)


# --- the boundary: checks and the single host-to-device copy --------------------------------


def _host_or_device(backend: Backend, array: Any, what: str) -> tuple[Any, bool]:
    """``array`` and whether it is already on ``backend``; host data (NumPy, lists) is accepted
    as NumPy, arrays of another backend raise a ValueError naming ``what``."""
    if isinstance(array, (list, tuple)):
        array = np.asarray(array)
    on_device = backend.owns(array)
    if not on_device and not isinstance(array, np.ndarray):
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
            f"images to [0, 1] first, e.g. portanet.datasets.to_device(images, labels, backend) "
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
    if not bool(xp.all(xp.isfinite(X))):
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
    y = y if on_device else backend.asarray(y)
    y = y if y.dtype == xp.int64 else xp.astype(y, xp.int64)
    classes = model.num_outputs
    low, high = int(xp.min(y)), int(xp.max(y))
    if low < 0 or (classes is not None and high >= classes):
        bound = f"[0, {classes})" if classes is not None else "non-negative"
        raise ValueError(
            f"{what} holds labels from {low} to {high}, but the model has {classes} outputs, so "
            f"labels must be in {bound}; check the labels or widen the model's last layer"
        )
    return y


def _resolve_loss(model: Sequential, loss: LossFn | str) -> LossFn:
    if isinstance(loss, str):
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
        loss = LOSSES[loss]
    if isinstance(model.layers[-1], Softmax) and loss in LOSSES.values():
        raise ValueError(
            "the model ends in a Softmax layer, but portanet's losses take logits and apply "
            "softmax themselves; remove the last Softmax layer (predict_proba still gives "
            "probabilities)"
        )
    return loss


def _batches(batch_size: int | None, n: int) -> int:
    if batch_size is None:
        return n
    if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) \
            or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    return min(int(batch_size), n)


class _StopOnInterrupt:
    """While active, the first Ctrl-C asks the loop to stop after the current step; a second
    Ctrl-C interrupts at once. Only in the main thread (signals can't be caught elsewhere)."""

    def __init__(self, enabled: bool) -> None:
        self.requested = False
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self._previous: Any = None

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, self._previous)

    def __enter__(self) -> _StopOnInterrupt:
        if self.enabled:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled and not self.requested:
            signal.signal(signal.SIGINT, self._previous)


# --- training ----------------------------------------------------------------------------------


def fit(
    model: Sequential,
    X: Any,
    y: Any,
    *,
    loss: LossFn | str = softmax_cross_entropy,
    optimizer: Optimizer | None = None,
    epochs: int = 1,
    batch_size: int | None = 32,
    shuffle: bool = True,
    validation_data: tuple[Any, Any] | None = None,
    l2: float = 0.0,
    lr_schedule: Schedule | None = None,
    callbacks: Sequence[Callback] = (),
    verbose: bool = False,
    stop_on_interrupt: bool = True,
    augment: Callable[[Any, Backend], Any] | None = None,
) -> History:
    """Train ``model`` on ``(X, y)`` and return the per-epoch :class:`History`.

    Args:
        model: the model to train (updated in place).
        X: inputs, host NumPy or arrays of the model's backend, floats (e.g. pixels / 255).
        y: integer class labels of shape (samples,).
        loss: a loss function ``(logits, labels) -> (loss, dlogits)`` or its name.
        optimizer: default ``SGD(lr=0.01)``.
        epochs: passes over the data.
        batch_size: samples per step; ``None`` is full-batch gradient descent, 1 per-sample SGD.
        shuffle: reshuffle the samples every epoch (from the model's seeded generator).
        validation_data: optional ``(X_val, y_val)``, evaluated after every epoch.
        l2: adds ``0.5 * l2 * sum(W^2)`` over weight matrices to the loss.
        lr_schedule: ``schedule(epoch, epochs) -> lr``, applied before each epoch.
        callbacks: :class:`Callback` objects (progress bars, logging).
        verbose: print one line per epoch.
        stop_on_interrupt: the first Ctrl-C ends training after the current step (the history
            is marked ``interrupted``) instead of raising KeyboardInterrupt.
        augment: ``augment(batch, backend) -> batch`` applied to each training batch on the
            device, e.g. :class:`portanet.augment.RandomShift`; off by default.
    """
    if not isinstance(epochs, (int, np.integer)) or epochs < 0:
        raise ValueError(f"epochs must be a non-negative integer, got {epochs!r}")
    loss_fn = _resolve_loss(model, loss)
    optimizer = SGD(lr=0.01) if optimizer is None else optimizer
    X = prepare_inputs(model, X, "X")
    y = prepare_labels(model, y, X.shape[0], "y")
    if validation_data is not None:
        X_val = prepare_inputs(model, validation_data[0], "validation X")
        y_val = prepare_labels(model, validation_data[1], X_val.shape[0], "validation y")
    n = X.shape[0]
    batch = _batches(batch_size, n)
    num_batches = -(-n // batch)
    backend, xp = model.backend, model.backend.xp
    callbacks = list(callbacks) + ([PrintEpochs()] if verbose else [])
    batch_callbacks = [cb for cb in callbacks
                       if type(cb).on_batch_end is not Callback.on_batch_end]
    history = History()
    l2 = float(l2)
    onehot_loss = ONE_HOT_FORMS.get(loss_fn)
    if model.num_outputs is None:
        onehot_loss = None
    targets = None if onehot_loss is None else one_hot(xp, y, model.num_outputs, backend.dtype)

    with _StopOnInterrupt(stop_on_interrupt) as stop:
        for epoch in range(epochs):
            if lr_schedule is not None:
                optimizer.lr = float(lr_schedule(epoch, epochs))
            for cb in callbacks:
                cb.on_epoch_begin(epoch, epochs, num_batches)
            start = time.perf_counter()
            model.train()
            X_epoch, y_epoch, t_epoch = X, y, targets
            if shuffle and batch < n:
                order = backend.asarray(backend.rng.permutation(n))
                X_epoch, y_epoch = xp.take(X, order, axis=0), xp.take(y, order, axis=0)
                if targets is not None:
                    t_epoch = xp.take(targets, order, axis=0)
            # Per-step results stay on the device and are reduced once per epoch.
            losses: list[Any] = []
            outputs: list[Any] = []
            seen = 0
            for b in range(num_batches):
                lo, hi = b * batch, min((b + 1) * batch, n)
                xb, yb = X_epoch[lo:hi, ...], y_epoch[lo:hi]
                xb = xb if augment is None else augment(xb, backend)
                logits = model._forward(xb)
                if onehot_loss is None:
                    value, dlogits = loss_fn(logits, yb)
                else:
                    value, dlogits = onehot_loss(xp, logits, t_epoch[lo:hi, ...])
                model.backward(dlogits, need_input_grad=False)
                if l2:
                    value = value + l2_penalty(model, l2)
                optimizer.step(model)
                seen = hi
                losses.append(value)
                outputs.append(logits)
                if batch_callbacks:
                    running = partial(_epoch_figures, xp, losses, outputs, y_epoch, batch, b + 1)
                    for cb in batch_callbacks:
                        cb.on_batch_end(b, running)
                if stop.requested:
                    break
            mean_loss, accuracy = _epoch_figures(xp, losses, outputs, y_epoch, batch)
            logs = {"loss": mean_loss, "accuracy": accuracy}
            if validation_data is not None:
                logs["val_loss"], logs["val_accuracy"] = _evaluate(model, X_val, y_val, loss_fn)
            seconds = time.perf_counter() - start
            logs.update(seconds=seconds, samples_per_second=seen / seconds, lr=optimizer.lr)
            _record(history, logs)
            for cb in callbacks:
                cb.on_epoch_end(epoch, logs)
            if stop.requested:
                history.interrupted = True
                break
    model.eval()
    return history


def _epoch_figures(
    xp: Any, losses: list[Any], outputs: list[Any], labels: Any, batch: int, steps: int = 0
) -> tuple[float, float]:
    """Mean loss and accuracy over the first ``steps`` steps (all if 0), reading the device once.

    ``losses`` holds each step's mean loss (every batch has ``batch`` samples but the last)
    and ``outputs`` each step's logits, in the order of ``labels``.
    """
    if steps:
        losses, outputs = losses[:steps], outputs[:steps]
    logits = outputs[0] if len(outputs) == 1 else xp.concat(outputs, axis=0)
    seen = logits.shape[0]
    last = seen - batch * (len(losses) - 1)
    total = xp.sum(xp.stack(losses[:-1])) * float(batch) if len(losses) > 1 else 0.0
    total = total + losses[-1] * float(last)
    correct = xp.count_nonzero(xp.argmax(logits, axis=1) == labels[:seen])
    return float(total) / seen, int(correct) / seen


def _record(history: History, logs: dict[str, float]) -> None:
    for key, value in logs.items():
        getattr(history, key).append(value)


# --- inference ---------------------------------------------------------------------------------


def _evaluate(
    model: Sequential, X: Any, y: Any, loss_fn: LossFn, batch_size: int = 2048
) -> tuple[float, float]:
    """Mean loss and accuracy over device arrays, read back once."""
    xp = model.xp
    model.eval()
    n = X.shape[0]
    loss_sum = xp.zeros((), dtype=model.backend.dtype, device=model.backend.device)
    correct = xp.zeros((), dtype=xp.int64, device=model.backend.device)
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        xb, yb = X[start:stop, ...], y[start:stop]
        logits = model._forward(xb)
        value, _ = loss_fn(logits, yb)
        loss_sum = loss_sum + value * float(xb.shape[0])
        correct = correct + xp.count_nonzero(xp.argmax(logits, axis=1) == yb)
    return float(loss_sum) / n, int(correct) / n


def evaluate(
    model: Sequential,
    X: Any,
    y: Any,
    *,
    loss: LossFn | str = softmax_cross_entropy,
    batch_size: int = 2048,
) -> dict[str, float]:
    """Mean loss and accuracy of ``model`` on ``(X, y)``: ``{"loss", "accuracy", "samples"}``."""
    loss_fn = _resolve_loss(model, loss)
    X = prepare_inputs(model, X, "X")
    y = prepare_labels(model, y, X.shape[0], "y")
    value, accuracy = _evaluate(model, X, y, loss_fn, _batches(batch_size, X.shape[0]))
    return {"loss": value, "accuracy": accuracy, "samples": int(X.shape[0])}


def _probabilities(model: Sequential, X: Any, batch_size: int) -> Any:
    """Softmax outputs for device input ``X``, in eval mode, batch by batch."""
    xp = model.xp
    model.eval()
    ends_in_softmax = isinstance(model.layers[-1], Softmax)
    parts = []
    for start in range(0, X.shape[0], batch_size):
        out = model._forward(X[start:min(start + batch_size, X.shape[0]), ...])
        parts.append(out if ends_in_softmax else softmax(xp, out))
    return parts[0] if len(parts) == 1 else xp.concat(parts, axis=0)


def _infer(model: Sequential, X: Any, batch_size: int, labels: bool) -> Any:
    host_in = isinstance(X, np.ndarray) and model.backend.name != "numpy"
    X = prepare_inputs(model, X, "X")
    out = _probabilities(model, X, _batches(batch_size, X.shape[0]))
    if labels:
        out = model.xp.argmax(out, axis=1)
    return model.backend.to_numpy(out) if host_in else out


def predict_proba(model: Sequential, X: Any, *, batch_size: int = 2048) -> Any:
    """Class probabilities, shape (samples, classes).

    The result lives where ``X`` lived: host NumPy for host input, the model's arrays otherwise.
    """
    return _infer(model, X, batch_size, labels=False)


def predict(model: Sequential, X: Any, *, batch_size: int = 2048) -> Any:
    """Predicted class indices, shape (samples,), living where ``X`` lived."""
    return _infer(model, X, batch_size, labels=True)
