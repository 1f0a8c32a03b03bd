"""The benchmark machinery (``python -m bench``) on tiny sizes: it runs, writes its files and
ends with one JSON line holding the expected figures. No timing assertions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_tiny_run_writes_results_and_ends_with_json(tmp_path: Path) -> None:
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--tiny", "--data", "random", "--backend", "numpy",
         "--out", str(out), "--wait-max", "0", "--profile"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    result = json.loads(last)

    assert result["run"]["mode"] == "tiny"
    assert result["run"]["backend"] == "numpy"
    assert result["run"]["data"]["source"] == "random"
    for key in ("cpu", "numpy_blas", "env", "gpu", "versions"):
        assert key in result["machine"]
    assert "OPENBLAS_CORETYPE" in result["machine"]["env"]
    assert result["load"]["at_start"] is not None

    ref = result["reference"]
    assert ref["config"]["epoch_samples"] == 512
    for name in ("portanet", "floor", "limit"):
        assert ref[name]["seconds_per_epoch"] > 0
        assert ref[name]["samples_per_second"] > 0
    assert "seconds_per_epoch" in ref["torch"] or "skipped" in ref["torch"]
    for key in ("portanet/floor", "portanet/limit", "portanet/torch"):
        assert key in ref["ratios"]
    assert ref["ratios"]["portanet/floor"] > 0
    assert set(ref["ratios_of_medians"]) == set(ref["ratios"])
    assert set(ref["ratios_of_minimums"]) == set(ref["ratios"])
    assert set(ref["goals"]) == {"portanet/floor", "portanet/limit", "portanet/torch"}

    rows = result["scaling"]["rows"]
    assert {(r["hidden"], r["batch_size"]) for r in rows} == {
        (h, b) for h in (16, 32) for b in (1, 64, 512)
    }
    for r in rows:
        assert r["seconds_per_epoch"] > 0
        assert r["peak_memory_bytes"] is not None and r["peak_memory_bytes"] >= 0

    per_sample = {(r["impl"], r["backend"]): r for r in result["per_sample"]["rows"]}
    assert per_sample[("portanet", "numpy")]["us_per_sample"] > 0
    assert per_sample[("plain numpy inline", "numpy")]["us_per_sample"] > 0
    assert "portanet[numpy]/plain numpy" in result["per_sample"]["ratios"]

    phases = result["profile"]["phases"]
    assert phases["portanet"]["total"] > 0 and phases["floor"]["total"] > 0
    assert "backward 1 ReLU" in phases["portanet"] and "backward 1 ReLU" in phases["floor"]
    assert result["profile"]["cprofile_top"]

    json_files = list(out.glob("*-numpy-tiny.json"))
    assert len(json_files) == 1
    assert json.loads(json_files[0].read_text())["reference"]["ratios"] == ref["ratios"]
    assert json_files[0].with_suffix(".md").exists()
    assert "Reference workload" in (out / "SUMMARY.md").read_text()
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporary files
