"""What every benchmark section shares: the plan (what a run measures), the context (backend
and data), the reference model and the PyTorch helpers."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

import portanet
from bench import workloads
from bench.timing import QuietPolicy, synchronizer

Say = Callable[[str], None]

GOALS = {"portanet/floor": 1.05, "portanet/limit": 1.35, "portanet/torch": 1.0}
"""NumPy backend goals for the reference epoch: portanet at most 1.05x the floor, 1.35x the
limit, faster than PyTorch. The other sections carry their own (process, per-sample, full
batch)."""


@dataclass
class Plan:
    """What a run measures; the presets are :func:`plan_for`'s ``quick``, ``full`` and ``tiny``."""

    mode: str
    samples: int | None = None            # data set size; None: all 60,000 MNIST images
    hidden: int = 1024
    batch: int = 256
    lr: float = 0.5
    l2: float = 1e-4                      # the reference program's L2 (0.5 * l2 * sum W^2)
    ref_run_samples: int | None = None    # samples per timed reference run; None: whole epoch
    ref_repeats: int = 7
    ref_warmup_samples: int | None = None
    scaling_widths: tuple[int, ...] = (128, 1024, 4096)
    scaling_batches: tuple[int | None, ...] = (1, 32, 256, 2048, None)  # None: full batch
    scaling_target_seconds: float = 2.5
    scaling_repeats: int = 2
    per_sample_target_seconds: float = 2.0
    per_sample_repeats: int = 3
    per_sample_probe: int = 300
    full_batch_samples: int = 41_000      # the reference program's training subset
    full_batch_iterations: int = 500
    full_batch_rounds: int = 2
    process_epochs: int = 3               # the whole-process pair: epochs per program run ...
    process_samples: int | None = None    # ... on this many training samples (None: all)
    process_pairs: int = 5                # ... alternated this many times
    quiet_retries: int = 3                # re-measure runs other processes disturbed ...
    quiet_wait_each: float = 90.0         # ... waiting at most this long each time ...
    quiet_budget: float = 300.0           # ... and this long in all
    sections: tuple[str, ...] = ("reference", "process", "full_batch", "per_sample", "scaling",
                                 "cnn")
    torch: bool = True
    seed: int = 0


def plan_for(mode: str) -> Plan:
    """The preset for ``mode``: ``full`` (about 10 minutes on 2 quiet cores), ``quick`` (a few
    minutes, partial epochs) or ``tiny`` (seconds; for the test suite, figures meaningless)."""
    if mode == "full":
        return Plan(mode="full")
    if mode == "quick":
        return Plan(mode="quick", ref_run_samples=12_000, ref_repeats=5,
                    ref_warmup_samples=6_000, scaling_target_seconds=0.4, scaling_repeats=1,
                    per_sample_target_seconds=0.4, per_sample_repeats=1, per_sample_probe=100,
                    full_batch_iterations=40, full_batch_rounds=2, process_epochs=1,
                    process_samples=12_000, process_pairs=2, quiet_retries=1,
                    quiet_wait_each=10.0, quiet_budget=20.0)
    if mode == "tiny":
        return Plan(mode="tiny", samples=512, hidden=32, ref_repeats=1,
                    scaling_widths=(16, 32), scaling_batches=(1, 64, None),
                    scaling_target_seconds=0.02, scaling_repeats=1,
                    per_sample_target_seconds=0.02, per_sample_repeats=1, per_sample_probe=20,
                    full_batch_samples=512, full_batch_iterations=3, full_batch_rounds=1,
                    process_epochs=1, process_pairs=1, quiet_retries=0, quiet_wait_each=0.0,
                    quiet_budget=0.0)
    raise ValueError(f"unknown mode {mode!r}")


@dataclass
class Context:
    """The chosen backend and the data, on the host and on the device."""

    backend: portanet.Backend
    X_host: np.ndarray
    y_host: np.ndarray
    X: Any
    y: Any
    sync: Callable[[], None]
    blas_threads: int
    torch_threads: int | None = None
    quiet: QuietPolicy | None = None

    @property
    def n(self) -> int:
        return int(self.X_host.shape[0])


def make_context(backend: portanet.Backend, X_host: np.ndarray, y_host: np.ndarray,
                 blas_threads: int) -> Context:
    """Copy the data to the backend's device once."""
    X = backend.asarray(X_host)
    y = backend.asarray(y_host.astype(np.int64))
    ctx = Context(backend=backend, X_host=X_host, y_host=y_host, X=X, y=y,
                  sync=synchronizer(backend.name, backend.device), blas_threads=blas_threads)
    ctx.sync()
    return ctx


def mlp(backend: portanet.Backend, hidden: int, seed: int) -> portanet.Sequential:
    """The 784-hidden-10 ReLU MLP of the reference workload."""
    return portanet.Sequential(
        [portanet.Dense(784, hidden), portanet.ReLU(), portanet.Dense(hidden, 10)],
        backend=backend, seed=seed,
    )


def host_params(model: portanet.Sequential) -> workloads.Params:
    state = model.state_dict()
    return {"W1": state["0.W"], "b1": state["0.b"], "W2": state["2.W"], "b2": state["2.b"]}


def rows(array: Any, m: int) -> Any:
    """The first ``m`` rows (a view where the library makes one)."""
    return array if m >= array.shape[0] else array[:m, ...]


# --- torch ----------------------------------------------------------------------------------------


def torch_device_for(backend: portanet.Backend) -> tuple[Any, str | None]:
    """(torch device, None) for the comparison on the backend's device, or (None, why not)."""
    if importlib.util.find_spec("torch") is None:
        return None, "PyTorch is not installed"
    import torch

    if backend.name == "torch":
        return backend.device, None
    if backend.name == "cupy":
        if not torch.cuda.is_available():
            return None, ("this PyTorch has no CUDA; a CPU figure would not be on the same "
                          "device as CuPy")
        return torch.device("cuda", backend.device.id), None
    return torch.device("cpu"), None


def set_torch_threads(threads: int) -> int | None:
    """Give PyTorch's CPU pool as many threads as NumPy's BLAS uses; returns the setting."""
    if importlib.util.find_spec("torch") is None:
        return None
    import torch

    torch.set_num_threads(int(threads))
    return torch.get_num_threads()


def torch_data(ctx: Context, device: Any) -> tuple[Any, Any]:
    import torch

    if ctx.backend.name == "torch":
        return ctx.X, ctx.y
    if device.type == "cpu":
        return torch.from_numpy(ctx.X_host), torch.from_numpy(ctx.y_host.astype(np.int64))
    return (torch.tensor(ctx.X_host, device=device),
            torch.tensor(ctx.y_host.astype(np.int64), device=device))



def goals(ratios: dict[str, float | None]) -> dict[str, Any]:
    """Each NumPy-backend goal: its bound, the measured ratio, and whether it was met."""
    out = {}
    for key, bound in GOALS.items():
        value = ratios.get(key)
        met = None if value is None else (value < bound if key == "portanet/torch"
                                          else value <= bound)
        out[key] = {"bound": bound, "measured": value, "met": met,
                    "rule": "<" if key == "portanet/torch" else "<="}
    return out



def plan_dict(plan: Plan) -> dict[str, Any]:
    return asdict(plan)
