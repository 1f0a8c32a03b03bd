"""Section ``reference``: the 784-1024-10 MLP with L2 through portanet, against the floor (the
fastest plain NumPy program), the limit (the step's matrix products) and PyTorch, interleaved
round by round; then the peak memory of one epoch of each variant."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

import portanet
from bench import workloads
from bench.common import (
    Context,
    Plan,
    Say,
    goals,
    host_params,
    mlp,
    rows,
    torch_data,
    torch_device_for,
)
from bench.timing import MemoryWatch, measure_quietly, summarize, synchronizer


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
        return (workloads.ArrayModuleFloor(module, params, plan.batch, plan.lr, plan.seed,
                                           plan.l2),
                workloads.ArrayModuleLimit(module, params, plan.batch))
    if b.name == "torch":
        import torch

        return (workloads.TorchFloor(torch, b.device, params, plan.batch, plan.lr, plan.seed,
                                     plan.l2),
                workloads.TorchLimit(torch, b.device, params, plan.batch))
    return (workloads.ArrayAPIFloor(b.xp, b.device, params, plan.batch, plan.lr, plan.seed,
                                        plan.l2),
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
                               epochs=1, batch_size=plan.batch, shuffle=True, l2=plan.l2)
        return history.seconds[0]

    floor, limit = _floor_and_limit(ctx, params, plan)
    variants = [
        Variant("portanet", "portanet.fit(model, X, y, epochs=1, batch_size=256, shuffle=True, "
                "l2=1e-4) "
                "once per timed run; seconds = fit's own epoch timer (History.seconds: the "
                "shuffle, every step and the end-of-epoch loss read; it excludes fit's one-off "
                "input checks, which wall_seconds includes)", run_portanet, ctx.sync),
        Variant("floor", f"{type(floor).__name__}: the same step inline with the backend's own "
                "arrays, the fastest plain way (one permutation per epoch, each batch gathered "
                "by index from the resident data, no shuffled copy; in-place bias and ReLU, "
                "ReLU gradient as a mask multiply, lr folded into the output gradient, L2 as "
                "W *= 1 - lr*l2 in place, products into reused buffers where the library has "
                "out=; no loss value)",
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
        ref = workloads.TorchReference(torch, device, params, plan.batch, plan.lr, plan.seed,
                                       plan.l2)
        variants.append(Variant(
            "torch", "torch.nn.Sequential(Linear, ReLU, Linear), F.cross_entropy, "
            "torch.optim.SGD(lr) with weight_decay=l2 on the weight matrices, "
            "zero_grad(set_to_none=True); randperm per epoch, index_select per batch",
            lambda k: ref.run(rows(Xt, k), rows(yt, k)),
            synchronizer("torch", device)))
        torch_info = {"device": str(device), "threads": torch.get_num_threads()}
    else:
        torch_info = {"skipped": why_not}

    say(f"reference: 784-{plan.hidden}-10 ReLU MLP, batch {plan.batch}, SGD lr {plan.lr}, "
        f"L2 {plan.l2}, "
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
        results[v.name]["memory"] = _peak_memory(ctx, v, m)
    say("  peak memory of one run above the data set: " + "  ".join(
        f"{name} {_mib(results[name]['memory'].get('peak_bytes'))}" for name in runs))
    if "torch" not in results:
        results["torch"] = torch_info
    else:
        results["torch"].update(torch_info)
    ratios, of_medians, of_minimums = _ratios(results, runs)
    out = {
        "config": {"layers": [784, plan.hidden, 10], "activation": "relu",
                   "loss": "softmax_cross_entropy", "optimizer": f"SGD(lr={plan.lr})",
                   "l2": plan.l2, "dtype": ctx.backend.dtype_name, "batch_size": plan.batch,
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



def _peak_memory(ctx: Context, v: Variant, m: int) -> dict[str, Any]:
    """Peak memory of one more run of ``v`` (the data set, already resident, not counted)."""
    device = ctx.backend.device if v.name != "torch" else None
    watch = MemoryWatch(ctx.backend.name if v.name != "torch" else "torch", device)
    v.sync()
    with watch:
        v.run(m)
        v.sync()
    return watch.result


def _mib(value: Any) -> str:
    return "n/a" if value is None else f"{value / 2**20:,.1f} MiB"
