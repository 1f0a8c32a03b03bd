"""Section ``full_batch``: full-batch gradient descent of the 784-10-10 ReLU net (reference B:
float64, uniform(-0.5, 0.5) weights, alpha 0.1) through ``portanet.fit(batch_size=None)``, next
to its plain NumPy transcription, timed round by round (order alternated)."""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np

import portanet
from bench import workloads
from bench.common import Context, Plan, Say
from bench.timing import measure_quietly

GOAL = 1.15
"""portanet at most 1.15x the plain transcription."""


def full_batch(ctx: Context, plan: Plan, say: Say) -> dict[str, Any]:
    """portanet and the plain loop, ``plan.full_batch_iterations`` iterations per timed run."""
    m = min(plan.full_batch_samples, ctx.n)
    iters = plan.full_batch_iterations
    backend = portanet.get_backend("numpy", "float64", seed=plan.seed)
    X = ctx.X_host[:m].astype(np.float64)
    y = ctx.y_host[:m].astype(np.int64)
    uniform = portanet.init.uniform(-0.5, 0.5)
    model = portanet.Sequential(
        [portanet.Dense(784, 10, weight_init=uniform, bias_init=uniform), portanet.ReLU(),
         portanet.Dense(10, 10, weight_init=uniform, bias_init=uniform)],
        backend=backend, seed=plan.seed)
    state = model.state_dict()
    floor = workloads.FullBatchNumpyFloor(
        {"W1": state["0.W"], "b1": state["0.b"], "W2": state["2.W"], "b2": state["2.b"]},
        X, y, lr=0.1)
    optimizer = portanet.optim.SGD(0.1)
    X_dev, y_dev = backend.asarray(X), backend.asarray(y)

    def run_portanet(k: int) -> float:
        history = portanet.fit(model, X_dev, y_dev, optimizer=optimizer, epochs=k,
                               batch_size=None, shuffle=False)
        return sum(history.seconds)

    def nothing() -> None:
        pass

    say(f"full batch (reference B): 784-10-10 ReLU, float64, {m:,} samples, alpha 0.1, "
        f"{iters} iterations per timed run, {plan.full_batch_rounds} round(s)")
    run_portanet(2)  # warm-up
    floor.run(2)
    runs: dict[str, list[dict[str, Any]]] = {"portanet": [], "plain numpy": []}
    calls = {"portanet": lambda: run_portanet(iters), "plain numpy": lambda: floor.run(iters)}
    order = list(calls)
    for r in range(plan.full_batch_rounds):
        for name in (order if r % 2 == 0 else order[::-1]):
            runs[name].append(measure_quietly(calls[name], nothing, ctx.quiet))
        say(f"  round {r + 1}: " + "  ".join(
            f"{name} {rs[-1]['seconds']:.2f}s" for name, rs in runs.items()))
    ratio = statistics.median(a["seconds"] / b["seconds"] for a, b in
                              zip(runs["portanet"], runs["plain numpy"], strict=True))
    rows = {name: {"seconds": statistics.median(r["seconds"] for r in rs),
                   "ms_per_iteration": statistics.median(r["seconds"] for r in rs) / iters * 1e3,
                   "runs": rs} for name, rs in runs.items()}
    rows["plain numpy"]["method"] = workloads.FULL_BATCH_FLOOR_METHOD
    rows["portanet"]["method"] = ("portanet.fit(model, X, y, batch_size=None, epochs="
                                  "iterations, shuffle=False, optimizer=SGD(0.1)); seconds = "
                                  "sum of History.seconds (each iteration's step and its "
                                  "epoch figures)")
    say(f"  portanet/plain numpy {ratio:.3f} (goal <= {GOAL})")
    return {"config": {"layers": [784, 10, 10], "dtype": "float64", "samples": m,
                       "iterations": iters, "rounds": plan.full_batch_rounds, "lr": 0.1},
            "rows": rows, "ratio": ratio,
            "goal": {"bound": GOAL, "measured": ratio, "met": ratio <= GOAL}}
