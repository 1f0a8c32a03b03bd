"""Split-batch steps: one training step as two half-batches on two threads, for CPU backends.

NumPy runs every elementwise operation (the im2col copies, pooling, col2im, activations) on one
core, and most of a convolutional step is such work. Its loops release the GIL, so two threads
can each run one half of the batch through the network at once: the model on the first half in
the calling thread, a *replica* on the second half in a worker thread. The replica is a shallow
copy of the model whose layers share the model's ``params`` (the same dicts, so every update is
seen at once) and keep their own ``grads`` and cached activations. After both halves, the
model's gradients become the row-weighted mean of the two, which is the gradient of the whole
batch's mean loss, and the optimizer steps once, in the calling thread. The matrix products run
on one BLAS thread each meanwhile (through threadpoolctl), so the two halves do not fight over
the cores.

What changes against one thread: the order of floating-point sums (results agree to rounding),
and Dropout in the second half draws from a mask stream of its own (masks equal in
distribution). Models with BatchNorm are not split: its batch statistics would be per half.

``fit(threads=None)`` splits where it pays (:func:`split_pays`): a backend whose seam row has
the ``split_batch`` capability (NumPy), at least two cores, a model with a convolution and no
BatchNorm, one process, batches of at least :data:`MIN_ROWS` rows, and threadpoolctl installed.
Measured on 2 vCPUs, ``cnn-fast``: 5.2-5.6 s -> 3.9 s per epoch of 30,720 images. ``evaluate``
and ``predict`` split their batches the same way (:meth:`SplitStep.forward`), BatchNorm models
too: in evaluation mode it normalises each sample alone.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

import numpy as np

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


def batch_statistics(model: Any) -> bool:
    """Whether a layer of ``model`` computes statistics over the batch (BatchNorm)."""
    from portanet.layers import BatchNorm

    return any(isinstance(layer, BatchNorm) for layer in model.layers)


def split_pays(model: Any, batch: int, processes: int, training: bool = True) -> bool:
    """Whether ``fit(threads=None)`` splits steps for ``model`` (see the module docstring), or
    for ``training=False`` whether inference splits its batches: the same, except that
    BatchNorm is no obstacle (in evaluation mode it works on each sample alone)."""
    from portanet.layers import Conv2D

    return (model.backend.capabilities.split_batch and (os.cpu_count() or 1) >= 2
            and processes == 1 and batch >= MIN_ROWS
            and not (training and batch_statistics(model))
            and any(isinstance(layer, Conv2D) for layer in model.layers)
            and _blas_controller() is not None)


def split_step(model: Any, threads: int | None, batch: int, processes: int) -> SplitStep | None:
    """The split-batch step ``fit(threads=...)`` asks for: None for 1, a :class:`SplitStep`
    for 2, and for None one where :func:`split_pays`. Raises ValueError for other values, and
    for 2 under MPI (``processes`` > 1) or with BatchNorm."""
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
    """The forward pass ``evaluate`` and ``predict`` call per batch: the model's own, or where
    :func:`split_pays` (``training=False``) one that runs the two halves on two threads."""
    if not split_pays(model, batch, 1, training=False):
        yield model.forward_unchecked
        return
    with SplitStep(model, training=False) as step:
        yield lambda xb: (step.forward(xb) if xb.shape[0] >= MIN_ROWS
                          else model.forward_unchecked(xb))


class SplitStep:
    """Forward and backward of one batch as two halves on two threads (see the module).

    Use as a context manager around the training loop; it owns the worker thread."""

    def __init__(self, model: Any, training: bool = True) -> None:
        if training and batch_statistics(model):
            raise ValueError("threads=2 needs a model without BatchNorm: its batch statistics "
                             "would be taken over each half of the batch; use threads=1")
        self.model = model
        self.replica = copy.copy(model)
        self.replica.layers = [copy.copy(layer) for layer in model.layers]
        for i, layer in enumerate(self.replica.layers):
            layer.grads = {}
            if getattr(layer, "_mask_rank", None) is not None:  # Dropout: a stream of its own
                layer.backend = model.backend.fork(
                    np.random.SeedSequence(model.seed, spawn_key=(0, i)))
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
        model, replica = self.model, self.replica
        n = int(xb.shape[0])
        half = n // 2
        first, second = self._both_halves(
            lambda net, rows: _run(net, loss, xb[rows, ...], tb[rows, ...]), n)
        logits = model.xp.concat([first, second], axis=0)
        a, b = half / n, (n - half) / n
        for layer, twin in zip(model.layers, replica.layers, strict=True):
            for key, g in layer.grads.items():
                mean = g * a
                mean += twin.grads[key] * b
                layer.grads[key] = mean
        return logits

    def _both_halves(self, work: Callable[[Any, slice], Any], n: int) -> tuple[Any, Any]:
        """``work(model, rows)`` on the first half of ``n`` rows here and ``work(replica,
        rows)`` on the second in the worker, BLAS held to one thread each meanwhile; the worker
        has finished when this returns or raises."""
        half = n // 2
        for layer, twin in zip(self.model.layers, self.replica.layers, strict=True):
            twin.training = layer.training
        limit = self._blas.limit(limits=1, user_api="blas") if self._blas is not None else None
        try:
            second = self._worker.submit(work, self.replica, slice(half, n))
            try:
                first = work(self.model, slice(0, half))
            finally:
                wait([second])
            return first, second.result()
        finally:
            if limit is not None:
                limit.restore_original_limits()


def _run(model: Any, loss: Any, xb: Any, tb: Any) -> Any:
    logits = model.forward_unchecked(xb)
    model.backward(loss.gradient(logits, tb), need_input_grad=False)
    return logits
