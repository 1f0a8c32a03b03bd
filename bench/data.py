"""The benchmark's data: MNIST's 60,000 training images when portanet can load them, else random
data of identical shapes and dtype (timing does not depend on pixel values here)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

MNIST_TRAIN = 60_000
FEATURES = 784
CLASSES = 10

_LOADER = """
import sys
import numpy as np
from portanet.data import load_mnist
try:
    (x, y), _ = load_mnist(progress=False)
except TypeError:
    (x, y), _ = load_mnist()
np.save(sys.argv[1], np.asarray(x))
np.save(sys.argv[2], np.asarray(y))
"""


def random_data(samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8-like pixels scaled to [0, 1] (float32, shape (samples, 784)) and labels 0-9."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(samples, FEATURES), dtype=np.uint8)
    labels = rng.integers(0, CLASSES, size=samples, dtype=np.int64)
    return pixels.astype(np.float32) / np.float32(255.0), labels


def _load_mnist_subprocess(timeout: float) -> tuple[np.ndarray, np.ndarray]:
    """``portanet.data.load_mnist()`` in a child process, so a slow or hung download can be
    cut off after ``timeout`` seconds without leaving a thread busy during the timings."""
    with tempfile.TemporaryDirectory(prefix="portanet-bench-") as tmp:
        images, labels = Path(tmp, "x.npy"), Path(tmp, "y.npy")
        root = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            p for p in (root, os.environ.get("PYTHONPATH", "")) if p))
        proc = subprocess.run([sys.executable, "-c", _LOADER, str(images), str(labels)],
                              capture_output=True, text=True, timeout=timeout, env=env)
        if proc.returncode != 0:
            lines = (proc.stderr or proc.stdout).strip().splitlines()
            raise RuntimeError(lines[-1] if lines else f"exit status {proc.returncode}")
        return np.load(images), np.load(labels)


def load(source: str, samples: int | None, seed: int, timeout: float = 180.0,
         ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Host arrays ``X`` (float32, (n, 784), in [0, 1]) and ``y`` (int64, (n,)), and a record of
    where they came from.

    ``source``: ``"auto"`` (MNIST through ``portanet.data.load_mnist`` if that works, else
    random), ``"mnist"`` (fail if unavailable) or ``"random"``. ``samples`` keeps the first
    ``samples`` rows (default all 60,000).
    """
    n = MNIST_TRAIN if samples is None else int(samples)
    info: dict[str, Any] = {"requested": source}
    if source in ("auto", "mnist"):
        if importlib.util.find_spec("portanet.data") is None:
            reason = "portanet.data does not exist in this checkout"
        else:
            try:
                images, labels = _load_mnist_subprocess(timeout)
                X = images.reshape(images.shape[0], -1)[:n].astype(np.float32) / np.float32(255)
                y = labels[:n].astype(np.int64)
                info.update(source="mnist", samples=int(X.shape[0]),
                            note="MNIST training images via portanet.data.load_mnist()")
                return np.ascontiguousarray(X), y, info
            except subprocess.TimeoutExpired:
                reason = f"load_mnist() took over {timeout:.0f}s"
            except Exception as exc:
                reason = f"load_mnist() failed: {exc}"
        if source == "mnist":
            raise SystemExit(f"--data mnist: {reason}")
        info["fallback_reason"] = reason
    X, y = random_data(n, seed)
    info.update(source="random", samples=n,
                note="random uint8 pixels scaled to [0, 1] and labels 0-9, MNIST's shapes")
    return X, y, info
