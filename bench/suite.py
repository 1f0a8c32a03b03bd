"""The benchmark sections: reference workload, scaling, per-sample SGD (and an optional profile).

Every timed call goes through :func:`bench.timing.measure`, which synchronises the device before
starting and before stopping the clock and records the load average and the CPU other
processes used meanwhile.
"""

from __future__ import annotations

import cProfile
import importlib.util
import io
import math
import pstats
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

import portanet
from bench import workloads
from bench.timing import MemoryWatch, QuietPolicy, measure_quietly, summarize, synchronizer
from portanet.train import Callback

Say = Callable[[str], None]

GOALS = {"portanet/floor": 1.10, "portanet/limit": 1.35, "portanet/torch": 1.0}
"""NumPy backend goals: portanet at most 1.10x the floor, 1.35x the limit, faster than PyTorch."""


@dataclass
class Plan:
    """What a run measures; the presets are :func:`plan_for`'s ``quick``, ``full`` and ``tiny``."""

    mode: str
    samples: int | None = None            # data set size; None: all 60,000 MNIST images
    hidden: int = 1024
    batch: int = 256
    lr: float = 0.1
    ref_run_samples: int | None = None    # samples per timed reference run; None: whole epoch
    ref_repeats: int = 9
    ref_warmup_samples: int | None = None
    scaling_widths: tuple[int, ...] = (128, 1024, 4096)
    scaling_batches: tuple[int | None, ...] = (1, 32, 256, 2048, None)  # None: full batch
    scaling_target_seconds: float = 2.5
    scaling_repeats: int = 3
    per_sample_target_seconds: float = 2.0
    per_sample_repeats: int = 3
    per_sample_probe: int = 300
    quiet_retries: int = 3                # re-measure runs other processes disturbed ...
    quiet_wait_each: float = 90.0         # ... waiting at most this long each time ...
    quiet_budget: float = 300.0           # ... and this long in all
    sections: tuple[str, ...] = ("reference", "scaling", "per_sample")
    torch: bool = True
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def plan_for(mode: str) -> Plan:
    """The preset for ``mode``: ``full`` (several minutes), ``quick`` (under 2 minutes on 2
    cores) or ``tiny`` (seconds; for the test suite, figures meaningless)."""
    if mode == "full":
        return Plan(mode="full")
    if mode == "quick":
        return Plan(mode="quick", ref_run_samples=12_000, ref_repeats=5,
                    ref_warmup_samples=6_000, scaling_target_seconds=0.4, scaling_repeats=1,
                    per_sample_target_seconds=0.4, per_sample_repeats=1, per_sample_probe=100,
                    quiet_retries=1, quiet_wait_each=10.0, quiet_budget=20.0)
    if mode == "tiny":
        return Plan(mode="tiny", samples=512, hidden=32, ref_repeats=1,
                    scaling_widths=(16, 32), scaling_batches=(1, 64, None),
                    scaling_target_seconds=0.02, scaling_repeats=1,
                    per_sample_target_seconds=0.02, per_sample_repeats=1, per_sample_probe=20,
                    quiet_retries=0, quiet_wait_each=0.0, quiet_budget=0.0)
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


# --- 1. the reference workload ----------------------------------------------------------------


@dataclass
class Variant:
    name: str
    method: str
    run: Callable[[int], float | None]  # (samples) -> inner seconds or None
    sync: Callable[[], None]


def _floor_and_limit(ctx: Context, params: workloads.Params, plan: Plan) -> tuple[Any, Any]:
    b = ctx.backend
    if b.name in ("numpy", "cupy"):
        module: Any
        if b.name == "numpy":
            module = np
        else:
            import cupy as module
        return (workloads.ArrayModuleFloor(module, params, plan.batch, plan.lr, plan.seed),
                workloads.ArrayModuleLimit(module, params, plan.batch))
    if b.name == "torch":
        import torch

        return (workloads.TorchFloor(torch, b.device, params, plan.batch, plan.lr, plan.seed),
                workloads.TorchLimit(torch, b.device, params, plan.batch))
    return (workloads.ArrayAPIFloor(b.xp, b.device, params, plan.batch, plan.lr, plan.seed),
            workloads.ArrayAPILimit(b.xp, b.device, params, plan.batch))


def reference(ctx: Context, plan: Plan, say: Say) -> dict[str, Any]:
    """Section 1: portanet, the floor, the limit and PyTorch on one epoch of the reference
    workload, interleaved round by round so that load from other processes hits all alike."""
    n = ctx.n
    m = n if plan.ref_run_samples is None else min(plan.ref_run_samples, n)
    warm = m if plan.ref_warmup_samples is None else min(plan.ref_warmup_samples, n)
    scale = n / m
    model = mlp(ctx.backend, plan.hidden, plan.seed)
    params = host_params(model)
    optimizer = portanet.optim.SGD(plan.lr)
    X, y = ctx.X, ctx.y

    def run_portanet(k: int) -> float:
        history = portanet.fit(model, rows(X, k), rows(y, k),
                               loss=portanet.losses.softmax_cross_entropy, optimizer=optimizer,
                               epochs=1, batch_size=plan.batch, shuffle=True)
        return history.seconds[0]

    floor, limit = _floor_and_limit(ctx, params, plan)
    variants = [
        Variant("portanet", "portanet.fit(model, X, y, epochs=1, batch_size=256, shuffle=True) "
                "once per timed run; seconds = fit's own epoch timer (History.seconds: the "
                "shuffle, every step and the end-of-epoch loss read; it excludes fit's one-off "
                "input checks, which wall_seconds includes)", run_portanet, ctx.sync),
        Variant("floor", f"{type(floor).__name__}: the same step inline with the backend's own "
                "arrays, the fastest plain way (one permutation + take per epoch like fit; "
                "in-place bias and ReLU, ReLU gradient as a mask multiply, lr folded into the "
                "output gradient, products into reused buffers where the library has out=; "
                "no loss value)",
                lambda k: floor.run(rows(X, k), rows(y, k)), ctx.sync),
        Variant("limit", f"{type(limit).__name__}: X@W1, A1@W2, dZ2@W2.T, A1.T@dZ2, X.T@dZ1 per "
                "batch, into preallocated outputs, nothing else",
                lambda k: limit.run(rows(X, k), rows(y, k)), ctx.sync),
    ]
    torch_info: dict[str, Any] = {}
    device, why_not = (None, "disabled with --no-torch") if not plan.torch \
        else torch_device_for(ctx.backend)
    if device is not None:
        import torch

        Xt, yt = torch_data(ctx, device)
        ref = workloads.TorchReference(torch, device, params, plan.batch, plan.lr, plan.seed)
        variants.append(Variant(
            "torch", "torch.nn.Sequential(Linear, ReLU, Linear), F.cross_entropy, "
            "torch.optim.SGD(lr), zero_grad(set_to_none=True); randperm + index_select per "
            "epoch", lambda k: ref.run(rows(Xt, k), rows(yt, k)),
            synchronizer("torch", device)))
        torch_info = {"device": str(device), "threads": torch.get_num_threads()}
    else:
        torch_info = {"skipped": why_not}

    say(f"reference: 784-{plan.hidden}-10 ReLU MLP, batch {plan.batch}, SGD lr {plan.lr}, "
        f"{ctx.backend.name} {ctx.backend.dtype_name}; {plan.ref_repeats} timed runs of "
        f"{m:,} samples" + (f" (scaled x{scale:.2f} to an epoch of {n:,})" if m < n else "")
        + ", variants interleaved")
    for v in variants:  # warm-up: allocator, thread pools, first-touch pages
        v.sync()
        v.run(warm)
        v.sync()
    runs: dict[str, list[dict[str, Any]]] = {v.name: [] for v in variants}
    for r in range(plan.ref_repeats):
        # Rotate the order each round so no variant always runs first or right after another.
        for v in variants[r % len(variants):] + variants[:r % len(variants)]:
            runs[v.name].append(measure_quietly(lambda v=v: v.run(m), v.sync, ctx.quiet))
        say(f"  run {r + 1}: " + "  ".join(
            f"{name} {rs[-1]['seconds'] * scale:.3f}s" for name, rs in runs.items())
            + f"  (load {runs['portanet'][-1]['load1']}, others "
            f"{runs['portanet'][-1]['others_cores']} cores)")
    results: dict[str, Any] = {}
    for v in variants:
        results[v.name] = summarize(runs[v.name], scale, n)
        results[v.name]["method"] = v.method
    if "torch" not in results:
        results["torch"] = torch_info
    else:
        results["torch"].update(torch_info)
    ratios, of_medians, of_minimums = _ratios(results, runs)
    out = {
        "config": {"layers": [784, plan.hidden, 10], "activation": "relu",
                   "loss": "softmax_cross_entropy", "optimizer": f"SGD(lr={plan.lr})",
                   "dtype": ctx.backend.dtype_name, "batch_size": plan.batch,
                   "epoch_samples": n, "samples_per_timed_run": m, "scaled_to_epoch": m < n,
                   "scale_factor": scale, "repeats": plan.ref_repeats,
                   "warmup_samples": warm, "shuffle": True, "data_on_device": True,
                   "backend": ctx.backend.name, "device": ctx.backend.device_name},
        **results,
        "ratios": ratios,
        "ratios_of_medians": of_medians,
        "ratios_of_minimums": of_minimums,
        "ratios_method": "ratios: median over rounds of the ratio within each round (paired, "
                         "so drift in machine speed between rounds cancels); ratios_of_medians: "
                         "ratio of the variants' median seconds per epoch; ratios_of_minimums: "
                         "ratio of their fastest runs (least disturbed by noise)",
    }
    if ctx.backend.name == "numpy":
        out["goals"] = goals(ratios)
    return out


def _ratios(results: dict[str, Any], runs: dict[str, list[dict[str, Any]]],
            ) -> tuple[dict[str, float | None], ...]:
    """(median of per-round ratios, ratio of medians, ratio of minimums) for each pair."""
    def med(name: str) -> float | None:
        return results[name].get("seconds_per_epoch") if name in runs else None

    pairs = [("portanet", "floor"), ("portanet", "limit"), ("portanet", "torch"),
             ("floor", "limit"), ("torch", "limit"), ("floor", "torch")]
    paired: dict[str, float | None] = {}
    of_medians: dict[str, float | None] = {}
    of_minimums: dict[str, float | None] = {}
    for a, b in pairs:
        ma, mb = med(a), med(b)
        of_medians[f"{a}/{b}"] = ma / mb if ma and mb else None
        of_minimums[f"{a}/{b}"] = (min(r["seconds"] for r in runs[a])
                                   / min(r["seconds"] for r in runs[b])
                                   if a in runs and b in runs else None)
        if a in runs and b in runs:
            paired[f"{a}/{b}"] = statistics.median(
                ra["seconds"] / rb["seconds"] for ra, rb in zip(runs[a], runs[b], strict=True))
        else:
            paired[f"{a}/{b}"] = None
    return paired, of_medians, of_minimums


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


# --- 2. scaling -----------------------------------------------------------------------------------


class _Enough(Exception):
    """Raised by :class:`_Probe` to end a fit call after a few steps."""


class _Probe(Callback):
    """Times the first ``steps`` steps of a fit call, then stops it; marks the memory watch at
    the start of the epoch (after fit's input checks)."""

    def __init__(self, steps: int, sync: Callable[[], None], watch: MemoryWatch) -> None:
        self.steps, self.sync, self.watch = steps, sync, watch
        self.t0 = self.t1 = self.t_end = 0.0

    def on_epoch_begin(self, epoch: int, epochs: int, num_batches: int) -> None:
        self.sync()
        self.watch.mark()
        self.t0 = time.perf_counter()

    def on_batch_end(self, batch: int, running: Any) -> None:
        if batch == 0:
            self.sync()
            self.t1 = time.perf_counter()
        if batch + 1 >= self.steps:
            self.sync()
            self.t_end = time.perf_counter()
            raise _Enough


def scaling(ctx: Context, plan: Plan, say: Say) -> dict[str, Any]:
    """Section 2: portanet's seconds per epoch and peak memory over batch sizes and widths.

    Per configuration: a probe (the first few steps of an epoch over the whole data set, with
    memory tracing on) gives the peak memory and a step-time estimate; then epochs, or when an
    epoch would take longer than the target the first ``m`` samples of one (a whole number of
    batches), are timed through :func:`portanet.fit` and scaled to an epoch.
    """
    n = ctx.n
    rows_out = []
    say(f"scaling: widths {plan.scaling_widths}, batch sizes "
        f"{tuple('full' if b is None else b for b in plan.scaling_batches)}, "
        f"~{plan.scaling_target_seconds}s per timed run, {plan.scaling_repeats} run(s) each")
    for hidden in plan.scaling_widths:
        for batch_opt in plan.scaling_batches:
            batch = n if batch_opt is None else min(batch_opt, n)
            rows_out.append(_scaling_point(ctx, plan, hidden, batch, say))
    return {"config": {"layers": [784, "hidden", 10], "loss": "softmax_cross_entropy",
                       "optimizer": f"SGD(lr={plan.lr})", "dtype": ctx.backend.dtype_name,
                       "epoch_samples": n, "backend": ctx.backend.name,
                       "target_seconds_per_run": plan.scaling_target_seconds,
                       "repeats": plan.scaling_repeats,
                       "method": "portanet.fit, one (partial) epoch per timed run; "
                                 "History.seconds scaled by epoch_samples / samples_timed; "
                                 "memory from a separate probe run over the whole data set"},
            "rows": rows_out}


def _scaling_point(ctx: Context, plan: Plan, hidden: int, batch: int, say: Say
                   ) -> dict[str, Any]:
    n = ctx.n
    model = mlp(ctx.backend, hidden, plan.seed)
    optimizer = portanet.optim.SGD(plan.lr)
    steps_full = math.ceil(n / batch)
    probe_steps = min(steps_full, 3 if batch >= 256 else 20)
    watch = MemoryWatch(ctx.backend.name, ctx.backend.device)
    probe = _Probe(probe_steps, ctx.sync, watch)
    with watch:
        try:
            portanet.fit(model, ctx.X, ctx.y, optimizer=optimizer, epochs=1, batch_size=batch,
                         shuffle=True, callbacks=[probe], stop_on_interrupt=False)
        except _Enough:
            pass
    if probe_steps > 1:
        per_step = (probe.t_end - probe.t1) / (probe_steps - 1)
        first = probe.t1 - probe.t0
    else:
        per_step = first = probe.t_end - probe.t0
    estimate = first + per_step * (steps_full - 1)
    if estimate <= plan.scaling_target_seconds or steps_full == 1:
        m = n
    else:
        steps = max(2, int(plan.scaling_target_seconds / max(per_step, 1e-9)))
        m = min(n, steps * batch)

    def run() -> float:
        history = portanet.fit(model, rows(ctx.X, m), rows(ctx.y, m), optimizer=optimizer,
                               epochs=1, batch_size=batch, shuffle=True)
        return history.seconds[0]

    runs = [measure_quietly(run, ctx.sync, ctx.quiet) for _ in range(plan.scaling_repeats)]
    summary = summarize(runs, n / m, n)
    row = {"hidden": hidden, "batch_size": batch, "full_batch": batch >= n,
           "seconds_per_epoch": summary["seconds_per_epoch"],
           "samples_per_second": summary["samples_per_second"],
           "steps_per_epoch": steps_full, "samples_timed": m,
           "steps_timed": math.ceil(m / batch), "extrapolated": m < n,
           "min_seconds_per_epoch": summary["min_seconds_per_epoch"],
           "max_seconds_per_epoch": summary["max_seconds_per_epoch"],
           "peak_memory_bytes": watch.result.get("peak_bytes"),
           "memory": watch.result,
           "probe_seconds_per_step": per_step,
           "runs": runs, "load1_max": summary["load1_max"],
           "others_cores_max": summary["others_cores_max"]}
    peak = row["peak_memory_bytes"]
    say(f"  hidden {hidden:>5} batch {batch:>6}: {row['seconds_per_epoch']:8.3f} s/epoch "
        f"{row['samples_per_second']:>11,.0f} samples/s"
        + (f"  (from {m:,} samples, extrapolated)" if m < n else "")
        + (f"  peak {peak / 2**20:,.1f} MiB" if peak is not None else ""))
    return row


# --- 3. per-sample SGD (reference D) --------------------------------------------------------------


def per_sample(ctx: Context, plan: Plan, say: Say) -> dict[str, Any]:
    """Section 3: per-sample SGD of the one-layer 784->10 model with softmax squared error, on
    every backend available here and as plain NumPy inline; microseconds per sample.

    Each implementation is warmed up and probed to pick a run length near the target, then
    the timed runs go round by round over all implementations (order rotated), so the ratios
    to plain NumPy are paired like the reference workload's."""
    from portanet.backend import cuda_status

    available = {
        "numpy": (True, ""),
        "array_api_strict": (importlib.util.find_spec("array_api_strict") is not None,
                             "array-api-strict is not installed"),
        "torch": (importlib.util.find_spec("torch") is not None, "PyTorch is not installed"),
        "cupy": cuda_status(),
    }
    say(f"per-sample SGD (reference D): Dense(784, 10), softmax_squared_error, SGD lr "
        f"{plan.lr}, batch 1; ~{plan.per_sample_target_seconds}s per timed run, "
        f"{plan.per_sample_repeats} interleaved round(s)")
    impls: list[_PerSample] = []
    skipped: list[dict[str, Any]] = []
    for name in ("numpy", "array_api_strict", "torch", "cupy"):
        ok, why = available[name]
        if ok:
            impls.append(_PortanetPerSample(ctx, plan, name))
        else:
            skipped.append({"impl": "portanet", "backend": name, "skipped": why})
    floor = _PlainNumpyPerSample(ctx, plan)
    impls.append(floor)
    for impl in impls:
        impl.prepare(ctx, plan)
    runs: dict[int, list[dict[str, Any]]] = {id(i): [] for i in impls}
    for r in range(plan.per_sample_repeats):
        for impl in impls[r % len(impls):] + impls[:r % len(impls)]:
            runs[id(impl)].append(measure_quietly(impl.run, impl.sync, ctx.quiet))
    floor_runs = runs[id(floor)]
    rows_out: list[dict[str, Any]] = []
    for impl in impls:
        rs = runs[id(impl)]
        us = statistics.median(r["seconds"] for r in rs) / impl.m * 1e6
        row = {**impl.describe(), "us_per_sample": us, "samples_per_second": 1e6 / us,
               "samples_timed": impl.m, "runs": rs}
        if impl is not floor:
            row["ratio_to_plain_numpy"] = statistics.median(
                a["seconds"] / b["seconds"] for a, b in zip(rs, floor_runs, strict=True)
            ) * floor.m / impl.m
        rows_out.append(row)
        say(f"  {row['impl']}[{row['backend']}] on {row['device']}: {us:,.1f} us/sample  "
            f"({impl.m:,} samples)")
    rows_out = rows_out[:-1] + skipped + rows_out[-1:]
    ratios = {f"portanet[{r['backend']}]/plain numpy": r["ratio_to_plain_numpy"]
              for r in rows_out if "ratio_to_plain_numpy" in r}
    return {"config": {"layers": [784, 10], "loss": "softmax_squared_error",
                       "optimizer": f"SGD(lr={plan.lr})", "batch_size": 1, "dtype": "float32",
                       "rounds": plan.per_sample_repeats,
                       "method": "portanet.fit(batch_size=1, shuffle=True) on the first m "
                                 "samples; us/sample = median History.seconds / m; the plain "
                                 "NumPy loop also shuffles once per epoch (permutation + take); "
                                 "implementations interleaved round by round, ratios paired "
                                 "per round"},
            "rows": rows_out, "ratios": ratios}


class _PerSample:
    """One per-sample implementation: warm-up + probe (``prepare``), then timed ``run``s."""

    m = 0

    def prepare(self, ctx: Context, plan: Plan) -> None:
        probe = min(plan.per_sample_probe, ctx.n)
        self.load(ctx, probe)
        self.run()  # warm-up: first calls are slow on some backends
        est = measure_quietly(self.run, self.sync, ctx.quiet)["seconds"] / probe
        self.load(ctx, _samples_for(est, plan.per_sample_target_seconds, probe, ctx.n))

    def load(self, ctx: Context, m: int) -> None:
        raise NotImplementedError

    def run(self) -> float | None:
        raise NotImplementedError

    def sync(self) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        raise NotImplementedError


def _samples_for(seconds_per_sample: float, target: float, probe: int, n: int) -> int:
    return int(min(n, max(probe, target / max(seconds_per_sample, 1e-9))))


class _PortanetPerSample(_PerSample):
    def __init__(self, ctx: Context, plan: Plan, name: str) -> None:
        self.backend = portanet.get_backend(name, "float32", seed=plan.seed)
        self.sync = synchronizer(self.backend.name, self.backend.device)  # type: ignore[method-assign]
        self.model = portanet.Sequential([portanet.Dense(784, 10)], backend=self.backend,
                                         seed=plan.seed)
        self.optimizer = portanet.optim.SGD(plan.lr)

    def load(self, ctx: Context, m: int) -> None:
        self.m = m
        self.X = self.backend.asarray(ctx.X_host[:m])
        self.y = self.backend.asarray(ctx.y_host[:m])

    def run(self) -> float:
        return portanet.fit(self.model, self.X, self.y,
                            loss=portanet.losses.softmax_squared_error, optimizer=self.optimizer,
                            epochs=1, batch_size=1, shuffle=True).seconds[0]

    def describe(self) -> dict[str, Any]:
        return {"impl": "portanet", "backend": self.backend.name,
                "device": self.backend.device_name}


class _PlainNumpyPerSample(_PerSample):
    def __init__(self, ctx: Context, plan: Plan) -> None:
        model = portanet.Sequential([portanet.Dense(784, 10)], backend="numpy", seed=plan.seed)
        state = model.state_dict()
        self.floor = workloads.PerSampleNumpyFloor(state["0.W"], state["0.b"], plan.lr,
                                                   plan.seed)

    def load(self, ctx: Context, m: int) -> None:
        self.m = m
        self.X, self.y = ctx.X_host[:m], ctx.y_host[:m]

    def run(self) -> None:
        self.floor.run(self.X, self.y)

    def describe(self) -> dict[str, Any]:
        return {"impl": "plain numpy inline", "backend": "numpy", "device": "cpu",
                "method": workloads.PER_SAMPLE_FLOOR_METHOD}


# --- profile ----------------------------------------------------------------------------------


def profile(ctx: Context, plan: Plan, say: Say) -> dict[str, Any]:
    """cProfile of one reference epoch through portanet.fit (and a per-phase timing of the same
    steps), to show where portanet's time goes."""
    n = ctx.n
    m = n if plan.ref_run_samples is None else min(plan.ref_run_samples, n)
    model = mlp(ctx.backend, plan.hidden, plan.seed)
    optimizer = portanet.optim.SGD(plan.lr)
    kwargs = {"loss": portanet.losses.softmax_cross_entropy, "optimizer": optimizer,
              "epochs": 1, "batch_size": plan.batch, "shuffle": True}
    portanet.fit(model, rows(ctx.X, m), rows(ctx.y, m), **kwargs)  # warm-up
    prof = cProfile.Profile()
    prof.enable()
    portanet.fit(model, rows(ctx.X, m), rows(ctx.y, m), **kwargs)
    ctx.sync()
    prof.disable()
    text = io.StringIO()
    stats = pstats.Stats(prof, stream=text).sort_stats("tottime")
    stats.print_stats(25)
    top = []
    for (file, line, func), (_cc, ncalls, tottime, cumtime, _callers) in sorted(
            stats.stats.items(), key=lambda kv: -kv[1][2])[:20]:
        top.append({"function": f"{file.split('/')[-1]}:{line}({func})", "ncalls": ncalls,
                    "tottime": tottime, "cumtime": cumtime})
    phases = phase_breakdown(ctx, plan, m, rounds=3 if plan.mode == "full" else 2)
    say(f"profile: seconds per phase of one epoch of {m:,} samples, median of "
        f"{phases['rounds']} interleaved rounds (each phase synchronised and timed alone):")
    for phase, seconds in phases["portanet"].items():
        floor_s = phases["floor"].get(phase)
        say(f"  {phase:<42} portanet {seconds:7.3f}s" + (
            f"   floor {floor_s:7.3f}s" if floor_s is not None else ""))
    return {"samples": m, "cprofile_top": top, "cprofile_text": text.getvalue(),
            "phases": phases}


PHASES = ("forward 0 Dense", "forward 1 ReLU", "forward 2 Dense", "backward 2 Dense",
          "backward 1 ReLU", "backward 0 Dense", "optimizer.step",
          "rest of fit (shuffle, loss, bookkeeping)", "total")


def phase_breakdown(ctx: Context, plan: Plan, m: int, rounds: int = 3) -> dict[str, Any]:
    """Seconds per phase of one epoch, portanet next to the floor, median of ``rounds``
    interleaved rounds (one portanet epoch, then one floor epoch).

    portanet runs through the real :func:`portanet.fit`: each layer's forward and backward and
    the optimizer step are wrapped (on this model instance only) with synchronised timers; the
    rest of fit's epoch (shuffle, loss and its gradient, per-step bookkeeping, the end-of-epoch
    read) is fit's epoch time minus their sum. The floor (NumPy backend only) is
    :class:`bench.workloads.ArrayModuleFloor`'s step with a timer between the same phases. On a
    GPU the per-phase synchronisation makes the sum exceed an unsynchronised epoch.
    """
    sync = ctx.sync
    model = mlp(ctx.backend, plan.hidden, plan.seed)
    optimizer = portanet.optim.SGD(plan.lr)
    acc: dict[str, float] = {}

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            sync()
            acc[name] = acc.get(name, 0.0) + time.perf_counter() - t0
            return out
        return wrapper

    for i, layer in enumerate(model.layers):
        kind = type(layer).__name__
        layer.forward = timed(f"forward {i} {kind}", layer.forward)    # type: ignore[method-assign]
        layer.backward = timed(f"backward {i} {kind}", layer.backward)  # type: ignore[method-assign]
    optimizer.step = timed("optimizer.step", optimizer.step)  # type: ignore[method-assign]

    def portanet_epoch() -> dict[str, float]:
        acc.clear()
        epoch = portanet.fit(model, rows(ctx.X, m), rows(ctx.y, m),
                             loss=portanet.losses.softmax_cross_entropy, optimizer=optimizer,
                             epochs=1, batch_size=plan.batch, shuffle=True).seconds[0]
        out = dict(acc)
        out["rest of fit (shuffle, loss, bookkeeping)"] = epoch - sum(acc.values())
        out["total"] = epoch
        return out

    floor = _PhasedFloor(host_params(model), plan) if ctx.backend.name == "numpy" else None
    portanet_epoch()  # warm-up
    if floor is not None:
        floor.epoch(ctx.X_host[:m], ctx.y_host[:m])
    p_runs, f_runs = [], []
    for _ in range(rounds):
        p_runs.append(portanet_epoch())
        if floor is not None:
            f_runs.append(floor.epoch(ctx.X_host[:m], ctx.y_host[:m]))

    def median(runs: list[dict[str, float]]) -> dict[str, float]:
        keys = [k for k in PHASES if runs and k in runs[0]] + \
            [k for k in (runs[0] if runs else {}) if k not in PHASES]
        return {k: statistics.median(r.get(k, 0.0) for r in runs) for k in keys}

    return {"portanet": median(p_runs), "floor": median(f_runs) if f_runs else {},
            "rounds": rounds, "portanet_rounds": p_runs, "floor_rounds": f_runs}


class _PhasedFloor(workloads.ArrayModuleFloor):
    """The NumPy floor's step with a timer between the phases of :func:`phase_breakdown`."""

    def __init__(self, params: workloads.Params, plan: Plan) -> None:
        super().__init__(np, params, plan.batch, plan.lr, plan.seed)

    def epoch(self, X: np.ndarray, y: np.ndarray) -> dict[str, float]:
        mm, lr = np.matmul, self.lr
        W1, b1, W2, b2, g1, g2, rows_ = self.W1, self.b1, self.W2, self.b2, self.g1, self.g2, \
            self.rows
        acc: dict[str, float] = {}
        rest = "rest of fit (shuffle, loss, bookkeeping)"

        def tick(name: str, t0: float) -> float:
            t = time.perf_counter()
            acc[name] = acc.get(name, 0.0) + t - t0
            return t

        t = start = time.perf_counter()
        n = X.shape[0]
        perm = self.rng.permutation(n)
        Xe, ye = np.take(X, perm, axis=0), np.take(y, perm, axis=0)
        t = tick(rest, t)
        for lo in range(0, n, self.batch):
            hi = min(lo + self.batch, n)
            xb, yb, k = Xe[lo:hi], ye[lo:hi], hi - lo
            h = mm(xb, W1, out=self.h[:k])
            h += b1
            t = tick("forward 0 Dense", t)
            np.maximum(h, 0, out=h)
            t = tick("forward 1 ReLU", t)
            z = mm(h, W2, out=self.z[:k])
            z += b2
            t = tick("forward 2 Dense", t)
            z -= z.max(axis=1, keepdims=True)
            np.exp(z, out=z)
            z *= (lr / k) / z.sum(axis=1, keepdims=True)
            z[rows_[:k], yb] -= lr / k
            t = tick(rest, t)
            dh = mm(z, W2.T, out=self.dh[:k])
            mm(h.T, z, out=g2)
            gb2 = z.sum(axis=0)
            t = tick("backward 2 Dense", t)
            dh *= h > 0
            t = tick("backward 1 ReLU", t)
            mm(xb.T, dh, out=g1)
            gb1 = dh.sum(axis=0)
            t = tick("backward 0 Dense", t)
            W2 -= g2
            b2 -= gb2
            W1 -= g1
            b1 -= gb1
            t = tick("optimizer.step", t)
        acc["total"] = time.perf_counter() - start
        return acc


def plan_dict(plan: Plan) -> dict[str, Any]:
    return asdict(plan)
