"""The most accurate network portanet trains here: the ``cnn`` preset, with BatchNorm and
random shifts of the training images.

Conv(1->32, 5x5) -> BatchNorm -> ReLU -> MaxPool 2 -> Conv(32->64, 3x3) -> BatchNorm -> ReLU ->
MaxPool 2 -> Flatten -> Dense(1600->256) -> BatchNorm -> ReLU -> Dropout 0.3 -> Dense(256->10),
trained with Adam and a one-cycle learning rate (peak 3e-3), batch 128, on images shifted at
random by up to 2 pixels each step (portanet.augment.RandomShift, on the device). The recipe is
``portanet.recipes.PRESETS["cnn"]``, as in ``portanet train --model cnn``.

Measured on two CPU cores: see examples/RESULTS.md.

    python examples/cnn_best.py                     # MNIST, seed 0
    python examples/cnn_best.py --dataset fashion   # the same recipe on Fashion-MNIST
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from _common import finish, load_data, make_parser, parse, timed

import portanet
from portanet.recipes import PRESETS

RECIPE = PRESETS["cnn"]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = make_parser(__doc__, epochs=RECIPE.epochs)
    parser.add_argument("--dataset", choices=("mnist", "fashion"), default="mnist",
                        help="MNIST digits or Fashion-MNIST clothes (default: mnist)")
    args = parse(parser, argv)
    recipe = RECIPE.replace(epochs=args.epochs)
    data = load_data(args, dataset=args.dataset, image_shape=recipe.input_shape)

    model = recipe.build(data.backend, seed=args.seed, dtype=args.dtype)
    print(model.summary())
    print("recipe:", ", ".join(f"{k}={v}" for k, v in recipe.as_dict().items()
                               if k not in ("description", "reference", "extra")))
    _, wall, cpu = timed(lambda: portanet.fit(
        model, data.x_train, data.y_train, verbose=True,
        **recipe.fit_arguments(samples=data.train_size),
    ))
    target = "goal 99.5% (mean of 3 seeds, each >= 99.4%)" if args.dataset == "mnist" \
        else "no reference"
    return finish("cnn_best", args, model, data, epochs=args.epochs, wall=wall, cpu=cpu,
                  reported=target, extra={"dataset": args.dataset, "recipe": recipe.as_dict()})


if __name__ == "__main__":
    main()
