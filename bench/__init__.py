"""portanet's benchmark suite: ``python -m bench`` (see ``python -m bench --help``).

Sections:

* ``reference``: the 784-1024-10 ReLU MLP on one MNIST epoch (batch 256, SGD lr 0.1, float32),
  timed four ways in the same run: portanet (through :func:`portanet.fit`), the floor (the same
  step written inline with the backend's own arrays), the limit (the step's matrix products
  alone) and PyTorch with the same hyperparameters.
* ``scaling``: portanet's seconds per epoch and peak memory over batch sizes and hidden widths.
* ``per_sample``: per-sample SGD on the one-layer 784->10 model (reference D) on every backend
  available, next to the same loop written as plain NumPy.

Every run writes a JSON file and a markdown summary to ``bench/results/`` and ends its output
with one JSON line holding every figure.
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark command line (what ``python -m bench`` calls)."""
    from bench.cli import main as cli_main

    return cli_main(argv)


__all__ = ["main"]
