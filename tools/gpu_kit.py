"""The runner behind tools/gpu_check.sh: the plan, each step under its own timeout inside one time
budget, one running log, and the summary (markdown + JSON) rewritten after every step and on
exit, SIGTERM included. Standard library only until a step runs; steps run as child processes.

    python3 tools/gpu_kit.py [--cpu] [--dry-run] [--budget S] [--out DIR] [--data DIR]
                             [--backend cupy|torch] [--steps a,b,...]

Files in --out (never more than 6): STAMP-gpu-check.log (every step's output, as it comes),
STAMP-gpu-check.md and .json (the summary), STAMP-gpu-check-tests.xml (junit of the GPU tests),
and the bench step's own STAMP-BACKEND-MODE.json/.md. Everything else goes to a scratch folder.
Exit status: 0 every step that ran passed (skipped steps do not fail a run), 1 a step failed,
2 bad arguments, 3 no usable CUDA device (GPU mode), 143 terminated (SIGTERM).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

ROOT = Path(__file__).resolve().parent.parent
RESERVE = 5.0  # seconds kept back at the end of the budget for the last summary
STOP_GRACE = (("SIGINT", 4.0), ("SIGTERM", 2.0), ("SIGKILL", 2.0))  # how a step is ended
STOP_SECONDS = sum(wait for _, wait in STOP_GRACE)
OFFLINE_ENV = "PORTANET_OFFLINE"
STEP_NAMES = ("probe", "check", "tests", "cnn-fast", "mpi", "bench", "cnn", "per-sample",
              "threads")
MAX_OUT_FILES = 6

# The tests that exercise CuPy: every test on the backend fixture's cupy parameter (marked gpu
# there) and the tests marked gpu by hand; not the CPU-only suite, not MPI (its own step).
GPU_TEST_MARKS = "gpu and not mpi and not network"
# With --backend torch: the tests on the backend fixture's torch parameter (CUDA when PyTorch
# sees a GPU), selected by their id since they carry no marker (plus one schedule test whose
# name says torch).
TORCH_TEST_ARGS = ["-m", "not mpi and not network", "-k",
                   "torch and not numpy and not strict and not cupy"]


DATA_CHECK = """
import sys
from portanet.data import sources, specs
found = sources.find(specs.get_spec("mnist"), None, progress=False)
import os
places = sorted({os.path.dirname(where.split(", stored in ")[-1]) for where, _ in found.values()})
print("MNIST verified in", "; ".join(places)[:300])
"""

RANDOM_DIGITS = """
import sys
import numpy as np
rng = np.random.default_rng(0)
images = rng.integers(0, 256, size=(int(sys.argv[2]), 28, 28), dtype=np.uint8)
labels = rng.integers(0, 10, size=images.shape[0]).astype(np.int64)
cut = images.shape[0] * 5 // 6
np.savez(sys.argv[1], x_train=images[:cut], y_train=labels[:cut], x_test=images[cut:],
         y_test=labels[cut:])
"""


@dataclass
class Step:
    """One step of the plan: a command, its own timeout, the least time worth starting it with."""

    name: str
    what: str
    command: list[str]
    timeout: float
    needs: float
    needs_data: bool = False
    # filled in as it runs
    status: str = "pending"  # pending, running, passed, failed, timed out, skipped, terminated
    rc: int | None = None
    seconds: float | None = None
    note: str = ""
    output: list[str] = field(default_factory=list)
    kernels: int | None = None
    kernel_seconds: float | None = None
    result: dict[str, Any] = field(default_factory=dict)


@dataclass
class Kit:
    args: argparse.Namespace
    stamp: str
    out: Path
    work: Path
    steps: list[Step]
    data_line: str = ""
    has_data: bool = False
    started: float = field(default_factory=time.monotonic)
    started_utc: str = ""
    install_note: str = ""
    current: subprocess.Popen[str] | None = None
    log: TextIO | None = None
    exit_status: int | None = None

    def left(self) -> float:
        return self.args.budget - (time.monotonic() - self.started)

    def path(self, suffix: str) -> Path:
        return self.out / f"{self.stamp}-gpu-check{suffix}"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tools/gpu_check.sh", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", type=float, default=450.0,
                   help="seconds for the whole run, summary included (default 450)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results",
                   help="folder for the result files (default bench/results)")
    p.add_argument("--data", type=Path,
                   help="folder with MNIST's IDX files (.gz or raw); else $PORTANET_DATA or the "
                        "cache; nothing is downloaded")
    p.add_argument("--backend", choices=("cupy", "torch"), default="cupy",
                   help="the GPU backend the examples and bench run on (default cupy)")
    p.add_argument("--cpu", action="store_true",
                   help="rehearse the same plan on NumPy with tiny settings")
    p.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    p.add_argument("--steps", help=f"comma-separated subset of {','.join(STEP_NAMES)}")
    p.add_argument("--python", default=sys.executable, help="the Python the steps run with")
    return p


def plan(args: argparse.Namespace, work: Path, junit: Path, has_data: bool) -> list[Step]:
    """The steps, most proof per minute first, with their commands for this mode."""
    py = args.python
    cpu = args.cpu
    backend = "numpy" if cpu else args.backend
    fast_bench = "--tiny" if cpu else "--quick"
    pytest = [py, "-m", "pytest", "-p", "no:cacheprovider", "-o", "addopts=", "-rfE"]
    mpi_k = "numpy" if cpu else backend
    selection = TORCH_TEST_ARGS if backend == "torch" else ["-m", GPU_TEST_MARKS]
    digits = work / "random-digits.npz"
    cnn_data = [] if has_data else ["--dataset-file", str(digits)]
    steps = [
        Step("probe", "the machine, GPU, driver, CUDA, CuPy and PyTorch",
             [py, "tools/gpu_probe.py", "cpu" if cpu else backend], timeout=60, needs=10),
        Step("check", "portanet check: every backend here (CuPy, PyTorch CUDA included)",
             [py, "-m", "portanet", "check"], timeout=150, needs=20),
        Step("tests", f"the tests that run on {backend} (CuPy: -m gpu), with junit XML",
             [*pytest, "-v", *selection, f"--junitxml={junit}", "tests"],
             timeout=200, needs=40),
        Step("cnn-fast", "examples/cnn_fast.py on full MNIST: accuracy and time",
             [py, "examples/cnn_fast.py", "--backend", backend,
              *(["--limit", "1000", "--epochs", "1"] if cpu else [])],
             timeout=150, needs=40, needs_data=True),
        Step("mpi", "gradient averaging with device arrays: 2 ranks under mpiexec where it "
                    "exists, the same code path in one process otherwise",
             [*pytest, "-v", "tests/test_distributed.py", "-k", mpi_k], timeout=90, needs=20),
        Step("bench", "bench: reference MLP and cnn-fast against PyTorch",
             [py, "-m", "bench", fast_bench, "--backend", backend, "--sections",
              "reference,cnn", "--out", str(args.out), "--no-summary", "--data-timeout", "30",
              "--wait-max", "0", *(["--no-torch"] if cpu else [])],
             timeout=150, needs=40),
        Step("cnn", "a short cnn run: BatchNorm, augmentation and dropout on the device",
             [py, "-m", "portanet", "train", "--model", "cnn", "--epochs", "1", "--limit",
              "2000" if cpu else "10000", "--backend", backend, "--validation", "0",
              "--quiet", "--out", str(work / "cnn-run"), *cnn_data],
             timeout=90, needs=20),
        Step("per-sample", "per-sample SGD on the device against NumPy",
             [py, "-m", "bench", fast_bench, "--backend", backend, "--sections", "per_sample",
              "--no-torch", "--data", "random", "--out", str(work / "per-sample"),
              "--no-summary", "--wait-max", "0"],
             timeout=60, needs=15),
        Step("threads", "the CPU: a cnn-fast epoch at 1, 2, 4, 8 and 16 threads, portanet "
                        "against PyTorch at the same count",
             [py, "-m", "bench.threads", "--no-ranks", "--repeats", "1",
              *(["--threads", "1", "2", "--samples", "512", "--data", "random"] if cpu else
                ["--threads", "1", "2", "4", "8", "16", "--samples", "15360"])],
             timeout=150, needs=30),
    ]
    if args.steps:
        wanted = [s.strip() for s in args.steps.split(",") if s.strip()]
        steps = [s for s in steps if s.name in wanted]
    return steps


# --- running -------------------------------------------------------------------------------


def kernel_cache() -> Path:
    """Where CuPy keeps compiled kernels: $CUPY_CACHE_DIR, else ~/.cupy/kernel_cache."""
    given = os.environ.get("CUPY_CACHE_DIR", "").strip()
    return Path(given) if given else Path.home() / ".cupy" / "kernel_cache"


def cached_kernels() -> int:
    try:
        return sum(1 for p in kernel_cache().iterdir() if p.is_file())
    except OSError:
        return 0


def child_env(kit: Kit) -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(ROOT), str(ROOT / "tools" / "kitsite")]
    env["PYTHONPATH"] = os.pathsep.join(paths + [p for p in [env.get("PYTHONPATH", "")] if p])
    env[OFFLINE_ENV] = "1"  # nothing in the kit waits on the network
    env["GPU_CHECK_KERNEL_LOG"] = str(kit.work / "kernels.jsonl")
    env.setdefault("PYTHONUNBUFFERED", "1")
    # Open MPI refuses to start as root without these (the GPU machine runs commands as root).
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    if kit.args.data is not None:
        env["PORTANET_DATA"] = str(kit.args.data.resolve())
    return env


def say(kit: Kit, line: str) -> None:
    """A line to the terminal (cut when very long: bench's JSON line) and, whole, to the log."""
    shown = line if len(line) <= 400 else f"{line[:300]} ... [{len(line)} characters: see the log]"
    print(shown, flush=True)
    if kit.log is not None:
        kit.log.write(line + "\n")
        kit.log.flush()


def kernel_seconds(kit: Kit) -> tuple[int, float]:
    """Kernels compiled and seconds spent compiling so far, from tools/kitsite's hook."""
    count, seconds = 0, 0.0
    try:
        for line in (kit.work / "kernels.jsonl").read_text().splitlines():
            record = json.loads(line)
            count += int(record["count"])
            seconds += float(record["seconds"])
    except (OSError, ValueError, KeyError):
        pass
    return count, seconds


def run_step(kit: Kit, step: Step) -> None:
    left = kit.left() - RESERVE - STOP_SECONDS  # a step cut at its timeout still ends in time
    if left < step.needs:
        step.status, step.note = "skipped", (f"budget: {max(left, 0):.0f} s left, the step "
                                             f"needs at least {step.needs:.0f} s")
        say(kit, f"== {step.name}: skipped ({step.note})")
        return
    if step.needs_data and not kit.has_data:
        step.status, step.note = "skipped", "needs MNIST (no data given: see --data)"
        say(kit, f"== {step.name}: skipped ({step.note})")
        return
    timeout = min(step.timeout, left)
    say(kit, f"== {step.name} (timeout {timeout:.0f} s): {shlex.join(step.command)}")
    before_files, (before_count, before_secs) = cached_kernels(), kernel_seconds(kit)
    step.status = "running"
    started = time.monotonic()
    proc = subprocess.Popen(step.command, cwd=ROOT, env=child_env(kit), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, errors="replace",
                            start_new_session=True)
    kit.current = proc
    pump = threading.Thread(target=_pump, args=(kit, proc, step), daemon=True)
    pump.start()
    try:
        step.rc = proc.wait(timeout=timeout)
        step.status = "passed" if step.rc == 0 else "failed"
    except subprocess.TimeoutExpired:
        _stop(proc)
        step.rc = proc.returncode
        step.status, step.note = "timed out", f"stopped after {timeout:.0f} s"
    pump.join(timeout=5)
    kit.current = None
    step.seconds = time.monotonic() - started
    after_count, after_secs = kernel_seconds(kit)
    step.kernels = max(cached_kernels() - before_files, after_count - before_count)
    step.kernel_seconds = after_secs - before_secs
    step.result = read_result(kit, step)
    say(kit, f"== {step.name}: {step.status} (exit {step.rc}, {step.seconds:.1f} s)")


def _pump(kit: Kit, proc: subprocess.Popen[str], step: Step) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip("\n")
        step.output.append(line)
        say(kit, line)


def _stop(proc: subprocess.Popen[str]) -> None:
    """End a step and everything it started (mpiexec's ranks included): SIGINT first, so that
    pytest still writes its junit XML and summary, then SIGTERM, then SIGKILL."""
    for name, wait in STOP_GRACE:
        try:
            os.killpg(proc.pid, getattr(signal, name))
        except (ProcessLookupError, PermissionError):
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def last_json(lines: list[str]) -> dict[str, Any] | None:
    for line in reversed(lines):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    return None


def read_result(kit: Kit, step: Step) -> dict[str, Any]:
    """The figures a step produced, for the summary."""
    found = last_json(step.output) or {}
    text = [x for x in step.output if x.strip()]
    if step.name == "probe":
        return found.get("probe", {})
    if step.name in ("tests", "mpi"):
        tail = [x for x in text if " in " in x and any(w in x for w in (
            "passed", "failed", "skipped", "error", "deselected", "no tests ran"))]
        return {"pytest": tail[-1].strip("= ") if tail else (text[-1] if text else "")}
    if step.name == "check":
        return {"table": [x for x in text if not x.startswith("checking ")][-12:]}
    if step.name == "cnn-fast" and found:
        keys = ("test_accuracy", "seconds", "samples_per_second", "epochs", "train_size",
                "backend")
        out = {k: found.get(k) for k in keys}
        if found.get("epochs"):
            out["seconds_per_epoch"] = round(found["seconds"] / found["epochs"], 2)
        return out
    if step.name == "bench" and found:
        return {"json_file": found.get("run", {}).get("json_file"),
                "headline": found.get("headline", {}),
                "data": found.get("run", {}).get("data", {}).get("source"),
                "cnn": {k: v for k, v in found.get("cnn", {}).items()
                        if not isinstance(v, (list, dict))}}
    if step.name == "cnn":  # portanet train's own lines: the epoch, then the test report's
        keep = [x.strip() for x in text if x.startswith("trained ")
                or x.strip().startswith("accuracy")]
        return {"last_line": "; ".join(keep) if keep else (text[-1] if text else "")}
    if step.name == "per-sample" and found:
        return {"rows": found.get("per_sample", {}).get("rows", [])}
    if step.name == "threads" and found:
        return {"rows": found.get("threads", []), "cores": found.get("cores")}
    return {}


# --- the summary ---------------------------------------------------------------------------


def verdict(kit: Kit) -> str:
    failed = [s.name for s in kit.steps if s.status in ("failed", "timed out")]
    skipped = [s.name for s in kit.steps if s.status == "skipped"]
    cut = [s.name for s in kit.steps if s.status in ("terminated", "pending", "running")]
    if failed:
        text = "FAILED: " + ", ".join(failed)
    elif cut and kit.exit_status == 143:
        text = "TERMINATED before: " + ", ".join(cut)
    elif cut:
        text = "in progress"
    else:
        text = "every step that ran passed"
    return text + (f" (skipped: {', '.join(skipped)})" if skipped else "")


def summary_json(kit: Kit) -> dict[str, Any]:
    probe = next((s.result for s in kit.steps if s.name == "probe"), {})
    count = sum(s.kernels or 0 for s in kit.steps)
    secs = sum(s.kernel_seconds or 0.0 for s in kit.steps)
    return {
        "schema": "portanet-gpu-check/1",
        "run": {"mode": "cpu rehearsal" if kit.args.cpu else "gpu",
                "backend": "numpy" if kit.args.cpu else kit.args.backend,
                "started": kit.started_utc, "budget_seconds": kit.args.budget,
                "elapsed_seconds": round(time.monotonic() - kit.started, 1),
                "command": os.environ.get("GPU_CHECK_COMMAND")
                or "tools/gpu_kit.py " + shlex.join(sys.argv[1:]),
                "data": kit.data_line, "install": kit.install_note,
                "verdict": verdict(kit), "exit_status": kit.exit_status},
        "machine": probe,
        "kernels": {"compiled": count, "compile_seconds": round(secs, 2),
                    "cache_dir": str(kernel_cache())},
        "steps": [{"name": s.name, "what": s.what, "status": s.status, "exit": s.rc,
                   "seconds": None if s.seconds is None else round(s.seconds, 1),
                   "timeout": s.timeout, "note": s.note, "kernels_compiled": s.kernels,
                   "kernel_compile_seconds": None if s.kernel_seconds is None
                   else round(s.kernel_seconds, 2), "result": s.result}
                  for s in kit.steps],
    }


def summary_markdown(report: dict[str, Any]) -> str:
    run, machine = report["run"], report["machine"]
    gpu, versions = machine.get("gpu", {}), machine.get("versions", {})
    lines = [f"# GPU check {run['started']} ({run['mode']}, backend {run['backend']})", "",
             f"- data: {run['data']}",
             f"- verdict: {run['verdict']}; {run['elapsed_seconds']} s of a "
             f"{run['budget_seconds']:.0f} s budget",
             f"- GPU: {gpu.get('name', '-')} ({gpu.get('why', 'not probed')}); nvidia-smi: "
             f"{machine.get('nvidia_smi', '-')}; CUDA driver {gpu.get('driver_version', '-')}, "
             f"runtime {gpu.get('runtime_version', '-')}",
             f"- Python {versions.get('python') or '-'}, NumPy {versions.get('numpy') or '-'}, "
             f"CuPy {versions.get('cupy') or '-'}, PyTorch {versions.get('torch') or '-'}, "
             f"array-api-compat {versions.get('array_api_compat') or '-'}",
             f"- CuPy kernels compiled: {report['kernels']['compiled']} in "
             f"{report['kernels']['compile_seconds']} s (cache {report['kernels']['cache_dir']})",
             f"- command: `{run['command']}`", "",
             "| step | status | seconds | kernels | result |", "|---|---|---:|---:|---|"]
    for s in report["steps"]:
        lines.append(f"| {s['name']} | {s['status']}{' (' + s['note'] + ')' if s['note'] else ''}"
                     f" | {s['seconds'] if s['seconds'] is not None else ''} | "
                     f"{s['kernels_compiled'] if s['kernels_compiled'] is not None else ''} | "
                     f"{_result_cell(s)} |")
    for s in report["steps"]:
        if s["name"] == "check" and s["result"].get("table"):
            lines += ["", "## portanet check", "", "```", *s["result"]["table"], "```"]
        if s["name"] == "per-sample" and s["result"].get("rows"):
            lines += ["", "## Per-sample SGD", "", "| implementation | backend | us/sample |",
                      "|---|---|---:|"]
            for row in s["result"]["rows"]:
                figure = row.get("us_per_sample")
                cell = f"{figure:.1f}" if figure is not None else str(row.get("skipped"))[:80]
                lines.append(f"| {row.get('impl')} | {row.get('backend')} | {cell} |")
        if s["name"] == "threads" and s["result"].get("rows"):
            lines += ["", f"## CPU threads ({s['result'].get('cores')} usable cores)", "",
                      "| threads | portanet s | PyTorch s | ratio |", "|---:|---:|---:|---:|"]
            for row in s["result"]["rows"]:
                torch_s, ratio = row.get("torch_median"), row.get("ratio")
                lines.append(f"| {row.get('threads')} | {row.get('portanet_median'):.2f} | "
                             f"{'-' if torch_s is None else f'{torch_s:.2f}'} | "
                             f"{'-' if ratio is None else f'{ratio:.2f}'} |")
    return "\n".join(lines) + "\n"


def _result_cell(s: dict[str, Any]) -> str:
    r = s["result"]
    if "pytest" in r:
        text = r["pytest"]
    elif "test_accuracy" in r:
        text = (f"test accuracy {r['test_accuracy']:.2%}, {r.get('seconds')} s"
                + (f" ({r['seconds_per_epoch']} s/epoch)" if r.get("seconds_per_epoch") else ""))
    elif "json_file" in r:
        ratios = ", ".join(f"{k}: {v.get('measured'):.3g}" for k, v in r["headline"].items()
                           if isinstance(v, dict) and v.get("measured") is not None)
        text = f"{r['json_file']} (data {r.get('data')}); {ratios}"
    elif "gpu" in r:
        text = (r["gpu"].get("name", "no GPU") + ": " + r["gpu"].get("why", ""))[:120]
    elif "rows" in r:
        text = "see below"
    elif r.get("table"):
        text = r["table"][-1]
    else:
        text = r.get("last_line", "") or (s["output_tail"] if "output_tail" in s else "")
    return str(text).replace("|", "/").replace("\n", " ")[:200]


def write_summary(kit: Kit) -> None:
    """Rewrite the markdown and JSON summary (atomically: a kill never leaves half a file)."""
    report = summary_json(kit)
    for suffix, text in ((".json", json.dumps(report, indent=1, default=str) + "\n"),
                         (".md", summary_markdown(report))):
        target = kit.path(suffix)
        temp = target.with_name(f".{target.name}.part")
        temp.write_text(text)
        os.replace(temp, target)


# --- the whole run -------------------------------------------------------------------------


def check_data(kit: Kit) -> None:
    """Whether MNIST is here (the --data folder, $PORTANET_DATA or the cache), offline."""
    try:
        done = subprocess.run([kit.args.python, "-c", DATA_CHECK], cwd=ROOT, env=child_env(kit),
                              capture_output=True, text=True, timeout=60)
        lines = (done.stdout + done.stderr).strip().splitlines()
        ok = done.returncode == 0
    except subprocess.TimeoutExpired:
        lines, ok = ["checking the data took over 60 s"], False
    if ok:
        kit.has_data, kit.data_line = True, lines[-1] if lines else "MNIST verified"
        return
    given = f"--data {kit.args.data}" if kit.args.data else "no --data given"
    reason = next((x for x in lines if x.strip().startswith("- data folder")), "")
    kit.data_line = (f"NO MNIST ({given}; {reason.strip(' -') or (lines[-1] if lines else '')}"
                     f"): steps that need it are skipped, the rest use random data")


def on_sigterm(kit: Kit) -> None:
    def handler(signum: int, frame: Any) -> None:
        proc = kit.current
        if proc is not None:
            _stop(proc)
        for s in kit.steps:
            if s.status in ("running", "pending"):
                s.status = "terminated"
        kit.exit_status = 143
        if kit.log is not None:
            say(kit, "== terminated (SIGTERM): summary written, remaining steps not run")
        if kit.out.is_dir():
            write_summary(kit)
        shutil.rmtree(kit.work, ignore_errors=True)
        os._exit(143)

    signal.signal(signal.SIGTERM, handler)


def execute(kit: Kit) -> int:
    """Run the plan: the log, each step in order within the budget, the summary after each."""
    args = kit.args
    kit.out.mkdir(parents=True, exist_ok=True)
    kit.log = kit.path(".log").open("w", encoding="utf-8")
    kit.log.write(f"gpu_check: {kit.data_line}\n")
    if kit.install_note:
        say(kit, f"gpu_check: {kit.install_note}")
    if not args.cpu and shutil.which("mpiexec") is None:
        say(kit, "gpu_check: no mpiexec here; the mpi step runs the one-process checks")
    if not kit.has_data and any(s.name == "cnn" for s in kit.steps):  # random digits instead
        subprocess.run([args.python, "-c", RANDOM_DIGITS, str(kit.work / "random-digits.npz"),
                        "1200" if args.cpu else "12000"], check=False, timeout=60)
    write_summary(kit)
    for step in kit.steps:
        run_step(kit, step)
        write_summary(kit)
        if step.name == "probe" and step.rc == 3:
            for later in kit.steps[1:]:
                later.status, later.note = "skipped", "no usable CUDA device"
            kit.exit_status = 3
            write_summary(kit)
            say(kit, "gpu_check: no usable CUDA device here (see the probe); "
                     "'tools/gpu_check.sh --cpu' rehearses the steps on NumPy")
            return 3
    failed = any(s.status in ("failed", "timed out") for s in kit.steps)
    kit.exit_status = 1 if failed else 0
    write_summary(kit)
    say(kit, f"gpu_check: {verdict(kit)}; wrote {kit.path('.md')} and the files beside it "
             f"({time.monotonic() - kit.started:.0f} s)")
    return kit.exit_status


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.steps:
        unknown = [s for s in args.steps.split(",") if s.strip() and s.strip() not in STEP_NAMES]
        if unknown:
            print(f"gpu_check: unknown step(s) {', '.join(unknown)}; steps: "
                  f"{','.join(STEP_NAMES)}", file=sys.stderr)
            return 2
    if args.budget <= RESERVE:
        print(f"gpu_check: --budget must exceed {RESERVE:.0f} s", file=sys.stderr)
        return 2
    if args.data is not None and not args.data.exists():
        print(f"gpu_check: --data {args.data} does not exist", file=sys.stderr)
        return 2
    started = dt.datetime.now(dt.timezone.utc)
    stamp = started.strftime("%Y%m%d-%H%M%SZ")
    work = Path(tempfile.mkdtemp(prefix="portanet-gpu-check-"))
    args.out = args.out.resolve()
    kit = Kit(args, stamp, args.out, work, [], started_utc=started.strftime("%Y-%m-%d %H:%M UTC"))
    kit.install_note = os.environ.get("GPU_CHECK_INSTALLED", "")
    try:  # the budget started when tools/gpu_check.sh did (the wheels' install counts)
        kit.started -= max(0.0, time.time() - float(os.environ["GPU_CHECK_STARTED"]))
    except (KeyError, ValueError):
        pass
    on_sigterm(kit)
    try:
        if args.dry_run:
            kit.data_line = (f"MNIST from {args.data} (not checked: dry run)" if args.data else
                             "data not checked (dry run): MNIST from $PORTANET_DATA or the "
                             "cache if there, else the steps that need it are skipped")
            kit.has_data = True
        else:
            check_data(kit)
        junit = kit.path("-tests.xml")
        kit.steps = plan(args, work, junit, kit.has_data)
        print(f"gpu_check: {kit.data_line}", flush=True)  # the first line says what data
        if args.dry_run:
            print(f"gpu_check: plan ({'cpu rehearsal' if args.cpu else 'gpu'}), budget "
                  f"{args.budget:.0f} s, results in {args.out}:")
            for s in kit.steps:
                print(f"== {s.name} (timeout {s.timeout:.0f} s, needs {s.needs:.0f} s"
                      f"{', MNIST' if s.needs_data else ''}): {shlex.join(s.command)}")
            return 0
        return execute(kit)
    finally:
        if kit.log is not None:
            kit.log.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
