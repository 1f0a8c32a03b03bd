"""The kit's probe: this machine, its GPU, driver, CUDA, CuPy and PyTorch, as one JSON line
(bench's machine facts plus nvidia-smi's line).

    python3 tools/gpu_probe.py cupy|torch|cpu

Exits 3 when the GPU backend named (``cupy``; ``torch``: PyTorch) cannot compute on a CUDA
device here, else 0 (always in ``cpu`` mode).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

from bench.machine import machine_facts


def main(mode: str) -> int:
    if mode == "torch":
        import torch  # noqa: F401 - machine_facts describes PyTorch once it is imported
    facts = machine_facts()
    if shutil.which("nvidia-smi"):
        done = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                               "--format=csv,noheader"], capture_output=True, text=True,
                              timeout=20, check=False)
        facts["nvidia_smi"] = (done.stdout.strip() or done.stderr.strip()).replace("\n", "; ")
    else:
        facts["nvidia_smi"] = "not found"
    gpu = facts["gpu"]
    print("GPU:", gpu.get("name", "none"), "-", gpu["why"])
    print("nvidia-smi:", facts["nvidia_smi"])
    print(json.dumps({"probe": facts}, default=str), flush=True)
    if mode == "torch":
        torch = facts.get("torch") or {}
        print("PyTorch CUDA:", torch.get("cuda_device") or "not available")
        return 0 if torch.get("cuda_available") else 3
    return 0 if gpu.get("usable") or mode == "cpu" else 3


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "cupy"))
