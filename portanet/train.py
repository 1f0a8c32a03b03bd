"""The training loop: ``fit`` (``evaluate``, ``predict`` and ``predict_proba`` live in
:mod:`portanet.inference` and are re-exported here).

Inputs are checked once, at the boundary (shape, dtype, NaN, label range), then copied to the
model's device once and stay there. Each step gathers its batch from the resident data by index
(one permutation per epoch, no shuffled copy of the data set). A step computes only the loss's
gradient; each step's logits stay on the device, and the epoch's loss and accuracy are computed
from them and read back once per epoch (or when a callback asks). An epoch whose loss is not
finite ends training with a :class:`DivergedError`; so does a validation loss that is not
finite, and, once training ends, weights or outputs (on the last training batch, in evaluation
mode) that are not finite: a model is finished only when what it computes is finite. These
checks ride on reads that happen anyway (one per epoch, one at the end), never one per step.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from portanet.backend import Backend, on_model_device
from portanet.callbacks import Callback, DivergedError, History, PrintEpochs, StopOnInterrupt
from portanet.finite import all_finite, finite_flags, listed, weights_not_finite
from portanet.inference import (
    LossFn,
    evaluate,
    loss_and_accuracy,
    predict,
    predict_proba,
    resolve_loss,
    samples_per_batch,
)
from portanet.input_checks import (
    Augment,
    check_augment,
    check_batch_statistics,
    check_fit_arguments,
    prepare_inputs,
    prepare_labels,
    scheduled_lr,
    smallest_batch,
)
from portanet.losses import Loss, l2_penalty, softmax_cross_entropy
from portanet.model import Sequential
from portanet.optim import Optimizer, Schedule, get_optimizer
from portanet.parallel.engine import Engine, check_threads, threads_that_pay
from portanet.parallel.mpi import Communicator, communicator
from portanet.random_streams import augment_stream

Rows = tuple[int, int]

__all__ = ["Callback", "DivergedError", "History", "PrintEpochs", "evaluate", "fit", "predict",
           "predict_proba", "prepare_inputs", "prepare_labels"]


# --- what fit is given: checked once, before the first step --------------------------------


@dataclass
class _TrainingSet:
    """A training set on the device: inputs, labels, and the loss's targets, made from the
    labels once (:meth:`~portanet.losses.Loss.prepare`)."""

    X: Any
    y: Any
    targets: Any

    @property
    def n(self) -> int:
        return int(self.X.shape[0])


@dataclass
class _Run:
    """What every step of one :func:`fit` call uses, checked once."""

    loss: Loss
    optimizer: Optimizer
    data: _TrainingSet
    batch: int
    l2: float
    augment: Augment | None
    comm: Communicator
    augment_backend: Backend
    """Where the augmentation draws: the model's backend in one process; under MPI a copy
    with a generator of this rank's own, so that shards of different sizes never move the
    shuffle generator, which every rank must keep in step."""
    threads: int
    """Workers in this process (see :mod:`portanet.parallel.engine`)."""
    validation: tuple[Any, Any] | None = None
    """``(X_val, y_val)`` on the device, evaluated after every epoch."""
    steps: int = 0
    """Steps per epoch."""
    engine: Engine | None = None
    """The data-parallel engine of the run's steps, made once the ranks agree."""
    last: Any = None
    """The last training batch's inputs (before augmentation): what fit checks the finished
    model's outputs on."""


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
    threads: int | None = None,
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
        comm: train data-parallel over MPI ranks, e.g. ``portanet.parallel.mpi.world()``:
            ``batch_size`` is then the global batch (see :mod:`portanet.parallel.mpi`). Default:
            one process (:class:`~portanet.parallel.mpi.Local`).
        augment: ``augment(batch, backend) -> batch`` applied to each training batch on the
            device, e.g. :class:`portanet.augment.RandomShift`; off by default.
        threads: workers in this process (:mod:`portanet.parallel.engine`): each step's
            batch is shared among this many threads, any positive number (more than the
            cores works, perhaps slower); with ``comm`` the workers are ranks x threads. None
            (default): as many as pay, up to the cores this process may use (NumPy, a
            convolutional model, 32 rows a thread at least, one process), else 1. The results
            agree with one worker up to floating-point rounding (BatchNorm included; Dropout
            masks are each worker's own, equal in distribution).

    Raises:
        DivergedError: at the end of the first epoch whose loss (or validation loss) is not
            finite, or at the end of training when the weights, or the model's outputs on the
            last training batch, are not finite (a step can diverge after the loss is read).
        ValueError: a BatchNorm model given batches of one sample (see
            :func:`check_batch_statistics`).
    """
    l2, callbacks = check_fit_arguments(model, epochs, l2, callbacks, validation_data)
    comm = communicator(comm)
    run = _start(model, X, y, resolve_loss(model, loss), get_optimizer(optimizer), batch_size,
                 validation_data, l2, augment, comm, threads)
    callbacks += [PrintEpochs()] if verbose else []
    # The same model and plan on every rank; callbacks on rank 0 only.
    callbacks = comm.begin(model, run.data.y, run.batch, epochs, callbacks,
                           optimizer=run.optimizer, l2=l2, lr_schedule=lr_schedule)
    history = History()
    with StopOnInterrupt(stop_on_interrupt and comm.size == 1) as stop, \
            Engine(model, run.threads, comm) as run.engine:
        for epoch in range(epochs):
            if lr_schedule is not None:
                run.optimizer.lr = scheduled_lr(lr_schedule, epoch, epochs)
            logs = _epoch(model, run, epoch, epochs, shuffle, callbacks, stop)
            _record(history, logs)
            for cb in callbacks:
                cb.on_epoch_end(epoch, logs)
            _stop_if_diverged(model, run, history, epoch, epochs, logs)
            if stop.requested:
                history.interrupted = True
                break
    model.eval()
    if history.epochs and run.last is not None:
        cause = _finished_cause(model, run)
        if cause is not None:
            raise DivergedError(history.epochs, epochs, run.optimizer.lr, history.loss[-1],
                                history, cause)
    return history


def _start(model: Sequential, X: Any, y: Any, loss: Loss, optimizer: Optimizer,
           batch_size: int | None, validation_data: Any, l2: float, augment: Augment | None,
           comm: Communicator, threads: int | None) -> _Run:
    """The checked inputs, batch plan and step machinery of one :func:`fit` call."""
    data = _training_set(model, loss, X, y)
    validation = None
    if validation_data is not None:
        X_val = prepare_inputs(model, validation_data[0], "validation X")
        validation = (X_val, prepare_labels(model, validation_data[1], X_val.shape[0],
                                            "validation y"))
    batch = samples_per_batch(batch_size, data.n)
    sample = tuple(data.X.shape[1:])
    check_batch_statistics(model, batch, data.n, sample, comm)
    check_augment(model, augment, data.X)
    threads = check_threads(threads)
    if threads is None:
        threads = threads_that_pay(model, batch, comm.size)
    steps = len(_batches(data.n, batch, smallest_batch(model, sample, comm)))
    return _Run(loss, optimizer, data, batch, l2, augment, comm,
                augment_stream(model, comm.rank, comm.size), threads, validation, steps)


def _epoch(model: Sequential, run: _Run, epoch: int, epochs: int, shuffle: bool,
           callbacks: list[Callback], stop: StopOnInterrupt) -> dict[str, float]:
    """One pass over the training set; returns the epoch's logs."""
    for cb in callbacks:
        cb.on_epoch_begin(epoch, epochs, run.steps)
    start = time.perf_counter()
    order = _shuffled_order(model, run.data.n) if shuffle and run.batch < run.data.n else None
    outputs, rows = _run_epoch(model, run, order, callbacks, stop)
    logs = _epoch_logs(model, run, order, outputs, rows)
    if run.validation is not None:
        logs["val_loss"], logs["val_accuracy"] = loss_and_accuracy(model, *run.validation,
                                                                   run.loss)
    seconds = time.perf_counter() - start
    seen = run.data.n if len(outputs) == run.steps else len(outputs) * run.batch
    logs.update(seconds=seconds, samples_per_second=seen / seconds, lr=run.optimizer.lr)
    return logs


def _stop_if_diverged(model: Sequential, run: _Run, history: History, epoch: int, epochs: int,
                      logs: dict[str, float]) -> None:
    """Raise DivergedError when the epoch's loss or validation loss is not finite."""
    for key, what in (("loss", "the loss"), ("val_loss", "the validation loss")):
        if not math.isfinite(logs.get(key, 0.0)):
            model.eval()
            raise DivergedError(epoch + 1, epochs, run.optimizer.lr, logs["loss"], history,
                                _diverged_cause(model, f"{what} is {logs[key]}"))


def _batches(n: int, batch: int, smallest: int = 1) -> list[tuple[int, int]]:
    """The ``(lo, hi)`` ranges of an epoch's steps; a last batch of fewer than ``smallest``
    samples is merged into the one before (BatchNorm models: 2 per process, since one sample
    per channel has no variance)."""
    ranges = [(lo, min(lo + batch, n)) for lo in range(0, n, batch)]
    if len(ranges) > 1 and ranges[-1][1] - ranges[-1][0] < smallest:
        ranges[-2:] = [(ranges[-2][0], n)]
    return ranges


def _training_set(model: Sequential, loss: Loss, X: Any, y: Any) -> _TrainingSet:
    """Check and copy the training set to the device once; make the loss's targets once."""
    X = prepare_inputs(model, X, "X")
    y = prepare_labels(model, y, X.shape[0], "y")
    classes = model.num_outputs
    targets = y if classes is None else loss.prepare(y, classes, model.backend.dtype)
    return _TrainingSet(X, y, targets)


def _shuffled_order(model: Sequential, n: int) -> Any:
    """This epoch's order: a permutation drawn on the host, copied to the device once."""
    return model.backend.asarray(model.backend.rng.permutation(n))


def _run_epoch(model: Sequential, run: _Run, order: Any, callbacks: list[Callback],
               stop: StopOnInterrupt) -> tuple[list[Any], list[Rows]]:
    """One pass over the data; returns each step's logits (device arrays, for the figures) and
    the rows of the data (positions in ``order``) they came from. Under MPI each rank steps on
    its share of every global batch."""
    model.train()
    xp, data, comm = model.xp, run.data, run.comm
    batch_callbacks = [cb for cb in callbacks if type(cb).on_batch_end is not Callback.on_batch_end]
    outputs: list[Any] = []
    rows: list[Rows] = []
    smallest = smallest_batch(model, tuple(data.X.shape[1:]), comm)
    for b, (start, stop_at) in enumerate(_batches(data.n, run.batch, smallest)):
        lo, hi = comm.shard(start, stop_at)
        rows.append((lo, hi))
        if order is None:
            xb, tb = data.X[lo:hi, ...], data.targets[lo:hi, ...]
        else:
            idx = order[lo:hi]
            xb, tb = xp.take(data.X, idx, axis=0), xp.take(data.targets, idx, axis=0)
        run.last = xb
        outputs.append(_step(model, run, xb, tb, share=(hi - lo) / (stop_at - start)))
        if batch_callbacks:  # running figures: this rank's rows, no reduction
            running = partial(_figures, xp, run.loss, data, order, outputs, rows)
            for cb in batch_callbacks:
                cb.on_batch_end(b, running)
        if stop.requested:
            break
    return outputs, rows


def _step(model: Sequential, run: _Run, xb: Any, tb: Any, share: float) -> Any:
    """Augment, forward, loss gradient, backward on the engine's workers (each weighting its
    gradient by its rows' part of the global batch, this process's being ``share``), add the
    ranks' gradients up (under MPI), update: one step on a batch and its targets. Returns the
    logits (the loss value is computed from them once per epoch)."""
    if run.augment is not None:
        xb = run.augment(xb, run.augment_backend)
    logits = run.engine.forward_backward(run.loss, xb, tb, share)
    if run.comm.size > 1:  # each rank's part is weighted already: add them up
        run.comm.average_gradients(model, 1.0)
    run.engine.update(run.optimizer, run.l2)
    return logits


def _epoch_logs(model: Sequential, run: _Run, order: Any, outputs: list[Any],
                rows: list[Rows]) -> dict[str, float]:
    """The epoch's loss (plus the L2 penalty, computed here once) and accuracy, over every
    rank's samples."""
    mean_loss, accuracy = _figures(model.xp, run.loss, run.data, order, outputs, rows, run.comm)
    if run.l2:
        mean_loss += float(l2_penalty(model, run.l2))
    return {"loss": mean_loss, "accuracy": accuracy}


def _figures(xp: Any, loss: Loss, data: _TrainingSet, order: Any, outputs: list[Any],
             rows: list[Rows], comm: Communicator | None = None) -> tuple[float, float]:
    """Mean loss and accuracy over the epoch's steps so far, from the logits they produced: one
    batched loss over all of them (the mean of per-sample losses), then one read. With a
    ``comm`` of several ranks, over every rank's rows (one more small reduction); else over
    this process's ``rows``."""
    logits = outputs[0] if len(outputs) == 1 else xp.concat(outputs, axis=0)
    spans = _joined(rows[:len(outputs)])
    if order is None:
        labels, targets = (_concat(xp, [a[lo:hi, ...] for lo, hi in spans])
                            for a in (data.y, data.targets))
    else:
        idx = _concat(xp, [order[lo:hi] for lo, hi in spans])
        labels, targets = xp.take(data.y, idx, axis=0), xp.take(data.targets, idx, axis=0)
    seen = int(logits.shape[0])
    mean_loss = float(loss.loss(logits, targets)[0])
    correct = int(xp.count_nonzero(xp.argmax(logits, axis=1) == labels))
    if comm is None or comm.size == 1:
        return mean_loss, correct / seen
    totals = comm.allreduce(np.asarray([mean_loss * seen, correct, seen], dtype=np.float64))
    return float(totals[0] / totals[2]), float(totals[1] / totals[2])


def _joined(rows: list[Rows]) -> list[Rows]:
    """``rows`` with touching spans joined: one span for a whole epoch on one process."""
    spans: list[Rows] = []
    for lo, hi in rows:
        if spans and spans[-1][1] == lo:
            spans[-1] = (spans[-1][0], hi)
        else:
            spans.append((lo, hi))
    return spans


def _concat(xp: Any, parts: list[Any]) -> Any:
    return parts[0] if len(parts) == 1 else xp.concat(parts, axis=0)


def _diverged_cause(model: Sequential, what: str) -> str:
    """``what`` (e.g. "the loss is nan"), and whether the weights are still finite."""
    bad = weights_not_finite(model)
    if bad:
        return f"{what}, and {listed(bad)} no longer finite"
    return f"{what}, though the weights are still finite (the outputs overflow)"


def _finished_cause(model: Sequential, run: _Run) -> str | None:
    """Why the trained model is not finished, or None: its weights, or its outputs on the
    last training batch (in evaluation mode, as predict computes them), are not finite. One
    forward pass and one read; under MPI every rank learns the verdict of all (a rank that
    raised alone would leave the others waiting)."""
    xp = model.xp
    arrays = [p for _, p, _ in model.named_parameters()] + [b for _, b in model.named_buffers()]
    caches = [dict(vars(layer)) for layer in model.layers]
    try:
        logits = model.forward_unchecked(run.last)
    finally:  # the check leaves the layers as training left them (the last dropout masks)
        for layer, cache in zip(model.layers, caches, strict=True):
            vars(layer).update(cache)
    flags = xp.stack([xp.all(finite_flags(xp, arrays)), all_finite(xp, logits)])
    bad = 1 - model.backend.to_numpy(flags).astype(np.int64)
    if run.comm.size > 1:
        bad = run.comm.allreduce(bad)
    if bad[0]:
        names = weights_not_finite(model) or ["the weights"]
        return f"the final step made {listed(names)} not finite"
    if bad[1]:
        return ("the weights are finite, but the model's outputs on the last training batch "
                "are not (the last steps made the weights too large)")
    return None


def _record(history: History, logs: dict[str, float]) -> None:
    for key, value in logs.items():
        getattr(history, key).append(value)
