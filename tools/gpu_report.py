"""Summarise a tools/gpu_check.sh run: one markdown file and one log in the results folder.

    python tools/gpu_report.py WORK OUT STAMP BACKEND

WORK holds each step's output (NAME.txt) and exit status (NAME.rc). Writes
OUT/STAMP-gpu-check.md and OUT/STAMP-gpu-check.log; exits 1 when a step failed.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ORDER = ("install", "check", "suite", "bench", "per-sample")


def last_json(text: str) -> dict[str, Any] | None:
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    return None


def version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def gpu_line() -> str:
    if shutil.which("nvidia-smi") is None:
        return "nvidia-smi: not found"
    done = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                           "--format=csv,noheader"], capture_output=True, text=True, check=False)
    return (done.stdout.strip() or done.stderr.strip()).replace("\n", "; ")


def verdict(status: dict[str, int]) -> str:
    failed = [n for n, rc in status.items() if rc]
    return "FAILED: " + ", ".join(failed) if failed else "all steps passed"


def step_names(work: Path) -> list[str]:
    names = [p.stem for p in work.glob("*.rc")]
    return sorted(names, key=lambda n: (ORDER.index(n) if n in ORDER else
                                        ORDER.index("bench") + 0.5, n))


def main(work: Path, out: Path, stamp: str, backend: str) -> int:
    names = step_names(work)
    status = {n: int((work / f"{n}.rc").read_text().strip() or 1) for n in names}
    text = {n: (work / f"{n}.txt").read_text(errors="replace") if (work / f"{n}.txt").exists()
            else "" for n in names}
    cupy = max((version(d) for d in ("cupy-cuda13x", "cupy-cuda12x", "cupy")), key=len)
    lines = [f"# GPU check {stamp} ({backend})", "",
             f"- GPU: {gpu_line()}",
             f"- Python {platform.python_version()}, NumPy {version('numpy')}, CuPy {cupy}, "
             f"PyTorch {version('torch')}, array-api-compat {version('array-api-compat')}",
             f"- verdict: {verdict(status)}",
             "", "| step | exit | result |", "|---|---:|---|"]
    for n in names:
        body = [x for x in text[n].splitlines() if x.strip()]
        result = body[-1] if body else ""
        if n.startswith("example-"):
            found = last_json(text[n]) or {}
            result = (f"test accuracy {found.get('test_accuracy', 0):.2%}, "
                      f"{found.get('seconds', 0):.1f} s, "
                      f"{found.get('samples_per_second', 0):,.0f} samples/s") if found else result
        elif n == "bench":
            found = last_json(text[n])
            result = f"bench/results/{found['run']['json_file']} (and .md)" if found else result
        elif n == "per-sample" and last_json(text[n]):
            result = "microseconds per sample: see below"
        result = result.replace("|", "/")[:160]
        lines.append(f"| {n} | {status[n]} | {result} |")
    if "check" in text:
        table = [x for x in text["check"].splitlines()
                 if x and not x.startswith("checking ")]
        lines += ["", "## portanet check", "", "```", *table, "```"]
    per = last_json(text.get("per-sample", ""))
    if per and "per_sample" in per:
        lines += ["", "## Per-sample SGD (batch 1, the `linear` preset's workload)", "",
                  "| implementation | backend | us/sample | vs plain NumPy |",
                  "|---|---|---:|---:|"]
        figures = {}
        for row in per["per_sample"]["rows"]:
            if "us_per_sample" in row:
                figures.setdefault(row["backend"] + ("" if row["impl"] == "portanet"
                                                     else " (plain)"), row["us_per_sample"])
                lines.append(f"| {row['impl']} | {row['backend']} | {row['us_per_sample']:.1f} "
                             f"| {row.get('ratio_to_plain_numpy', 1.0):.2f} |")
            else:
                lines.append(f"| {row['impl']} | {row['backend']} | skipped: "
                             f"{row.get('skipped', '')[:80]} | |")
        if "cupy" in figures and "numpy" in figures:
            faster = "NumPy (CPU)" if figures["numpy"] < figures["cupy"] else "CuPy (GPU)"
            lines += ["", f"CuPy {figures['cupy']:.1f} us/sample against NumPy "
                          f"{figures['numpy']:.1f} us/sample: {faster} is faster for per-sample "
                          f"SGD on this machine."]
    out.mkdir(parents=True, exist_ok=True)
    summary, log = out / f"{stamp}-gpu-check.md", out / f"{stamp}-gpu-check.log"
    summary.write_text("\n".join(lines) + "\n")
    log.write_text("".join(f"===== {n} (exit {status[n]})\n{text[n]}\n" for n in names))
    print(f"gpu_check: wrote {summary} and {log}")
    return 1 if any(status.values()) else 0


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]))
