"""``python -m bench.threads``: the data-parallel engine on one machine, against PyTorch.

One epoch of a preset (``cnn-fast`` by default, its batch, a slice of MNIST) at each thread
count (``fit(threads=T)``, every worker's BLAS held to one thread), paired with PyTorch at the
same count (``torch.set_num_threads(T)``), in turn; and the same epoch on MPI ranks of one
thread each (``mpiexec -n R``), where mpiexec and mpi4py are installed. By default the counts
run from 1 to twice the cores this process may use (past the cores: correct, and the figures
say what it costs). Prints a table; ``--out`` keeps it as JSON and Markdown.

    python -m bench.threads                         # 1 .. 2x cores, ranks 1 .. cores
    python -m bench.threads --threads 1 2 4 8 16 --no-ranks --samples 15360
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def portanet_epoch(preset: str, threads: int, X: Any, y: Any, comm: Any = None) -> float:
    """Seconds of one epoch of the preset on ``threads`` workers (BLAS on one thread each)."""
    from threadpoolctl import threadpool_limits

    import portanet
    from portanet.app.recipes import PRESETS

    recipe = PRESETS[preset].replace(epochs=1, augment_pixels=0)
    model = recipe.build(portanet.get_backend("numpy", "float32", seed=0), seed=0)
    with threadpool_limits(limits=1, user_api="blas"):
        history = portanet.fit(model, X, y, threads=threads, comm=comm, stop_on_interrupt=False,
                               **recipe.fit_arguments(samples=int(X.shape[0])))
    return history.seconds[0]


def torch_epoch(preset: str, threads: int, X: Any, y: Any) -> float:
    """Seconds of the same epoch in PyTorch on ``threads`` threads."""
    import torch

    from bench.cnn import torch_epoch as epoch

    torch.set_num_threads(threads)
    return epoch(X, y, seed=0, preset=preset)


def data(samples: int, source: str = "auto") -> tuple[Any, Any]:
    from bench import data as bench_data

    X, y, _ = bench_data.load(source, samples, seed=0)
    return X.reshape(-1, 1, 28, 28), y


def thread_rows(preset: str, counts: list[int], X: Any, y: Any, repeats: int,
                torch: bool) -> list[dict[str, Any]]:
    rows = []
    for threads in counts:
        mine, theirs = [], []
        for _ in range(repeats):
            mine.append(portanet_epoch(preset, threads, X, y))
            if torch:
                theirs.append(torch_epoch(preset, threads, X, y))
        row = {"threads": threads, "portanet_seconds": mine, "torch_seconds": theirs,
               "portanet_median": statistics.median(mine),
               "torch_median": statistics.median(theirs) if theirs else None}
        row["ratio"] = (row["portanet_median"] / row["torch_median"]
                        if row["torch_median"] else None)
        print(f"  threads {threads:>2}: portanet {row['portanet_median']:6.2f} s"
              + (f", PyTorch {row['torch_median']:6.2f} s, ratio {row['ratio']:.2f}"
                 if row["ratio"] else ""), flush=True)
        rows.append(row)
    return rows


def rank_rows(preset: str, counts: list[int], samples: int,
              source: str) -> list[dict[str, Any]]:
    mpiexec = shutil.which("mpiexec") or shutil.which(str(Path(sys.executable).with_name(
        "mpiexec")))
    if mpiexec is None:
        print("  ranks: no mpiexec here (pip install \"portanet[mpi]\"); skipped")
        return []
    rows = []
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    for ranks in counts:
        done = subprocess.run([mpiexec, "-n", str(ranks), sys.executable, "-m", "bench.threads",
                               "--rank-worker", preset, str(samples), source],
                              capture_output=True,
                              text=True, env=env, cwd=ROOT, timeout=900)
        if done.returncode != 0:
            print(f"  ranks {ranks}: failed: {done.stderr.strip()[-300:]}")
            continue
        seconds = json.loads(done.stdout.strip().splitlines()[-1])["seconds"]
        print(f"  ranks {ranks:>2}: portanet {seconds:6.2f} s", flush=True)
        rows.append({"ranks": ranks, "portanet_seconds": seconds})
    return rows


def rank_worker(preset: str, samples: int, source: str) -> None:
    """Inside mpiexec: one epoch on this rank's share; rank 0 prints the seconds as JSON."""
    from portanet.parallel import mpi

    comm = mpi.world()
    X, y = data(samples, source)
    seconds = portanet_epoch(preset, 1, X, y, comm=comm)
    if comm.is_root:
        print(json.dumps({"seconds": seconds}))


def markdown(result: dict[str, Any]) -> str:
    lines = [f"# Threads and ranks: {result['preset']}, {result['samples']:,} images",
             "", f"{result['when']}; {result['cores']} usable cores; {result['machine']}", "",
             "| threads | portanet s | PyTorch s | ratio |", "|---:|---:|---:|---:|"]
    for row in result["threads"]:
        torch_s = f"{row['torch_median']:.2f}" if row["torch_median"] else "-"
        ratio = f"{row['ratio']:.2f}" if row["ratio"] else "-"
        lines.append(f"| {row['threads']} | {row['portanet_median']:.2f} | {torch_s} | {ratio} |")
    if result["ranks"]:
        lines += ["", "| MPI ranks (1 thread each) | portanet s |", "|---:|---:|"]
        lines += [f"| {r['ranks']} | {r['portanet_seconds']:.2f} |" for r in result["ranks"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--rank-worker"]:
        rank_worker(argv[1], int(argv[2]), argv[3])
        return 0
    from portanet.parallel.engine import usable_cores

    cores = usable_cores()
    p = argparse.ArgumentParser(prog="python -m bench.threads", description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="cnn-fast", choices=["cnn-fast", "cnn"])
    p.add_argument("--samples", type=int, default=7680, help="images per epoch")
    p.add_argument("--threads", type=int, nargs="+", default=list(range(1, 2 * cores + 1)))
    p.add_argument("--ranks", type=int, nargs="+", default=list(range(1, cores + 1)))
    p.add_argument("--no-ranks", action="store_true")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--data", default="auto", choices=["auto", "mnist", "random"])
    p.add_argument("--out", type=Path, help="folder for threads-<time>.json and .md")
    args = p.parse_args(argv)
    X, y = data(args.samples, args.data)
    torch = not args.no_torch and importlib.util.find_spec("torch") is not None
    print(f"threads: one {args.preset} epoch of {args.samples:,} images; {cores} usable cores; "
          f"load {os.getloadavg()[0]:.2f}"
          + ("" if torch or args.no_torch else "; PyTorch is not installed: portanet only"),
          flush=True)
    result = {"preset": args.preset, "samples": args.samples, "cores": cores,
              "when": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "machine": f"{os.cpu_count()} CPUs, {sys.platform}",
              "threads": thread_rows(args.preset, args.threads, X, y, args.repeats, torch),
              "ranks": [] if args.no_ranks else rank_rows(args.preset, args.ranks,
                                                          args.samples, args.data),
              "load_at_end": os.getloadavg()[0]}
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        stem = args.out / f"threads-{time.strftime('%Y%m%d-%H%M%SZ', time.gmtime())}"
        stem.with_suffix(".json").write_text(json.dumps(result, indent=1))
        stem.with_suffix(".md").write_text(markdown(result))
        print(f"written: {stem}.json, {stem}.md")
    print(json.dumps(result))  # the last line: what tools/gpu_kit.py reads
    return 0


if __name__ == "__main__":
    sys.exit(main())
