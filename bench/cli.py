"""``python -m bench``: the command line."""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

SECTIONS = ("reference", "process", "full_batch", "per_sample", "scaling", "cnn")
DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="portanet's benchmarks: the reference MLP epoch against the floor (the "
                    "fastest plain NumPy step), the limit (its matrix products) and PyTorch, "
                    "with peak memory; the whole reference program as a process, plain NumPy "
                    "against portanet; full-batch GD; per-sample SGD; scaling over batch size "
                    "and width. Writes JSON + markdown to --out and ends its output with one "
                    "JSON line holding every figure.",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true",
                      help="short run (a few minutes on 2 cores): partial epochs, scaled")
    mode.add_argument("--tiny", action="store_true",
                      help="seconds-long smoke run on 512 samples, hidden 32 (for tests; the "
                           "figures mean nothing)")
    p.add_argument("--backend", default="auto",
                   choices=("auto", "numpy", "cupy", "torch", "array_api_strict"),
                   help="portanet backend to measure (default auto: CuPy when a CUDA device is "
                        "usable, else NumPy)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help="folder for the result files (default bench/results)")
    p.add_argument("--data", choices=("auto", "mnist", "random"), default="auto",
                   help="auto: MNIST via portanet.data.load_mnist() if it works, else "
                        "random data of the same shapes (default)")
    p.add_argument("--data-timeout", type=float, default=180.0,
                   help="seconds to allow load_mnist() (it may download) before falling back")
    p.add_argument("--samples", type=int, help="use only the first N training samples")
    p.add_argument("--hidden", type=int, help="hidden width of the reference MLP (1024)")
    p.add_argument("--batch-size", type=int, help="batch size of the reference workload (256)")
    p.add_argument("--repeats", type=int, help="timed runs per reference variant")
    p.add_argument("--sections", default=",".join(SECTIONS),
                   help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    p.add_argument("--profile", action="store_true",
                   help="also cProfile one portanet epoch and time its phases next to the "
                        "floor's")
    p.add_argument("--wait-load", type=float, default=1.0,
                   help="before timing, wait for the 1-minute load average to fall below this")
    p.add_argument("--wait-max", type=float,
                   help="longest wait for that in seconds (default 240 for full runs, 0 for "
                        "--quick and --tiny)")
    p.add_argument("--no-retry", action="store_true",
                   help="keep measurements that other processes disturbed instead of waiting "
                        "and measuring again (see bench.timing.QuietPolicy)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-summary", action="store_true",
                   help="do not regenerate SUMMARY.md in --out")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started_wall = time.perf_counter()
    started = dt.datetime.now(dt.timezone.utc)

    def say(line: str) -> None:
        print(line, flush=True)

    from bench import machine

    mode = "quick" if args.quick else "tiny" if args.tiny else "full"
    load_start = machine.load_average()
    wait_max = args.wait_max if args.wait_max is not None else (240.0 if mode == "full" else 0.0)
    wait = machine.wait_for_quiet(args.wait_load, wait_max, say=say) if wait_max > 0 else None

    import portanet
    from bench import common, report
    from bench import data as bench_data

    plan = common.plan_for(mode)
    plan.seed = args.seed
    plan.torch = not args.no_torch
    if args.samples:
        plan.samples = args.samples
    if args.hidden:
        plan.hidden = args.hidden
    if args.batch_size:
        plan.batch = args.batch_size
    if args.repeats:
        plan.ref_repeats = args.repeats
    sections = tuple(s.strip() for s in args.sections.split(",") if s.strip())
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        say(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
        return 2
    plan.sections = sections

    try:
        backend = portanet.get_backend(args.backend, "float32", seed=args.seed)
    except portanet.BackendUnavailableError as exc:
        say(f"backend {args.backend!r} is unavailable: {exc}")
        return 2

    blas_threads = machine.blas_threads()
    torch_threads = common.set_torch_threads(blas_threads) if plan.torch or \
        backend.name == "torch" else None

    X_host, y_host, data_info = bench_data.load(args.data, plan.samples, args.seed,
                                                timeout=args.data_timeout)
    say(f"portanet benchmark ({mode}): backend {backend.name} ({backend.note}); data "
        f"{data_info['source']} {X_host.shape}"
        + (f" [{data_info['fallback_reason']}]" if data_info.get("fallback_reason") else ""))
    facts = machine.machine_facts()
    blas = facts["numpy_blas"]
    runtime = blas.get("runtime") or {}
    say(f"machine: {facts['cpu']['model']}, {facts['cpu']['logical_cores']} cores; NumPy BLAS "
        f"{blas.get('name')} core {runtime.get('core')} x{blas.get('threads')} threads; "
        f"OPENBLAS_CORETYPE={facts['env']['OPENBLAS_CORETYPE']}; torch threads "
        f"{torch_threads}; load {machine.load_average()}")

    ctx = common.make_context(backend, X_host, y_host, blas_threads)
    ctx.torch_threads = torch_threads
    if plan.quiet_retries > 0 and not args.no_retry:
        from bench.timing import QuietPolicy

        ctx.quiet = QuietPolicy(retries=plan.quiet_retries, wait_each=plan.quiet_wait_each,
                                budget=plan.quiet_budget, say=say)
    gpu = facts["gpu"]
    results: dict[str, Any] = {
        "schema": "portanet-bench/1",
        "run": {
            "mode": mode,
            "backend": backend.name,
            "backend_note": backend.note,
            "device": backend.device_name,
            "started": started.strftime("%Y-%m-%d %H:%M:%S UTC"),
            "command": "python -m bench " + " ".join(
                shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)),
            "data": data_info,
            "plan": common.plan_dict(plan),
            "gpu_note": (f"measured on {gpu['name']}" if backend.name == "cupy"
                         else "no GPU figures in this run: " + (
                             gpu["why"] if not gpu.get("usable") else
                             f"a GPU ({gpu['name']}) is usable but backend {backend.name} "
                             "was chosen")),
        },
        "machine": facts,
        "load": {"at_start": load_start, "wait": wait},
    }
    for section in SECTIONS:
        if section in sections:
            module = importlib.import_module(f"bench.{section}")
            results[section] = getattr(module, section)(ctx, plan, say)
    if args.profile:
        from bench.profile import profile

        results["profile"] = profile(ctx, plan, say)
    results["headline"] = report.headline(results)

    results["load"].update(_load_stats(results), at_end=machine.load_average(),
                           quiet_policy=ctx.quiet.as_dict() if ctx.quiet else None)
    results["run"]["wall_seconds"] = time.perf_counter() - started_wall
    stem = f"{started.strftime('%Y%m%d-%H%M%SZ')}-{backend.name}-{mode}"
    results["run"]["json_file"] = f"{stem}.json"
    json_path, md_path = report.write_run(results, args.out, stem)
    summary_path = None if args.no_summary else report.write_summary(args.out)

    say("")
    for line in report.run_markdown(results).splitlines():
        say(line)
    say(f"wrote {json_path}, {md_path}" + (f", {summary_path}" if summary_path else ""))
    print(json.dumps(_final_line(results), separators=(",", ":"), default=str), flush=True)
    return 0


def _load_stats(results: dict[str, Any]) -> dict[str, Any]:
    loads, others = [], []

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            if "load1" in node and "seconds" in node:
                if node["load1"] is not None:
                    loads.append(node["load1"])
                if node.get("others_cores") is not None:
                    others.append(node["others_cores"])
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit({k: v for k, v in results.items() if k in SECTIONS})
    return {"max_load1": max(loads) if loads else None,
            "max_others_cores": max(others) if others else None,
            "timed_runs": len(loads)}


def _final_line(results: dict[str, Any]) -> dict[str, Any]:
    """Every figure and ratio (the whole result minus the long cProfile text)."""
    out = dict(results)
    if "profile" in out:
        out["profile"] = {k: v for k, v in out["profile"].items() if k != "cprofile_text"}
    return out
