"""Section ``scaling``: portanet's seconds per epoch and peak memory over batch sizes and hidden
widths."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import portanet
from bench.common import Context, Plan, Say, mlp, rows
from bench.timing import MemoryWatch, measure_quietly, summarize
from portanet.train import Callback

SCALING_LR = 0.01
"""Small enough that no configuration diverges (speed does not depend on it)."""


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
                       "optimizer": f"SGD(lr={SCALING_LR})", "dtype": ctx.backend.dtype_name,
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
    optimizer = portanet.optim.SGD(SCALING_LR)
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

