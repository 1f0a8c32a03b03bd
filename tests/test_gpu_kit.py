"""tools/gpu_check.sh, rehearsed on the CPU: its syntax, its plan, its stop without CUDA, and the
same steps on NumPy with tiny settings writing the summary the GPU run would write."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from portanet.backend import cuda_status

ROOT = Path(__file__).resolve().parents[1]
KIT = ROOT / "tools" / "gpu_check.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def kit(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHON": sys.executable, **(env or {})}
    return subprocess.run(["bash", str(KIT), *args], capture_output=True, text=True,
                          env=full_env, cwd=ROOT, timeout=300, check=False)


def test_the_script_parses() -> None:
    assert subprocess.run(["bash", "-n", str(KIT)], check=False).returncode == 0


def test_dry_run_lists_every_step_and_writes_nothing(tmp_path: Path) -> None:
    done = kit("--dry-run", "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    for step in ("check: ", "suite: ", "bench: ", "example-best_mlp: ", "per-sample: "):
        assert f"== {step}" in done.stdout
    assert "--backend cupy" in done.stdout and "bench --quick" in done.stdout
    assert not (tmp_path / "out").exists()


def test_bad_arguments_exit_2() -> None:
    assert kit("--steps", "check,dance").returncode == 2
    assert kit("--frobnicate").returncode == 2


@pytest.mark.skipif(cuda_status()[0], reason="a CUDA device is usable here")
def test_without_cuda_it_stops_with_the_reason(tmp_path: Path) -> None:
    done = kit("--steps", "cuda,check", "--out", str(tmp_path))
    assert done.returncode == 3
    assert "no usable CUDA device here" in done.stderr and cuda_status()[1][:40] in done.stderr
    assert "--cpu" in done.stderr and not list(tmp_path.iterdir())


def test_cpu_rehearsal_writes_the_summary_and_the_log(tmp_path: Path) -> None:
    done = kit("--cpu", "--steps", "check,per-sample", "--out", str(tmp_path))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2 and files[0].endswith("-gpu-check.log") \
        and files[1].endswith("-gpu-check.md")
    summary = (tmp_path / files[1]).read_text()
    assert "verdict: all steps passed" in summary
    assert "portanet check: all OK" in summary
    assert "| portanet | numpy |" in summary and "| plain numpy inline | numpy |" in summary


def test_a_failing_step_fails_the_run(tmp_path: Path) -> None:
    failing = tmp_path / "test_failing.py"
    failing.write_text("def test_fails():\n    assert 1 == 2\n")
    out = tmp_path / "out"
    done = kit("--cpu", "--steps", "suite", "--out", str(out),
               env={"GPU_CHECK_SUITE_ARGS": str(failing)})
    assert done.returncode == 1
    (summary,) = out.glob("*-gpu-check.md")
    assert "verdict: FAILED: suite" in summary.read_text()
