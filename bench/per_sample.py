"""Section ``per_sample``: per-sample SGD of the one-layer 784->10 model (reference D) on every
backend available, next to the plain NumPy loop."""

from __future__ import annotations

import importlib.util
import statistics
from typing import Any

import portanet
from bench import workloads
from bench.common import Context, Plan, Say
from bench.timing import measure_quietly, synchronizer

PER_SAMPLE_LR = 0.01
"""Reference D's learning rate."""

GOAL = 1.15
"""portanet on NumPy at most 1.15x the plain loop."""


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
        f"{PER_SAMPLE_LR}, batch 1; ~{plan.per_sample_target_seconds}s per timed run, "
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
                       "optimizer": f"SGD(lr={PER_SAMPLE_LR})", "batch_size": 1, "dtype": "float32",
                       "rounds": plan.per_sample_repeats,
                       "method": "portanet.fit(batch_size=1, shuffle=True) on the first m "
                                 "samples; us/sample = median History.seconds / m; the plain "
                                 "NumPy loop also shuffles once per epoch (one permutation, "
                                 "then the rows X[i]); "
                                 "implementations interleaved round by round, ratios paired "
                                 "per round"},
            "rows": rows_out, "ratios": ratios,
            "goal": {"bound": GOAL, "measured": ratios.get("portanet[numpy]/plain numpy"),
                     "met": (ratios.get("portanet[numpy]/plain numpy") or 99) <= GOAL}}


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
        self.optimizer = portanet.optim.SGD(PER_SAMPLE_LR)

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
        self.floor = workloads.PerSampleNumpyFloor(state["0.W"], state["0.b"], PER_SAMPLE_LR,
                                                   plan.seed)

    def load(self, ctx: Context, m: int) -> None:
        self.m = m
        self.X, self.y = ctx.X_host[:m], ctx.y_host[:m]

    def run(self) -> None:
        self.floor.run(self.X, self.y)

    def describe(self) -> dict[str, Any]:
        return {"impl": "plain numpy inline", "backend": "numpy", "device": "cpu",
                "method": workloads.PER_SAMPLE_FLOOR_METHOD}

