"""Reference B: a 784-10-10 net by full-batch gradient descent, alpha 0.1, 500 iterations, reported
84% (dev set) and 85% (training set).

The reference is a from-scratch NumPy notebook: 784 inputs, 10 ReLU units, 10 softmax outputs;
weights and biases drawn from uniform(-0.5, 0.5); every iteration is one gradient step on ALL
training images at once (mean cross-entropy gradient), with learning rate alpha = 0.1, for 500
iterations. It computed in float64 (NumPy's default), which is the default here too so that
times compare like for like; ``--dtype float32`` gives the same 82.98% in 35 s instead of 63 s
here.

Why about 83% here and not 84%: the reference trained on Kaggle's 42,000-image training file,
shuffled, kept 1,000 images as its dev set and reported on those; here the first 41,000 images
of the official training set are used and the score is on the official 10,000-image test set.
With only 10 hidden units and 500 small steps the net is still far from converged, so the final
figure swings by points with the uniform draw of the initial weights: seeds 0, 1 and 2 give
83.0%, 86.1% and 83.6% here (``--seed``); the default seed 0 is not picked for its score.
Its bias gradient, ``np.sum(dZ) / m``, also summed over units (one number shared by every bias);
portanet computes the proper per-unit gradient. The figure is not tuned further on purpose.

    python examples/tiny_full_batch_gd.py                  # 500 iterations on 41,000 images
    python examples/tiny_full_batch_gd.py --iterations 20 --limit 2000 --backend array_api_strict
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from _common import PrintEvery, finish, load_data, make_parser, parse, timed

import portanet

REPORTED = "84% (85% on its training set)"
TRAIN_IMAGES = 41_000


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = make_parser(__doc__, iterations=500, dtype="float64")
    args = parse(parser, argv)
    data = load_data(args, first=TRAIN_IMAGES)

    uniform = portanet.init.uniform(-0.5, 0.5)
    model = portanet.Sequential(
        [
            portanet.Dense(784, 10, weight_init=uniform, bias_init=uniform),
            portanet.ReLU(),
            portanet.Dense(10, 10, weight_init=uniform, bias_init=uniform),
        ],
        backend=data.backend,
        seed=args.seed,
    )
    _, wall, cpu = timed(lambda: portanet.fit(
        model, data.x_train, data.y_train,
        loss=portanet.losses.softmax_cross_entropy,
        optimizer=portanet.optim.SGD(lr=0.1),   # alpha
        epochs=args.iterations,                 # one full-batch step per epoch
        batch_size=None,                        # None = all images in every step
        callbacks=[PrintEvery(50)],
    ))
    return finish("tiny_full_batch_gd", args, model, data, epochs=args.iterations, wall=wall,
                  cpu=cpu, reported=REPORTED, extra={"iterations": args.iterations})


if __name__ == "__main__":
    main()
