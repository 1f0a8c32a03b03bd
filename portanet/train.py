"""Training and inference loops: ``fit``, ``evaluate``, ``predict``, ``predict_proba``.

Inputs are checked once, at the boundary (shape, dtype, NaN, label range), then copied to the
model's device once and stay there. Each step gathers its batch from the resident data by index
(one permutation per epoch, no shuffled copy of the data set). A step computes only the loss's
gradient; each step's logits stay on the device, and the epoch's loss and accuracy are computed
from them and read back once per epoch (or when a callback asks). An epoch whose loss is not
finite ends training with a :class:`DivergedError`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from portanet.backend import Backend, on_model_device
from portanet.callbacks import Callback, DivergedError, History, PrintEpochs, StopOnInterrupt
from portanet.distributed import Communicator
from portanet.inputs import prepare_inputs, prepare_labels
from portanet.layers import Softmax, softmax
from portanet.losses import Loss, as_loss, l2_penalty, softmax_cross_entropy
from portanet.model import Sequential
from portanet.optim import Optimizer, Schedule, get_optimizer

LossFn = Callable[[Any, Any], tuple[Any, Any]]
Augment = Callable[[Any, Backend], Any]

__all__ = ["Callback", "DivergedError", "History", "PrintEpochs", "evaluate", "fit", "predict",
           "predict_proba", "prepare_inputs", "prepare_labels"]


# --- what fit is given: checked once, before the first step --------------------------------


def _resolve_loss(model: Sequential, loss: Loss | LossFn | str) -> Loss:
    loss = as_loss(loss)
    if isinstance(model.layers[-1], Softmax) and loss.takes_logits:
        raise ValueError(
            "the model ends in a Softmax layer, but portanet's losses take logits and apply "
            "softmax themselves; remove the last Softmax layer (predict_proba still gives "
            "probabilities)"
        )
    return loss


def _batch_size(batch_size: int | None, n: int) -> int:
    """The number of samples per step: ``batch_size`` capped at ``n``, ``n`` for ``None``."""
    if batch_size is None:
        return n
    if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) \
            or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    return min(int(batch_size), n)


def _check_run(model: Sequential, epochs: Any, l2: Any, callbacks: Any,
               validation_data: Any) -> tuple[float, list[Callback]]:
    """Check fit's arguments that bypass the optimizer; returns ``l2`` and the callbacks."""
    if not isinstance(model, Sequential):
        raise TypeError(f"model must be a portanet.Sequential, got {type(model).__name__}")
    if not model.parameter_slots():
        raise ValueError(f"the model has no parameters to train ({model!r}); add a Dense layer")
    if not isinstance(epochs, (int, np.integer)) or isinstance(epochs, bool) or epochs < 0:
        raise ValueError(f"epochs must be a non-negative integer, got {epochs!r}")
    try:
        l2 = float(l2)
    except (TypeError, ValueError):
        raise ValueError(f"l2 must be a number >= 0, got {l2!r}") from None
    if not (math.isfinite(l2) and l2 >= 0.0):
        raise ValueError(f"l2 must be a finite number >= 0 (e.g. 1e-4), got {l2!r}")
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


def _scheduled_lr(schedule: Schedule, epoch: int, epochs: int) -> float:
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


@dataclass
class _Data:
    """A training set on the device: inputs, labels, and the loss's prepared labels."""

    X: Any
    y: Any
    prepared: Any

    @property
    def n(self) -> int:
        return int(self.X.shape[0])


@dataclass
class _Run:
    """What every step of one :func:`fit` call uses, checked once."""

    loss: Loss
    optimizer: Optimizer
    data: _Data
    batch: int
    l2: float
    augment: Augment | None
    comm: Communicator | None


# --- training ----------------------------------------------------------------------------------


@on_model_device
def fit(
    model: Sequential,
    X: Any,
    y: Any,
    *,
    loss: Loss | LossFn | str = softmax_cross_entropy,
    optimizer: Optimizer | str | None = None,
    epochs: int = 1,
    batch_size: int | None = 32,
    shuffle: bool = True,
    validation_data: tuple[Any, Any] | None = None,
    l2: float = 0.0,
    lr_schedule: Schedule | None = None,
    callbacks: Sequence[Callback] = (),
    verbose: bool = False,
    stop_on_interrupt: bool = True,
    comm: Communicator | None = None,
    augment: Augment | None = None,
) -> History:
    """Train ``model`` on ``(X, y)`` and return the per-epoch :class:`History`.

    Args:
        model: the model to train (updated in place).
        X: inputs, host NumPy or arrays of the model's backend, floats (e.g. pixels / 255).
        y: integer class labels of shape (samples,).
        loss: a :class:`~portanet.losses.Loss`, its name, or a function
            ``(logits, labels) -> (loss, dlogits)``.
        optimizer: an :class:`~portanet.optim.Optimizer` or a name (``"adam"``); default
            ``SGD(lr=0.01)``.
        epochs: passes over the data.
        batch_size: samples per step; ``None`` is full-batch gradient descent, 1 per-sample SGD.
        shuffle: reshuffle the samples every epoch (from the model's seeded generator).
        validation_data: optional ``(X_val, y_val)``, evaluated after every epoch.
        l2: adds ``0.5 * l2 * sum(W^2)`` over the weights to the loss: its gradient term every
            step (as the optimizer's weight decay), its value once per epoch for the history.
        lr_schedule: ``schedule(epoch, epochs) -> lr``, applied before each epoch.
        callbacks: :class:`Callback` objects (progress bars, logging).
        verbose: print one line per epoch.
        stop_on_interrupt: the first Ctrl-C ends training after the current step (the history
            is marked ``interrupted``) instead of raising KeyboardInterrupt. Under MPI
            (``comm``) a Ctrl-C stops at once: ranks could not agree on the step to stop after.
        comm: train data-parallel over MPI ranks, e.g. ``portanet.distributed.world()``:
            ``batch_size`` is then the global batch (see :mod:`portanet.distributed`).
        augment: ``augment(batch, backend) -> batch`` applied to each training batch on the
            device, e.g. :class:`portanet.augment.RandomShift`; off by default.

    Raises:
        DivergedError: at the end of the first epoch whose loss is not finite.
    """
    l2, callbacks = _check_run(model, epochs, l2, callbacks, validation_data)
    loss_obj = _resolve_loss(model, loss)
    optimizer = get_optimizer(optimizer)
    data = _prepare_data(model, loss_obj, X, y)
    if validation_data is not None:
        X_val = prepare_inputs(model, validation_data[0], "validation X")
        y_val = prepare_labels(model, validation_data[1], X_val.shape[0], "validation y")
    batch = _batch_size(batch_size, data.n)
    callbacks += [PrintEpochs()] if verbose else []
    if comm is not None:  # the same model and plan on every rank; callbacks on rank 0 only
        callbacks = comm.begin(model, data.y, batch, epochs, callbacks)
    run = _Run(loss_obj, optimizer, data, batch, l2, augment, comm)
    history = History()
    with StopOnInterrupt(stop_on_interrupt and comm is None) as stop:
        for epoch in range(epochs):
            if lr_schedule is not None:
                optimizer.lr = _scheduled_lr(lr_schedule, epoch, epochs)
            for cb in callbacks:
                cb.on_epoch_begin(epoch, epochs, -(-data.n // batch))
            start = time.perf_counter()
            order = _shuffled_order(model, data.n) if shuffle and batch < data.n else None
            outputs = _run_epoch(model, run, order, callbacks, stop)
            logs = _epoch_logs(model, run, order, outputs)
            if validation_data is not None:
                logs["val_loss"], logs["val_accuracy"] = _evaluate(model, X_val, y_val, loss_obj)
            seconds = time.perf_counter() - start
            seen = min(len(outputs) * batch, data.n)
            logs.update(seconds=seconds, samples_per_second=seen / seconds, lr=optimizer.lr)
            _record(history, logs)
            for cb in callbacks:
                cb.on_epoch_end(epoch, logs)
            if not math.isfinite(logs["loss"]):
                model.eval()
                raise DivergedError(epoch + 1, epochs, optimizer.lr, logs["loss"], history)
            if stop.requested:
                history.interrupted = True
                break
    model.eval()
    if history.epochs and not _weights_finite(model):
        raise DivergedError(history.epochs, epochs, optimizer.lr, math.nan, history)
    return history


def _prepare_data(model: Sequential, loss: Loss, X: Any, y: Any) -> _Data:
    """Check and copy the training set to the device once; prepare the loss's labels once."""
    X = prepare_inputs(model, X, "X")
    y = prepare_labels(model, y, X.shape[0], "y")
    classes = model.num_outputs
    prepared = y if classes is None else loss.prepare(y, classes, model.backend.dtype)
    return _Data(X, y, prepared)


def _shuffled_order(model: Sequential, n: int) -> Any:
    """This epoch's order: a permutation drawn on the host, copied to the device once."""
    return model.backend.asarray(model.backend.rng.permutation(n))


def _run_epoch(model: Sequential, run: _Run, order: Any, callbacks: list[Callback],
               stop: StopOnInterrupt) -> list[Any]:
    """One pass over the data; returns each step's logits (device arrays, for the figures).
    Under MPI each rank steps on its share of every global batch."""
    model.train()
    xp, data, comm = model.xp, run.data, run.comm
    batch_callbacks = [cb for cb in callbacks if type(cb).on_batch_end is not Callback.on_batch_end]
    figures = _figures if comm is None else comm.local_figures
    outputs: list[Any] = []
    for b, lo in enumerate(range(0, data.n, run.batch)):
        hi = min(lo + run.batch, data.n)
        if comm is not None:
            lo, hi = comm.shard(lo, hi)
        if order is None:
            xb, tb = data.X[lo:hi, ...], data.prepared[lo:hi, ...]
        else:
            idx = order[lo:hi]
            xb, tb = xp.take(data.X, idx, axis=0), xp.take(data.prepared, idx, axis=0)
        outputs.append(_step(model, run, xb, tb))
        if batch_callbacks:
            running = partial(figures, xp, run.loss, data, order, outputs)
            for cb in batch_callbacks:
                cb.on_batch_end(b, running)
        if stop.requested:
            break
    return outputs


def _step(model: Sequential, run: _Run, xb: Any, tb: Any) -> Any:
    """Augment, forward, loss gradient, backward, (under MPI) average the gradients over the
    ranks, update: one step on a batch and its prepared labels. Returns the logits (the loss
    value is computed from them once per epoch)."""
    if run.augment is not None:
        xb = run.augment(xb, model.backend)
    logits = model.forward_unchecked(xb)
    model.backward(run.loss.gradient(logits, tb), need_input_grad=False)
    if run.comm is not None:
        run.comm.average_gradients(model)
    run.optimizer.step(model, l2=run.l2)
    return logits


def _epoch_logs(model: Sequential, run: _Run, order: Any, outputs: list[Any]) -> dict[str, float]:
    """The epoch's loss (plus the L2 penalty, computed here once) and accuracy; under MPI
    over every rank's samples, with one reduction."""
    figures = _figures if run.comm is None else run.comm.epoch_figures
    mean_loss, accuracy = figures(model.xp, run.loss, run.data, order, outputs)
    if run.l2:
        mean_loss += float(l2_penalty(model, run.l2))
    return {"loss": mean_loss, "accuracy": accuracy}


def _figures(xp: Any, loss: Loss, data: _Data, order: Any,
             outputs: list[Any]) -> tuple[float, float]:
    """Mean loss and accuracy over the epoch's steps so far, from the logits they produced:
    one batched loss over all of them (the mean of per-sample losses), then one read."""
    logits = outputs[0] if len(outputs) == 1 else xp.concat(outputs, axis=0)
    seen = logits.shape[0]
    if order is None:
        labels, prepared = data.y[:seen], data.prepared[:seen, ...]
    else:
        idx = order[:seen]
        labels, prepared = xp.take(data.y, idx, axis=0), xp.take(data.prepared, idx, axis=0)
    value = loss.loss(logits, prepared)[0]
    correct = xp.count_nonzero(xp.argmax(logits, axis=1) == labels)
    return float(value), int(correct) / seen


def _weights_finite(model: Sequential) -> bool:
    """True when every parameter is finite: one flag per parameter on the device, then one read
    to the host for the whole model, once per run at the end of fit."""
    xp = model.xp
    flags = [xp.all(xp.isfinite(p)) for _, p, _ in model.named_parameters()]
    return not flags or bool(xp.all(xp.stack(flags)))


def _record(history: History, logs: dict[str, float]) -> None:
    for key, value in logs.items():
        getattr(history, key).append(value)


# --- inference ---------------------------------------------------------------------------------


def _evaluate(
    model: Sequential, X: Any, y: Any, loss: Loss, batch_size: int = 2048
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
        logits = model.forward_unchecked(xb)
        value, _ = loss(logits, yb)
        loss_sum = loss_sum + value * float(xb.shape[0])
        correct = correct + xp.count_nonzero(xp.argmax(logits, axis=1) == yb)
    return float(loss_sum) / n, int(correct) / n


@on_model_device
def evaluate(
    model: Sequential,
    X: Any,
    y: Any,
    *,
    loss: Loss | LossFn | str = softmax_cross_entropy,
    batch_size: int = 2048,
) -> dict[str, float]:
    """Mean loss and accuracy of ``model`` on ``(X, y)``: ``{"loss", "accuracy", "samples"}``."""
    loss_obj = _resolve_loss(model, loss)
    X = prepare_inputs(model, X, "X")
    y = prepare_labels(model, y, X.shape[0], "y")
    value, accuracy = _evaluate(model, X, y, loss_obj, _batch_size(batch_size, X.shape[0]))
    return {"loss": value, "accuracy": accuracy, "samples": int(X.shape[0])}


def _probabilities(model: Sequential, X: Any, batch_size: int) -> Any:
    """Softmax outputs for device input ``X``, in eval mode, batch by batch."""
    xp = model.xp
    model.eval()
    ends_in_softmax = isinstance(model.layers[-1], Softmax)
    parts = []
    for start in range(0, X.shape[0], batch_size):
        out = model.forward_unchecked(X[start:min(start + batch_size, X.shape[0]), ...])
        parts.append(out if ends_in_softmax else softmax(xp, out))
    return parts[0] if len(parts) == 1 else xp.concat(parts, axis=0)


def _infer(model: Sequential, X: Any, batch_size: int, labels: bool) -> Any:
    host_in = isinstance(X, np.ndarray) and model.backend.name != "numpy"
    X = prepare_inputs(model, X, "X")
    out = _probabilities(model, X, _batch_size(batch_size, X.shape[0]))
    if labels:
        out = model.xp.argmax(out, axis=1)
    return model.backend.to_numpy(out) if host_in else out


@on_model_device
def predict_proba(model: Sequential, X: Any, *, batch_size: int = 2048) -> Any:
    """Class probabilities, shape (samples, classes).

    The result lives where ``X`` lived: host NumPy for host input, the model's arrays otherwise.
    """
    return _infer(model, X, batch_size, labels=False)


@on_model_device
def predict(model: Sequential, X: Any, *, batch_size: int = 2048) -> Any:
    """Predicted class indices, shape (samples,), living where ``X`` lived."""
    return _infer(model, X, batch_size, labels=True)
