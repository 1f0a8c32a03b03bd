"""The ranks of the data-parallel engine: MPI (mpi4py), the same ``fit`` on K processes.

:mod:`portanet.parallel.engine` runs each step on ranks x threads workers; this module is its
rank level: the communicator, its collectives, the start-up agreement and failure handling.

    mpiexec -n 2 portanet train --model mlp1024         # the command line detects the world
    mpiexec -n 2 python my_script.py                    # with fit(..., comm=world())

Semantics (what :func:`portanet.fit` does with ``comm=world()``):

- ``batch_size`` is the *global* batch. Every rank holds the whole training set, draws the same
  seeded shuffle and takes a contiguous share of each global batch: rank r of K gets rows
  ``[lo + c*r//K, lo + c*(r+1)//K)`` of a batch of c rows, so shares differ by at most one row.
- Each worker weights its loss gradient by its rows' share of the global batch before
  backward; after it, each rank packs its gradients into one flat, contiguous buffer and one
  Allreduce (sum) per step adds them up: the result is the gradient of the mean loss over the
  global batch, as one process computes it, up to float rounding. Every rank then applies the
  same optimizer step to the same weights.
- BatchNorm layers (``sync=True``, the default) take their statistics over the global batch:
  their per-feature sums are allgathered over the ranks, once forward and once backward per
  layer and step, so K ranks train the weights of one process for every model.
- Every rank must start from identical weights: :meth:`Communicator.begin` allgathers a small
  fingerprint (layers, shapes, dtype, a hash of the weights, the data size and batch plan, the
  optimizer's configuration, ``l2`` and the schedule: :mod:`portanet.parallel.agreement`) and
  raises :class:`RankMismatchError` on *every* rank when they differ, never a hang. The labels
  are hashed there; :meth:`Communicator.check_same_inputs` compares a checksum of the training
  images too (``portanet train`` calls it once, on the host arrays, before the model is built).
- Loss and accuracy are summed over all ranks once per epoch (one more small Allreduce), by the
  same code that computes them for one process (``portanet.train``).
  Validation data, if any, is evaluated whole on every rank (same weights, same figures).
- Only rank 0 runs callbacks (progress, printing); the command line also writes and saves on
  rank 0 only.
- Dropout: each rank draws its own masks. Every Dropout layer has a private copy of the
  backend, made when the model is built (``Sequential.__init__`` calls
  :func:`portanet.model.own_mask_generators`), whose generator is seeded from
  ``SeedSequence(model.seed, spawn_key=(1 + w, i))`` for worker w and layer i
  (:mod:`portanet.random_streams`): worker 0's (one process) at first, re-seeded for their
  own worker by ``begin`` and the engine. The
  model's own generator, which draws the shuffles, is never touched by masks, so shuffles stay
  identical on all ranks. What holds then: weights stay identical on every rank after every
  step, a run is reproducible for a given seed, ranks and threads, and every sample's mask is an
  independent Bernoulli draw as in one process; the run is *not* equal to a 1-process run (the
  masks differ), only equal in distribution. Augmentation (``fit(augment=...)``) likewise
  draws from a generator of each rank's own (``spawn_key=(1 + r, number of layers)``): drawn
  from the shuffle generator, shards of different sizes would consume different amounts of it
  and the ranks' shuffles would drift apart, silently.
- Failure: under MPI with more than one rank an uncaught exception prints its traceback and
  calls ``MPI_Abort``, so mpiexec stops every rank at once (a rank blocked in an Allreduce would
  otherwise wait forever). Errors raised identically on every rank (a mismatch) exit normally.

Device arrays: NumPy buffers go to MPI directly. CuPy buffers go to MPI directly when the MPI
library is CUDA-aware (``MPIX_Query_cuda_support``, or ``PORTANET_MPI_CUDA_AWARE=1``), else they
are staged through host memory; so are the buffers of every other backend.
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from portanet.model import own_mask_generators
from portanet.number_checks import ceil_div
from portanet.parallel.agreement import (  # noqa: F401 (re-exported)
    RankMismatchError,
    check_same,
    describe_model,
    describe_training,
    inputs_digest,
    weights_digest,
)

# Set by mpiexec/mpirun/srun for each process: MPICH/Hydra and Intel MPI (PMI_*), Open MPI
# (OMPI_*), MVAPICH (MV2_*), PMIx launchers (PMIX_RANK) and Slurm's srun with PMI.
_LAUNCH_VARIABLES = ("PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE",
                     "PMIX_RANK")
INSTALL_HINT = 'pip install "portanet[mpi]" (that is: pip install mpi4py mpich)'


class MPIUnavailableError(ImportError):
    """Running under an MPI launcher, but mpi4py cannot be imported."""


def launched_by_mpi() -> bool:
    """True when this process was started by an MPI launcher (checked without importing MPI)."""
    return any(name in os.environ for name in _LAUNCH_VARIABLES)


# --- communicators --------------------------------------------------------------------------


class Communicator:
    """Data-parallel training over ``size`` processes; subclasses provide the collectives.

    Attributes:
        rank: this process's index, 0 .. size-1 (rank 0 prints and writes).
        size: the number of processes.
        allreduce_seconds: time spent in gradient Allreduce calls (waiting for the slowest
            rank included), for benchmarks.
        allreduce_calls: how many gradient Allreduce calls were made.
        routes: how :class:`MPIWorld` handed arrays to MPI, counted by
            :func:`allreduce_route` ("host", "device", "staged").
    """

    rank: int = 0
    size: int = 1

    def __init__(self) -> None:
        self.allreduce_seconds = 0.0
        self.allreduce_calls = 0
        self.routes: dict[str, int] = {}
        self._layout: list[tuple[dict[str, Any], str, int, int, tuple[int, ...], bool]] = []
        self._flat: Any = None

    @property
    def is_root(self) -> bool:
        """True on rank 0."""
        return self.rank == 0

    def describe(self) -> str:
        """One line about the world."""
        return "one process (not launched by mpiexec)"

    # The collectives. ``allreduce`` sums a device array over all ranks (in place where it
    # can; use the returned array); the others act on small Python objects or NumPy arrays.
    def allreduce(self, array: Any, backend: Any = None) -> Any:
        """The element-wise sum of ``array`` over all ranks: a NumPy array, or a device array
        of ``backend`` (a :class:`portanet.Backend`). In place where it can; use the result."""
        return array

    def allgather(self, value: Any) -> list[Any]:
        """``value`` from every rank, in rank order (small picklable objects)."""
        return [value]

    def broadcast(self, value: Any, root: int = 0) -> Any:
        """``value`` from ``root`` on every rank (a NumPy array is filled in place)."""
        return value

    def barrier(self) -> None:
        """Wait until every rank gets here."""

    def abort(self, status: int = 1) -> None:
        """Stop every rank now (MPI_Abort); on one process, exit."""
        raise SystemExit(status)

    # --- what fit calls -----------------------------------------------------------------------

    def begin(self, model: Any, y: Any, batch: int, epochs: int,
              callbacks: Sequence[Any] = (), *, optimizer: Any = None, l2: float = 0.0,
              lr_schedule: Any = None) -> list[Any]:
        """Start of :func:`portanet.fit`: check that every rank has the same model, plan and
        training settings (``optimizer``'s configuration, ``l2``, ``lr_schedule``: see
        :func:`~portanet.parallel.agreement.describe_training`; raises
        :class:`RankMismatchError` on every rank otherwise), re-seed the Dropout layers'
        generators for this rank, and return the callbacks this rank runs (all on rank 0, none
        elsewhere). One process has nothing to check."""
        if self.size == 1:
            return list(callbacks)
        n = int(y.shape[0])
        labels = hashlib.sha256(np.ascontiguousarray(model.backend.to_numpy(y))).hexdigest()
        mine = {"model": describe_model(model), "weights": weights_digest(model),
                "plan": f"{n} samples (labels {labels[:12]}), global batch {batch}, "
                        f"{epochs} epochs",
                "training": describe_training(optimizer, l2, lr_schedule)}
        check_same(self.allgather(mine))
        tail = n - (ceil_div(n, batch) - 1) * batch
        if min(batch, tail) < self.size:
            raise RankMismatchError(
                f"with {self.size} processes every global batch needs at least {self.size} "
                f"samples, but {n} samples in batches of {batch} leave a last batch of {tail}; "
                f"choose a batch size that leaves a larger remainder, trim the data, or use "
                f"fewer processes")
        own_mask_generators(model, self.rank)
        return list(callbacks) if self.is_root else []

    def check_same_inputs(self, *arrays: np.ndarray) -> None:
        """Check that every rank holds the same host ``arrays`` (the training images and
        labels) by one checksum of each rank's bytes, computed once; :meth:`begin` compares the
        labels only, and a rank given other images with the same labels would otherwise train
        silently to a worse model. Raises :class:`RankMismatchError` on every rank."""
        if self.size == 1:
            return
        everyone = self.allgather(inputs_digest(*arrays))
        differ = [rank for rank, digest in enumerate(everyone) if digest != everyone[0]]
        if differ:
            raise RankMismatchError(
                f"the training data on rank {', '.join(map(str, differ))} differs from rank "
                f"0's (checksum {everyone[differ[0]][:12]} versus {everyone[0][:12]}). Every "
                f"rank must load the same data: the same --dataset-file, --data-dir or "
                f"PORTANET_DATA")

    def shard(self, lo: int, hi: int) -> tuple[int, int]:
        """This rank's contiguous share ``[lo', hi')`` of the global batch ``[lo, hi)``."""
        count = hi - lo
        return lo + count * self.rank // self.size, lo + count * (self.rank + 1) // self.size

    def average_gradients(self, model: Any, share: float | None = None) -> None:
        """Replace every gradient of ``model`` by its weighted sum over all ranks, with one
        Allreduce over one flat buffer: ``share`` times each rank's (``fit`` weights each
        worker's gradient before backward and passes 1.0); default ``1 / size``."""
        xp = model.backend.xp
        weight = 1.0 / self.size if share is None else float(share)
        flat = self._pack(model)
        if weight != 1.0:
            flat *= weight
        started = time.perf_counter()
        flat = self.allreduce(flat, model.backend)
        self.allreduce_seconds += time.perf_counter() - started
        self.allreduce_calls += 1
        for grads, key, start, stop, shape, transposed in self._layout:
            if transposed:  # hand back a view in the gradient's own memory order
                view = xp.reshape(flat[start:stop], (shape[1], shape[0]))
                grads[key] = xp.permute_dims(view, (1, 0))
            else:
                grads[key] = xp.reshape(flat[start:stop], shape)

    def _pack(self, model: Any) -> Any:
        """Copy every gradient of ``model`` into the flat buffer (allocated once, reused while
        its size and dtype fit) and note where each one went."""
        xp, backend = model.backend.xp, model.backend
        self._layout, offset = [], 0
        for _, _, grads, key in model.parameter_slots():
            g = grads[key]
            size = math.prod(g.shape)
            self._layout.append((grads, key, offset, offset + size, tuple(g.shape),
                                 _transposed(g)))
            offset += size
        flat = self._flat
        if flat is None or not backend.owns(flat) or flat.shape[0] != offset \
                or flat.dtype != backend.dtype:
            flat = self._flat = xp.empty((offset,), dtype=backend.dtype, device=backend.device)
        for grads, key, start, stop, _, transposed in self._layout:
            g = grads[key]
            g = xp.permute_dims(g, (1, 0)) if transposed else g  # a contiguous view
            flat[start:stop] = xp.reshape(g, (-1,))
        return flat


def allreduce_route(array: Any, cuda_aware: bool) -> str:
    """How :meth:`MPIWorld.allreduce` hands ``array`` to MPI: ``"host"`` (a NumPy array, as it
    is), ``"device"`` (a CUDA buffer, ``__cuda_array_interface__``, to a CUDA-aware MPI) or
    ``"staged"`` (copied to the host and back: every other array)."""
    if isinstance(array, np.ndarray):
        return "host"
    try:  # a CPU PyTorch tensor has the attribute but raises when it is read
        on_cuda = getattr(array, "__cuda_array_interface__", None) is not None
    except (AttributeError, RuntimeError, TypeError, ValueError):
        on_cuda = False
    return "device" if on_cuda and cuda_aware else "staged"


class Local(Communicator):
    """The 1-process stand-in :func:`world` returns when not launched by MPI."""


class MPIWorld(Communicator):
    """mpi4py's COMM_WORLD behind the :class:`Communicator` interface."""

    def __init__(self) -> None:
        try:
            from mpi4py import MPI
        except ImportError as exc:
            raise MPIUnavailableError(
                f"this process was started by an MPI launcher (mpiexec), but mpi4py cannot be "
                f"imported ({exc}); install it with {INSTALL_HINT}") from None
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        super().__init__()
        self.cuda_aware = _cuda_aware_mpi()
        if self.size > 1:
            _install_abort_hook(self)

    def describe(self) -> str:
        """One line about the world: size, MPI library, thread level, CUDA-awareness."""
        library = self.MPI.Get_library_version().strip().splitlines()[0].strip()
        threads = {self.MPI.THREAD_SINGLE: "single", self.MPI.THREAD_FUNNELED: "funneled",
                   self.MPI.THREAD_SERIALIZED: "serialized",
                   self.MPI.THREAD_MULTIPLE: "multiple"}.get(self.MPI.Query_thread(), "?")
        return (f"{self.size} process{'es' if self.size > 1 else ''}; {library}; threads "
                f"{threads}; CUDA-aware: {'yes' if self.cuda_aware else 'no'}")

    def allreduce(self, array: Any, backend: Any = None) -> Any:
        MPI = self.MPI
        route = allreduce_route(array, self.cuda_aware)
        self.routes[route] = self.routes.get(route, 0) + 1
        if route == "host":
            self.comm.Allreduce(MPI.IN_PLACE, array, op=MPI.SUM)
            return array
        if backend is None:
            raise TypeError(f"allreduce of a {type(array).__name__} needs its backend: "
                            f"comm.allreduce(array, model.backend)")
        if route == "device":  # a CUDA buffer straight to CUDA-aware MPI
            backend.synchronize()  # MPI reads the memory now: the kernels must have finished
            self.comm.Allreduce(MPI.IN_PLACE, array, op=MPI.SUM)
            return array
        # Staged through host memory: CuPy without CUDA-aware MPI, PyTorch, array-api-strict.
        host = backend.to_numpy(array)
        self.comm.Allreduce(MPI.IN_PLACE, host, op=MPI.SUM)
        return backend.asarray(host)

    def allgather(self, value: Any) -> list[Any]:
        return self.comm.allgather(value)

    def broadcast(self, value: Any, root: int = 0) -> Any:
        if isinstance(value, np.ndarray):
            self.comm.Bcast(value, root=root)
            return value
        return self.comm.bcast(value, root=root)

    def barrier(self) -> None:
        self.comm.Barrier()

    def abort(self, status: int = 1) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        self.comm.Abort(status)


_WORLD: Communicator | None = None


def world() -> Communicator:
    """The communicator of this process: :class:`MPIWorld` over COMM_WORLD when launched by
    mpiexec (mpi4py is imported only then), else a 1-process :class:`Local` stand-in.

    Raises :class:`MPIUnavailableError`, with what to install, under mpiexec without mpi4py.
    """
    global _WORLD
    if _WORLD is None:
        _WORLD = MPIWorld() if launched_by_mpi() else Local()
    return _WORLD


def communicator(comm: Any) -> Communicator:
    """``comm`` as ``fit`` takes it: a :class:`Communicator`, or ``None`` for one process.

    Raises:
        TypeError: anything else, before any work; mpi4py's own communicators (``MPI.COMM_WORLD``)
            with the pointer to :func:`world`, which wraps them.
    """
    if comm is None:
        return Local()
    if isinstance(comm, Communicator):
        return comm
    kind = f"{type(comm).__module__}.{type(comm).__qualname__}"
    if kind.startswith("mpi4py"):
        raise TypeError(f"comm is mpi4py's {type(comm).__name__}; fit takes portanet's "
                        f"communicator over it: comm=portanet.parallel.mpi.world() (from "
                        f"portanet.parallel.mpi import world), which wraps MPI.COMM_WORLD")
    raise TypeError(f"comm must be a portanet.parallel.mpi.Communicator such as "
                    f"portanet.parallel.mpi.world(), or None for one process; got {kind}")


def started_world() -> Communicator | None:
    """The communicator :func:`world` made in this process, or None before its first call
    (for error handling, which must not start MPI itself)."""
    return _WORLD


def _transposed(array: Any) -> bool:
    """True for a 2-D array stored in column-major order (Dense keeps W and dW so)."""
    flags = getattr(array, "flags", None)
    return (array.ndim == 2 and flags is not None and bool(flags["F_CONTIGUOUS"])
            and not bool(flags["C_CONTIGUOUS"]))


def _cuda_aware_mpi() -> bool:
    """Whether the loaded MPI library can take CUDA device buffers (MPIX_Query_cuda_support,
    found in the libmpi this process loaded); ``PORTANET_MPI_CUDA_AWARE=0/1`` overrides."""
    forced = os.environ.get("PORTANET_MPI_CUDA_AWARE")
    if forced is not None:
        return forced.strip() not in ("", "0", "no", "false")
    try:
        with open("/proc/self/maps") as maps:
            paths = sorted({line.split()[-1] for line in maps if "libmpi" in line})
    except OSError:
        return False
    for path in paths:
        try:
            query = ctypes.CDLL(path).MPIX_Query_cuda_support
        except (OSError, AttributeError):
            continue
        query.restype = ctypes.c_int
        return bool(query())
    return False


# --- failure handling -----------------------------------------------------------------------


def _install_abort_hook(comm: MPIWorld) -> None:
    """An uncaught exception on any rank prints its traceback and aborts every rank."""
    previous = sys.excepthook

    def hook(kind: type[BaseException], exc: BaseException, tb: Any) -> None:
        previous(kind, exc, tb)
        if getattr(exc, "on_every_rank", False):
            return  # every rank raises it: they all exit, nobody waits
        sys.stderr.write(f"portanet: rank {comm.rank} of {comm.size} failed; stopping every "
                         f"rank (MPI_Abort)\n")
        comm.abort(1)

    sys.excepthook = hook
