"""The most accurate single network portanet trains here: the ``cnn-best`` preset.

Conv(1->32, 5x5) -> BatchNorm -> MaxPool 2 -> ReLU -> Conv(32->64, 3x3) -> BatchNorm -> ReLU ->
Conv(64->64, 3x3) -> BatchNorm -> MaxPool 2 -> ReLU -> Flatten -> Dense(1024->256) -> BatchNorm
-> ReLU -> Dropout 0.4 -> Dense(256->10), trained with Adam and a one-cycle learning rate on
images rotated, zoomed and shifted at random each step (portanet.augment.RandomAffine, on the
device), with an exponential moving average of the weights
(portanet.averaging.WeightAverage) and BatchNorm's statistics recomputed on the plain images
at the end (portanet.averaging.recalibrate_batchnorm). It is tested reading each image five
ways, as itself and moved by a pixel up, down, left and right, probabilities averaged
(``portanet.ensemble([model], shift=1)``); the accuracy on the images alone is printed too.
The recipe is
``portanet.app.recipes.PRESETS["cnn-best"]``, as in ``portanet train --model cnn-best``;
``portanet train --model cnn-best --ensemble 5`` averages five of them.

Measured on two CPU cores: see examples/RESULTS.md.

    python examples/cnn_best.py --seed 1
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from _common import run_preset


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return run_preset("cnn_best", "cnn-best", __doc__,
                      "goal 99.7% (mean of 3 seeds); record 99.79%", argv)


if __name__ == "__main__":
    main()
