"""Section ``process``: the reference program as a whole process, plain NumPy against portanet.

Each program (:mod:`bench.programs.mlp_numpy`, :mod:`bench.programs.mlp_portanet`) runs in its
own Python process, from start-up and imports to the last epoch's test accuracy, on the same
data file; the pair is run ``plan.process_pairs`` times, the order alternated. Each is started
by :mod:`bench.programs.launch`, which times it and reads its user and system CPU time and peak
resident set from ``os.wait4`` (what ``/usr/bin/time -v`` reports). Ratios are
medians of the per-pair ratios. These processes use the whole machine: both pay the same BLAS
thread settings, inherited from this process's environment.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import Context, Plan, Say

GOALS = {"wall": 1.10, "peak_rss": 1.15}
"""portanet's process at most 1.10x the plain script's wall time and 1.15x its peak memory."""

PROGRAMS = {"plain numpy": "bench.programs.mlp_numpy", "portanet": "bench.programs.mlp_portanet"}
ROOT = Path(__file__).resolve().parent.parent


def run_child(module: str, args: list[str]) -> dict[str, Any]:
    """Run ``python -m module args`` through :mod:`bench.programs.launch` and return its wall,
    user and system seconds and peak RSS, and its last line of output."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
    with tempfile.TemporaryDirectory(prefix="portanet-bench-") as tmp:
        result = Path(tmp, "usage.json")
        proc = subprocess.run([sys.executable, "-m", "bench.programs.launch", str(result), module,
                               *args], cwd=ROOT, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{module} exited with {proc.returncode}: "
                               f"{(proc.stderr or proc.stdout).strip()[-500:]}")
        usage = json.loads(result.read_text())
    out = proc.stdout.strip()
    return {**usage, "last_line": out.splitlines()[-1] if out else ""}


def process(ctx: Context, plan: Plan, say: Say) -> dict[str, Any]:
    """The whole-process pair, alternated ``plan.process_pairs`` times."""
    n = ctx.n
    test = min(10_000, n // 6)
    train = n - test if plan.process_samples is None else min(plan.process_samples, n - test)
    images = np.round(ctx.X_host * 255.0).astype(np.uint8)
    labels = ctx.y_host.astype(np.uint8)
    say(f"process: the reference program (784-1024-10, L2 1e-4, SGD lr 0.5, batch 256, "
        f"{plan.process_epochs} epoch(s) on {train:,} images, test accuracy on {test:,} after "
        f"each) as a plain NumPy script and with portanet, {plan.process_pairs} alternated "
        f"pair(s), each a whole Python process")
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in PROGRAMS}
    with tempfile.TemporaryDirectory(prefix="portanet-bench-") as tmp:
        path = str(Path(tmp, "data.npz"))
        np.savez(path, x_train=images[:train], y_train=labels[:train],
                 x_test=images[n - test:], y_test=labels[n - test:])
        for pair in range(plan.process_pairs):
            names = list(PROGRAMS) if pair % 2 == 0 else list(PROGRAMS)[::-1]
            for name in names:
                runs[name].append(run_child(PROGRAMS[name], [path, str(plan.process_epochs)]))
            say(f"  pair {pair + 1}: " + "  ".join(
                f"{name} {rs[-1]['wall_seconds']:.2f}s wall ({rs[-1]['user_seconds']:.1f} user"
                f", {rs[-1]['sys_seconds']:.1f} sys) {rs[-1]['peak_rss_bytes'] / 2**20:,.0f} MiB"
                for name, rs in runs.items()))
    ratios = {}
    for key in ("wall_seconds", "user_seconds", "sys_seconds", "peak_rss_bytes"):
        pairs = zip(runs["portanet"], runs["plain numpy"], strict=True)
        values = [a[key] / b[key] for a, b in pairs if b[key] > 0]
        ratios[key.rsplit("_", 1)[0]] = statistics.median(values) if values else None
    medians = {name: {key: statistics.median(r[key] for r in rs) for key in rs[0]
                      if key != "last_line"} | {"last_line": rs[-1]["last_line"]}
               for name, rs in runs.items()}
    goals = {f"{key} ratio": {"bound": bound, "measured": ratios[key],
                              "met": ratios[key] is not None and ratios[key] <= bound}
             for key, bound in (("wall", GOALS["wall"]), ("peak_rss", GOALS["peak_rss"]))}
    say(f"  portanet/plain numpy: wall {ratios['wall']:.3f}, peak RSS {ratios['peak_rss']:.3f}, "
        f"user {ratios['user']:.3f}, sys {_fmt(ratios['sys'])}")
    return {"config": {"train_samples": train, "test_samples": test,
                       "epochs": plan.process_epochs, "pairs": plan.process_pairs,
                       "programs": PROGRAMS,
                       "method": "each program a whole `python -m` process on the same .npz, "
                                 "started by a small launcher that times it and reads CPU time "
                                 "and peak RSS from os.wait4 (as /usr/bin/time -v); order "
                                 "alternated per pair; ratios are medians of per-pair ratios"},
            "medians": medians, "runs": runs, "ratios": ratios, "goals": goals}


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
