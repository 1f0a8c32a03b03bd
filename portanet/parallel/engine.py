"""The data-parallel engine: one training step on K workers, K = MPI ranks x threads.

Each worker holds a *replica* of the model and a contiguous share of the global batch. A
process runs ``threads`` workers: the model itself on the calling thread and shallow copies
on worker threads, whose layers share the model's ``params`` (the same dicts, so every update
is seen at once) and keep their own ``grads``, caches and Dropout streams. Each worker
back-propagates its share of the global batch's mean loss (its loss gradient weighted by its
rows), so the workers' gradients add up to the whole batch's.

The collectives, hierarchical (threads first, then one rank-level call):

- gradients: the threads' gradients are added into the model's, then one Allreduce over the
  ranks (:meth:`portanet.parallel.mpi.Communicator.average_gradients`);
- BatchNorm (synchronised, the default): every worker hands its per-feature sums to a
  :class:`Meeting` of the process's threads; the last thread to arrive makes, for all of them,
  one ``allgather`` over the ranks, so every worker gets the sums of all K workers in one
  order and computes the global batch's statistics (PyTorch's SyncBatchNorm). A layer made
  with ``BatchNorm(sync=False)`` keeps per-worker statistics instead (DDP's default);
- the optimizer's update: :meth:`portanet.optim.Optimizer.plan` hands out one step in
  ``threads`` pieces (parts of the flat arrays), run at once on the threads.

The matrix products run on one BLAS thread per worker meanwhile (threadpoolctl), so the
workers do not fight over the cores. A failure in any thread breaks the meeting, so the other
threads raise instead of waiting, and the failing thread's error is raised; under MPI an
uncaught error aborts every rank (:mod:`portanet.parallel.mpi`). Leaves room for other
transports of the same collectives (NCCL for CuPy arrays) behind :class:`Meeting`.

What changes against one worker: the order of floating-point sums (results agree to
rounding), and each worker's Dropout masks come from a stream of its own
(:mod:`portanet.random_streams`), equal in distribution.
"""

from __future__ import annotations

import contextlib
import copy
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from portanet.layers import BatchNorm
from portanet.layers.folding import fold_batchnorm
from portanet.model import own_mask_generators
from portanet.random_streams import dropout_stream

ROWS_PER_THREAD = 32
"""``threads=None`` uses a thread per this many rows of a batch at most: fewer, and the
threads' overhead wins."""

Gather = Callable[[tuple[Any, ...], int], list[tuple[tuple[Any, ...], int]]]


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask where the system has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def check_threads(threads: Any) -> int | None:
    """``threads`` as given to ``fit``: None or a positive int; else a ValueError."""
    if threads is None:
        return None
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"threads must be a positive int (workers per process) or None (as "
                         f"many as pay, up to the usable cores), got {threads!r}")
    return threads


def blas_controller() -> Any:
    """threadpoolctl's controller of the BLAS libraries loaded here (NumPy's among them), or
    None without threadpoolctl or without a BLAS it can hold to one thread."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    blas = ThreadpoolController().select(user_api="blas")
    return blas if blas.lib_controllers else None


def threads_that_pay(model: Any, batch: int, processes: int) -> int:
    """How many threads ``fit(threads=None)`` (and inference) runs per process: on a backend
    with the ``split_batch`` capability (NumPy), for a model with a convolution, in one
    process, with threadpoolctl installed: a thread per core the process may use, at most one
    per :data:`ROWS_PER_THREAD` rows; else 1."""
    from portanet.layers import Conv2D

    if not (model.backend.capabilities.split_batch and processes == 1
            and any(isinstance(layer, Conv2D) for layer in model.layers)
            and blas_controller() is not None):
        return 1
    return max(1, min(usable_cores(), batch // ROWS_PER_THREAD))


def shares(rows: int, parts: int) -> list[slice]:
    """``rows`` in ``parts`` contiguous shares that differ by one row at most."""
    return [slice(rows * k // parts, rows * (k + 1) // parts) for k in range(parts)]


class Meeting:
    """Where the workers' BatchNorm layers meet: each worker hands in its per-feature sums and
    row count; all get every worker's, in worker order (rank by rank, thread by thread).

    The threads of a process wait at a barrier; the last to arrive collects, making one
    ``allgather`` over the ranks when there are several (``comm``), with host copies of the
    sums (``backend`` reads and makes device arrays).
    """

    def __init__(self, comm: Any, backend: Any) -> None:
        self.comm, self.backend = comm, backend
        self._parts: list[Any] = []
        self._all: list[Any] = []
        self._barrier = threading.Barrier(1, action=self._collect)

    def open(self, threads: int) -> None:
        """Start a step with ``threads`` workers in this process."""
        self._parts = [None] * threads
        if self._barrier.parties != threads or self._barrier.broken:
            self._barrier = threading.Barrier(threads, action=self._collect)

    def _collect(self) -> None:
        parts = list(self._parts)  # a new list: the next meeting leaves this one alone
        if self.comm.size > 1:
            to_host, to_device = self.backend.to_numpy, self.backend.asarray
            every = self.comm.allgather([(tuple(to_host(s) for s in sums), rows)
                                         for sums, rows in parts])
            parts = [(tuple(to_device(s) for s in sums), rows)
                     for rank_parts in every for sums, rows in rank_parts]
        self._all = parts

    def gather(self, thread: int) -> Gather:
        """The ``gather`` function of the BatchNorm layers of worker thread ``thread``."""

        def gather(sums: tuple[Any, ...], rows: int) -> list[tuple[tuple[Any, ...], int]]:
            self._parts[thread] = (sums, rows)
            self._barrier.wait()
            return self._all  # replaced only once every thread is back for the next meeting

        return gather

    def abort(self) -> None:
        """Break the barrier: threads waiting at it raise BrokenBarrierError."""
        self._barrier.abort()


class Engine:
    """Training steps and inference on ``threads`` workers in this process, and the ranks of
    ``comm`` (see the module). Use as a context manager: it owns the worker threads.

    Args:
        model: the model; its replicas share its parameters.
        threads: workers in this process (1: the model alone, no thread started).
        comm: the ranks (:class:`portanet.parallel.mpi.Communicator`); None: one process.
        training: whether the engine trains (BatchNorm layers then meet over the workers) or
            only infers.
    """

    def __init__(self, model: Any, threads: int = 1, comm: Any = None,
                 training: bool = True) -> None:
        from portanet.parallel.mpi import Local

        self.model, self.threads = model, threads
        self.comm = Local() if comm is None else comm
        _check_thread_level(self.comm, threads)
        self.workers = self.comm.size * threads
        self.meeting = Meeting(self.comm, model.backend)
        if training and threads > 1:  # the model is thread 0 of its rank's workers
            own_mask_generators(model, self.comm.rank * threads)
        self.replicas = [model] + [self._replica(t) for t in range(1, threads)]
        self._synced = training and self.workers > 1
        self._alone = threads == 1 and not self._synced
        self._pool = (ThreadPoolExecutor(max_workers=threads - 1,
                                         thread_name_prefix="portanet-worker")
                      if threads > 1 else None)
        self._blas = blas_controller() if threads > 1 else None

    def _replica(self, thread: int) -> Any:
        """A shallow copy of the model for worker thread ``thread``: its layers share the
        model's params and have their own grads, caches and Dropout streams."""
        model = self.model
        replica = copy.copy(model)
        replica.layers = [copy.copy(layer) for layer in model.layers]
        worker = self.comm.rank * self.threads + thread
        for i, layer in enumerate(replica.layers):
            layer.grads = {}
            if isinstance(layer, BatchNorm):  # the model's own copy moves the running statistics
                layer.updates_running = False
            if getattr(layer, "_mask_rank", None) is not None:  # Dropout: a stream of its own
                layer.backend = dropout_stream(model, i, worker)
        return replica

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    # --- a training step ----------------------------------------------------------------------

    def forward_backward(self, loss: Any, xb: Any, tb: Any, share: float = 1.0) -> Any:
        """Fill the model's ``grads`` with this process's part of the global batch's mean loss
        gradient, ``(xb, tb)`` being ``share`` of the global batch's rows (the ranks' parts
        then only need adding up); return the logits.

        Every worker weights its loss gradient by its own share of the global batch, before
        backward: BatchNorm's backward adds sums over every worker, so they must be on one
        scale."""
        if self._alone:  # one worker: the plain step, nothing to share (per-sample SGD)
            logits = self.model.forward_unchecked(xb)
            dlogits = loss.gradient(logits, tb)
            self.model.backward(dlogits * share if share != 1.0 else dlogits,
                                need_input_grad=False)
            return logits
        n = int(xb.shape[0])

        def work(net: Any, rows: slice) -> Any:
            logits = net.forward_unchecked(xb[rows, ...])
            dlogits = loss.gradient(logits, tb[rows, ...])
            weight = share * (rows.stop - rows.start) / n  # of the global batch's rows
            net.backward(dlogits * weight if weight != 1.0 else dlogits, need_input_grad=False)
            return logits

        outputs = self.run(work, n)
        self._add_gradients(len(outputs))
        return outputs[0] if len(outputs) == 1 else self.model.xp.concat(outputs, axis=0)

    def forward(self, xb: Any) -> Any:
        """The model's outputs for the batch ``xb`` (evaluation mode; ``evaluate``,
        ``predict``), each worker thread on its share of the rows."""
        outputs = self.run(lambda net, rows: net.forward_unchecked(xb[rows, ...]),
                           int(xb.shape[0]))
        return outputs[0] if len(outputs) == 1 else self.model.xp.concat(outputs, axis=0)

    def update(self, optimizer: Any, l2: float) -> None:
        """One optimizer step: its pieces (:meth:`portanet.optim.Optimizer.plan`) at once on
        the worker threads."""
        if self.threads == 1:
            optimizer.step(self.model, l2)
            return
        pieces = optimizer.plan(self.model, l2, self.threads)
        if len(pieces) == 1:
            pieces[0]()
            return
        self._on_threads([lambda piece=piece: piece() for piece in pieces])

    def _add_gradients(self, active: int) -> None:
        """The active replicas' gradients added into the model's."""
        for i, layer in enumerate(self.model.layers):
            for key, g in layer.grads.items():
                for replica in self.replicas[1:active]:
                    g = g + replica.layers[i].grads[key]
                layer.grads[key] = g

    # --- running work on the threads ----------------------------------------------------------

    def run(self, work: Callable[[Any, slice], Any], rows: int) -> list[Any]:
        """``work(replica, rows)`` for each worker thread's share of ``rows`` rows, at once;
        the results in thread order. BatchNorm layers meet over every worker meanwhile
        (training); every thread has finished when this returns or raises."""
        active = max(1, min(self.threads, rows))
        synced = self._synced
        for replica in self.replicas[1:active]:
            for layer, twin in zip(self.model.layers, replica.layers, strict=True):
                twin.training = layer.training
        if synced:
            self.meeting.open(active)
            self._set_gathers(active)
        try:
            jobs = [(lambda net=net, part=part: work(net, part))
                    for net, part in zip(self.replicas, shares(rows, active), strict=False)]
            return self._on_threads(jobs)
        finally:
            if synced:
                self._set_gathers(0)

    def _set_gathers(self, active: int) -> None:
        """Hand the synchronised BatchNorm layers of the first ``active`` replicas their
        gathers (0: take them back)."""
        for t, replica in enumerate(self.replicas):
            gather = self.meeting.gather(t) if t < active else None
            for layer in replica.layers:
                if isinstance(layer, BatchNorm) and layer.sync:
                    layer.gather = gather

    def _on_threads(self, jobs: Sequence[Callable[[], Any]]) -> list[Any]:
        """Run ``jobs[0]`` here and the others on the worker threads, BLAS held to one thread
        each where there are several; a failure breaks the meeting (the others stop waiting)
        and is raised, the first thread's first."""
        if len(jobs) == 1:
            return [jobs[0]()]
        guarded = [self._breaking(job) for job in jobs]
        limit = self._blas.limit(limits=1, user_api="blas") if self._blas is not None else None
        try:
            futures: list[Future[Any]] = [self._pool.submit(job) for job in guarded[1:]]
            errors: list[BaseException] = []
            results = [None] * len(jobs)
            try:
                results[0] = guarded[0]()
            except BaseException as exc:  # noqa: BLE001 (raised below, after the others end)
                errors.append(exc)
            for k, future in enumerate(futures, start=1):
                try:
                    results[k] = future.result()
                except BaseException as exc:  # noqa: BLE001
                    errors.append(exc)
            if errors:
                raise _first_real(errors)
            return results
        finally:
            if limit is not None:
                limit.restore_original_limits()

    def _breaking(self, job: Callable[[], Any]) -> Callable[[], Any]:
        def guarded() -> Any:
            try:
                return job()
            except BaseException:
                self.meeting.abort()
                raise

        return guarded


def _check_thread_level(comm: Any, threads: int) -> None:
    """Threads under MPI call MPI from whichever thread meets last, one at a time: refuse an
    MPI library initialised below ``MPI_THREAD_SERIALIZED``, before any work."""
    mpi = getattr(comm, "MPI", None)
    if mpi is None or threads == 1 or comm.size == 1:
        return
    if mpi.Query_thread() < mpi.THREAD_SERIALIZED:
        raise ValueError(
            f"threads={threads} under MPI needs an MPI library initialised with at least "
            f"MPI_THREAD_SERIALIZED, but this one runs at a lower level; use threads=1, or let "
            f"mpi4py initialise MPI (its default asks for MPI_THREAD_MULTIPLE)")


def _first_real(errors: list[BaseException]) -> BaseException:
    """The first error that is not a broken barrier (a consequence of another's failure)."""
    for error in errors:
        if not isinstance(error, threading.BrokenBarrierError):
            return error
    return errors[0]


@contextlib.contextmanager
def inference_forward(model: Any, batch: int) -> Iterator[Callable[[Any], Any]]:
    """The forward pass ``evaluate`` and ``predict`` call per batch, in evaluation mode: the
    model's with its BatchNorm layers folded into the layers before them
    (:func:`portanet.layers.folding.fold_batchnorm`), on the threads that pay
    (:func:`threads_that_pay`)."""
    model = fold_batchnorm(model)
    threads = threads_that_pay(model, batch, 1)
    if threads == 1:
        yield model.forward_unchecked
        return
    with Engine(model, threads, training=False) as engine:
        yield engine.forward
