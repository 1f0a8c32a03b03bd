"""Timing and memory helpers: device synchronisation, one measured call, summaries."""

from __future__ import annotations

import resource
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from bench.machine import Contention, load_average, others_cores_now


def synchronizer(backend_name: str, device: Any = None) -> Callable[[], None]:
    """A function that waits for the device's queued work (a no-op on the CPU), from the
    backend table (:data:`portanet.backend.table.SEAMS`): CuPy waits for the whole device, PyTorch
    on CUDA for ``torch.cuda.synchronize``."""
    from portanet.backend.table import SEAMS

    seam = SEAMS[backend_name]
    return lambda: seam.synchronize(device)


def measure(fn: Callable[[], float | None], sync: Callable[[], None]) -> dict[str, Any]:
    """Run ``fn`` once, timed between device synchronisations.

    ``fn`` may return its own timing (e.g. :func:`portanet.fit`'s epoch timer), which becomes
    ``seconds``; the outer timing is always kept as ``wall_seconds``. ``load1`` is the 1-minute
    load average just before the call; ``others_cores`` how many cores other processes kept
    busy during it.
    """
    load = load_average()
    watch = Contention()
    sync()
    start = time.perf_counter()
    inner = fn()
    sync()
    wall = time.perf_counter() - start
    # /proc/stat counts in 10 ms ticks: too coarse to judge calls shorter than a quarter second
    others = watch.others_cores() if wall >= 0.25 else None
    return {"seconds": float(inner) if inner is not None else wall, "wall_seconds": wall,
            "load1": load[0] if load else None, "others_cores": others}


class QuietPolicy:
    """Retry measurements that other processes disturbed.

    A measurement during which other processes kept ``threshold`` cores or more busy (on
    average) is *contended*: on 2 cores a second busy process can make multi-threaded BLAS
    several times slower. It is then repeated, after waiting until the other processes' CPU use
    over a 2-second window falls below the threshold, up to ``retries`` times per measurement and
    ``budget`` seconds of waiting in all. A measurement still contended after that is kept and
    flagged ``"contended": true``.
    """

    def __init__(self, threshold: float = 0.4, retries: int = 3, wait_each: float = 90.0,
                 budget: float = 300.0, say: Callable[[str], None] = print) -> None:
        self.threshold, self.retries = threshold, retries
        self.wait_each, self.budget, self.say = wait_each, budget, say
        self.waited = 0.0
        self.retried = 0
        self.contended_kept = 0

    def contended(self, run: dict[str, Any]) -> bool:
        others = run.get("others_cores")
        return others is not None and others >= self.threshold

    def wait(self) -> None:
        """Wait (within the budgets) until other processes leave the CPU."""
        start = time.monotonic()
        limit = min(self.wait_each, self.budget - self.waited)
        others = None
        while time.monotonic() - start < limit:
            others = others_cores_now(2.0)
            if others is None or others < self.threshold:
                break
        self.waited += time.monotonic() - start
        self.say(f"    (other processes were using the CPU; waited {time.monotonic() - start:.0f}s"
                 f", now {others} cores busy elsewhere; measuring again)")

    def as_dict(self) -> dict[str, Any]:
        return {"threshold_cores": self.threshold, "retries_per_measurement": self.retries,
                "wait_budget_seconds": self.budget, "waited_seconds": round(self.waited, 1),
                "measurements_repeated": self.retried,
                "contended_measurements_kept": self.contended_kept}


def measure_quietly(fn: Callable[[], float | None], sync: Callable[[], None],
                    policy: QuietPolicy | None) -> dict[str, Any]:
    """:func:`measure`, repeated per ``policy`` while other processes disturb it."""
    run = measure(fn, sync)
    if policy is None:
        return run
    attempts = 1
    discarded = []
    while policy.contended(run) and attempts <= policy.retries \
            and policy.waited < policy.budget:
        discarded.append({k: run[k] for k in ("seconds", "others_cores", "load1")})
        policy.wait()
        policy.retried += 1
        run = measure(fn, sync)
        attempts += 1
    run["attempts"] = attempts
    if discarded:
        run["discarded"] = discarded
    if policy.contended(run):
        run["contended"] = True
        policy.contended_kept += 1
    return run


def summarize(runs: list[dict[str, Any]], scale: float, samples_per_epoch: int) -> dict[str, Any]:
    """Median (and min/max) seconds per epoch from runs of ``1/scale`` of an epoch each."""
    seconds = [r["seconds"] * scale for r in runs]
    median = statistics.median(seconds)
    loads = [r["load1"] for r in runs if r.get("load1") is not None]
    others = [r["others_cores"] for r in runs if r.get("others_cores") is not None]
    wall = statistics.median(r["wall_seconds"] * scale for r in runs)
    return {
        "seconds_per_epoch": median,
        "wall_seconds_per_epoch": wall,
        "samples_per_second": samples_per_epoch / median if median > 0 else None,
        "min_seconds_per_epoch": min(seconds),
        "max_seconds_per_epoch": max(seconds),
        "repeats": len(runs),
        "runs": runs,
        "load1_max": max(loads) if loads else None,
        "others_cores_max": max(others) if others else None,
        "contended_runs": sum(1 for r in runs if r.get("contended")),
    }


class MemoryWatch:
    """Peak memory of one run on a backend.

    NumPy and array-api-strict (which wraps NumPy): ``tracemalloc`` (NumPy reports its data
    allocations to it), as the peak above what was live when :meth:`mark` was called, plus the
    process's ``ru_maxrss`` growth. CuPy: a memory-pool hook
    (:class:`portanet.backend.cuda.PoolPeak`)
    that records the real peak of bytes in use above those at :meth:`mark`.
    PyTorch on CUDA: ``torch.cuda.max_memory_allocated``. PyTorch on the CPU: ``ru_maxrss``
    growth only.
    """

    def __init__(self, backend_name: str, device: Any = None) -> None:
        self.name = backend_name
        self.device = device
        self.baseline = 0
        self.result: dict[str, Any] = {}

    @staticmethod
    def _maxrss() -> int:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss if sys.platform == "darwin" else rss * 1024

    def __enter__(self) -> MemoryWatch:
        self.rss0 = self._maxrss()
        if self.name in ("numpy", "array_api_strict"):
            tracemalloc.start()
        elif self.name == "cupy":
            import cupy

            from portanet.backend.cuda import PoolPeak

            cupy.get_default_memory_pool().free_all_blocks()
            self._peak = PoolPeak(getattr(self.device, "id", None))
            self._peak.__enter__()
        elif self.name == "torch" and getattr(self.device, "type", "") == "cuda":
            import torch

            torch.cuda.reset_peak_memory_stats()
        self.mark()
        return self

    def mark(self) -> None:
        """Start counting from here (e.g. at the start of an epoch, after input checks)."""
        if self.name in ("numpy", "array_api_strict") and tracemalloc.is_tracing():
            tracemalloc.reset_peak()
            self.baseline = tracemalloc.get_traced_memory()[0]
        elif self.name == "cupy":
            self._peak.mark()
        elif self.name == "torch" and getattr(self.device, "type", "") == "cuda":
            import torch

            torch.cuda.reset_peak_memory_stats()
            self.baseline = torch.cuda.memory_allocated()

    def __exit__(self, *exc: object) -> None:
        out: dict[str, Any] = {"maxrss_growth_bytes": self._maxrss() - self.rss0}
        if self.name in ("numpy", "array_api_strict") and tracemalloc.is_tracing():
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            out["peak_bytes"] = peak - self.baseline
            out["method"] = "tracemalloc peak above the arrays live at the epoch's start"
        elif self.name == "cupy":
            import cupy

            self._peak.__exit__(None, None, None)
            out["peak_bytes"] = self._peak.peak_above_mark
            out["pool_total_bytes"] = cupy.get_default_memory_pool().total_bytes()
            out["method"] = ("CuPy memory-pool hook: peak bytes in use above those at the "
                             "epoch's start (comparable with tracemalloc's peak)")
        elif self.name == "torch" and getattr(self.device, "type", "") == "cuda":
            import torch

            out["peak_bytes"] = torch.cuda.max_memory_allocated() - self.baseline
            out["method"] = "torch.cuda.max_memory_allocated above the epoch's start"
        else:
            out["peak_bytes"] = None
            out["method"] = "ru_maxrss growth only (no allocation tracing for this backend)"
        self.result = out
