"""Split-batch steps: one training step as two half-batches on two threads, for CPU backends.

NumPy runs every elementwise operation (the im2col copies, pooling, col2im, activations) on one
core, and most of a convolutional step is such work. Its loops release the GIL, so two threads
can each run one half of the batch through the network at once: the model on the first half in
the calling thread, a *replica* on the second half in a worker thread. The replica is a shallow
copy of the model whose layers share the model's ``params`` (the same dicts, so every update is
seen at once) and keep their own ``grads`` and cached activations. Each half back-propagates its
share of the whole batch's mean loss (its loss gradient weighted by its share of the rows), so
the model's gradients are the two halves' added, and the optimizer steps once, its flat update
split in two halves of the parameters on the same two threads (:meth:`SplitStep.halves`). The
matrix products run on one BLAS thread each meanwhile (through threadpoolctl), so
the two halves do not fight over the cores.

BatchNorm takes its statistics over the whole batch as before: the two copies of each BatchNorm
layer hand each other their partial sums (forward: the sums of the values and of their squared
deviations from the half's own mean; backward: the two sums dx needs), once each way, through a
two-thread barrier, which a failure in either half breaks, so the other raises instead of
waiting. Only the model's copy updates the running statistics.

What changes against one thread: the order of floating-point sums (results agree to rounding),
and Dropout in the second half draws from a mask stream of its own (masks equal in
distribution).

``fit(threads=None)`` splits where it pays (:func:`split_pays`): a backend whose seam row has
the ``split_batch`` capability (NumPy), at least two cores, a model with a convolution, one
process, batches of at least :data:`MIN_ROWS` rows, and threadpoolctl installed. Measured on 2
vCPUs, ``cnn-fast``: 5.2-5.6 s -> 3.9 s per epoch of 30,720 images. ``evaluate`` and
``predict`` split their batches the same way (:meth:`SplitStep.forward`).
"""

from __future__ import annotations

import contextlib
import copy
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

from portanet.layers.folding import fold_batchnorm
from portanet.random_streams import half_dropout_stream

MIN_ROWS = 64
"""The smallest batch split in two (32 rows a half): below it the threads' overhead wins."""


def _blas_controller() -> Any:
    """threadpoolctl's controller of the BLAS libraries loaded here (NumPy's among them), or
    None without threadpoolctl or without a BLAS it can hold to one thread."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    blas = ThreadpoolController().select(user_api="blas")
    return blas if blas.lib_controllers else None


def split_pays(model: Any, batch: int, processes: int) -> bool:
    """Whether ``fit(threads=None)`` splits the steps of ``model`` on batches of ``batch``
    rows, and ``evaluate``/``predict`` their batches (see the module docstring)."""
    from portanet.layers import Conv2D

    return (model.backend.capabilities.split_batch and (os.cpu_count() or 1) >= 2
            and processes == 1 and batch >= MIN_ROWS
            and any(isinstance(layer, Conv2D) for layer in model.layers)
            and _blas_controller() is not None)


def split_step(model: Any, threads: int | None, batch: int, processes: int) -> SplitStep | None:
    """The split-batch step ``fit(threads=...)`` asks for: None for 1, a :class:`SplitStep`
    for 2, and for None one where :func:`split_pays`. Raises ValueError for other values, and
    for 2 under MPI (``processes`` > 1)."""
    if threads is None:
        return SplitStep(model) if split_pays(model, batch, processes) else None
    if not isinstance(threads, int) or isinstance(threads, bool) or threads not in (1, 2):
        raise ValueError(f"threads must be 1, 2 or None (split where it pays), got {threads!r}")
    if threads == 1:
        return None
    if processes > 1:
        raise ValueError("threads=2 splits steps within one process; under MPI each rank "
                         "runs one thread (use threads=1 or None)")
    return SplitStep(model)


@contextlib.contextmanager
def inference_forward(model: Any, batch: int) -> Iterator[Callable[[Any], Any]]:
    """The forward pass ``evaluate`` and ``predict`` call per batch, in evaluation mode: the
    model's with its BatchNorm layers folded into the layers before them
    (:func:`portanet.layers.folding.fold_batchnorm`), and where :func:`split_pays` run as two halves
    on two threads."""
    model = fold_batchnorm(model)
    if not split_pays(model, batch, 1):
        yield model.forward_unchecked
        return
    with SplitStep(model) as step:
        yield lambda xb: (step.forward(xb) if xb.shape[0] >= MIN_ROWS
                          else model.forward_unchecked(xb))


class SplitStep:
    """Forward and backward of one batch as two halves on two threads (see the module).

    Use as a context manager around the training loop; it owns the worker thread."""

    def __init__(self, model: Any) -> None:
        from portanet.layers import BatchNorm

        self.model = model
        self.replica = copy.copy(model)
        self.replica.layers = [copy.copy(layer) for layer in model.layers]
        self._exchange = _Exchange()
        self._first_half_gather = self._exchange.half(0)
        self._batch_norms = []
        for i, (layer, twin) in enumerate(zip(model.layers, self.replica.layers, strict=True)):
            twin.grads = {}
            if getattr(twin, "_mask_rank", None) is not None:  # Dropout: a stream of its own
                twin.backend = half_dropout_stream(model, i)
            if isinstance(layer, BatchNorm):
                twin.gather, twin.updates_running = self._exchange.half(1), False
                self._batch_norms.append(layer)
        self._blas = _blas_controller()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="portanet-half")

    def __enter__(self) -> SplitStep:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._worker.shutdown(wait=True)

    def forward(self, xb: Any) -> Any:
        """The model's outputs for the batch ``xb``, in evaluation mode (``evaluate``,
        ``predict``): each half through its own copy of the layers, on its own thread."""
        first, second = self._both_halves(lambda net, rows: net.forward_unchecked(xb[rows, ...]),
                                          int(xb.shape[0]))
        return self.model.xp.concat([first, second], axis=0)

    def forward_backward(self, loss: Any, xb: Any, tb: Any) -> Any:
        """Fill the model's ``grads`` for the batch ``(xb, tb)``; return its logits."""
        n = int(xb.shape[0])

        def half(net: Any, rows: slice) -> Any:
            logits = net.forward_unchecked(xb[rows, ...])
            share = (rows.stop - rows.start) / n  # of the whole batch's mean loss
            net.backward(loss.gradient(logits, tb[rows, ...]) * share, need_input_grad=False)
            return logits

        first, second = self._both_halves(half, n)
        for layer, twin in zip(self.model.layers, self.replica.layers, strict=True):
            for key, g in layer.grads.items():
                layer.grads[key] = g + twin.grads[key]
        return self.model.xp.concat([first, second], axis=0)

    def halves(self, work: Callable[[int], Any]) -> None:
        """``work(0)`` here and ``work(1)`` in the worker at once (the optimizer's update of
        two halves of the parameters); returns when both have finished, raising an error of
        either (the first half's first)."""
        second = self._worker.submit(work, 1)
        try:
            work(0)
        finally:
            wait([second])
        second.result()

    def _both_halves(self, work: Callable[[Any, slice], Any], n: int) -> tuple[Any, Any]:
        """``work(model, rows)`` on the first half of ``n`` rows here and ``work(replica,
        rows)`` on the second in the worker, BLAS held to one thread each and the BatchNorm
        layers' sums exchanged meanwhile; the worker has finished when this returns or raises,
        and an error in either half is raised (the other's broken barrier is not)."""
        half = n // 2
        for layer, twin in zip(self.model.layers, self.replica.layers, strict=True):
            twin.training = layer.training
        for layer in self._batch_norms:
            layer.gather = self._first_half_gather
        self._exchange.reset()
        limit = self._blas.limit(limits=1, user_api="blas") if self._blas is not None else None
        try:
            guarded = self._exchange.breaking(work)
            second = self._worker.submit(guarded, self.replica, slice(half, n))
            try:
                first = guarded(self.model, slice(0, half))
            except threading.BrokenBarrierError:  # the worker's half failed: raise its error
                raise second.exception() or RuntimeError("BatchNorm sums not exchanged") from None
            finally:
                wait([second])
            return first, second.result()
        finally:
            for layer in self._batch_norms:
                layer.gather = None
            if limit is not None:
                limit.restore_original_limits()


class _Exchange:
    """The meeting point of the two halves' BatchNorm layers: each hands in its per-feature
    sums and row count, waits for the other's, and both get both parts, in slot order."""

    def __init__(self) -> None:
        self._parts: list[Any] = [None, None]
        self._both: list[Any] = []
        self._barrier = threading.Barrier(2, action=self._collect)

    def _collect(self) -> None:
        self._both = list(self._parts)  # a new list: the next exchange leaves this one alone

    def half(self, slot: int) -> Callable[[tuple[Any, ...], int], list[Any]]:
        """The ``gather`` function of the half in ``slot`` (0 or 1)."""

        def gather(sums: tuple[Any, ...], rows: int) -> list[Any]:
            self._parts[slot] = (sums, rows)
            self._barrier.wait()
            return self._both  # the next list is only made once both halves are back

        return gather

    def breaking(self, work: Callable[..., Any]) -> Callable[..., Any]:
        """``work`` that breaks the barrier when it fails, so the other half stops waiting."""

        def guarded(*args: Any) -> Any:
            try:
                return work(*args)
            except BaseException:
                self._barrier.abort()
                raise

        return guarded

    def reset(self) -> None:
        """Mend the barrier a failed step broke."""
        if self._barrier.broken:
            self._barrier.reset()
