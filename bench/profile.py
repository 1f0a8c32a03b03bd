"""``--profile``: cProfile of one reference epoch through portanet.fit, and the seconds per phase
of the same steps next to the floor's (the floor's own step, with a timer between phases)."""

from __future__ import annotations

import cProfile
import io
import pstats
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import portanet
from bench import workloads
from bench.common import Context, Plan, Say, host_params, mlp, rows


def profile(ctx: Context, plan: Plan, say: Say) -> dict[str, Any]:
    """cProfile of one reference epoch through portanet.fit (and a per-phase timing of the same
    steps), to show where portanet's time goes."""
    n = ctx.n
    m = n if plan.ref_run_samples is None else min(plan.ref_run_samples, n)
    model = mlp(ctx.backend, plan.hidden, plan.seed)
    optimizer = portanet.optim.SGD(plan.lr)
    kwargs = {"loss": portanet.losses.softmax_cross_entropy, "optimizer": optimizer,
              "epochs": 1, "batch_size": plan.batch, "shuffle": True, "l2": plan.l2}
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
    :class:`bench.workloads.ArrayModuleFloor`'s own step, with a timer as its ``tick``. On a
    GPU the per-phase synchronisation makes the sum exceed an unsynchronised epoch.
    """
    sync = ctx.sync
    model = mlp(ctx.backend, plan.hidden, plan.seed)
    optimizer = portanet.optim.SGD(plan.lr)
    acc: dict[str, float] = {}

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            sync()  # nothing queued before the clock starts is charged to this phase
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
                             epochs=1, batch_size=plan.batch, shuffle=True,
                             l2=plan.l2).seconds[0]
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
    """The NumPy floor's own :meth:`~bench.workloads.ArrayModuleFloor.run` with a timer as its
    ``tick``: each phase's seconds are the time since the previous tick."""

    def __init__(self, params: workloads.Params, plan: Plan) -> None:
        super().__init__(np, params, plan.batch, plan.lr, plan.seed, plan.l2)

    def epoch(self, X: np.ndarray, y: np.ndarray) -> dict[str, float]:
        acc: dict[str, float] = {}
        last = [time.perf_counter()]

        def tick(phase: str) -> None:
            now = time.perf_counter()
            acc[phase] = acc.get(phase, 0.0) + now - last[0]
            last[0] = now

        start = last[0]
        self.run(X, y, tick)
        acc["total"] = time.perf_counter() - start
        return acc
