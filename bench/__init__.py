"""portanet's benchmark suite: ``python -m bench`` (see ``python -m bench --help``).

Sections (one module each):

* ``reference`` (:mod:`bench.reference`): the 784-1024-10 ReLU MLP with L2 1e-4 on one MNIST
  epoch (batch 256, SGD lr 0.5, float32), four ways in the same run: portanet (through
  :func:`portanet.fit`), the floor (the fastest plain program a NumPy user writes, see
  :mod:`bench.workloads`), the limit (the step's matrix products alone) and PyTorch; then the
  peak memory of one run of each.
* ``process`` (:mod:`bench.process`): the same program as a whole process, a plain NumPy
  script against the portanet one, timed from outside, alternated.
* ``full_batch`` (:mod:`bench.full_batch`): reference B, 784-10-10 float64 full-batch GD,
  against its plain NumPy transcription.
* ``per_sample`` (:mod:`bench.per_sample`): per-sample SGD of the one-layer 784->10 model on
  every backend available, next to the plain NumPy loop.
* ``scaling`` (:mod:`bench.scaling`): portanet's seconds per epoch and peak memory over batch
  sizes and hidden widths.
* ``--profile`` (:mod:`bench.profile`): where portanet's time goes, phase by phase, next to the
  floor's own step.

Every run writes a JSON file and a markdown summary to ``bench/results/`` and ends its output
with one JSON line holding every figure.
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark command line (what ``python -m bench`` calls)."""
    from bench.cli import main as cli_main

    return cli_main(argv)


__all__ = ["main"]
