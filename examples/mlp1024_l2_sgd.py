"""Reference A: a 784-1024-10 ReLU MLP with L2 and minibatch SGD, reported 97.87% on MNIST test.

The reference is a from-scratch NumPy program: one hidden layer of 1024 ReLU units, softmax
cross-entropy, an L2 penalty 0.5 * reg * sum(W^2) on both weight matrices with reg = 1e-4, and
plain minibatch SGD with batches of 256. Here: He initial weights, learning rate 0.5, 8 epochs,
float32 (the precision does not change the result).

    python examples/mlp1024_l2_sgd.py           # 97.95% here, 23 s on 2 cores (2.9 s/epoch)
    python examples/mlp1024_l2_sgd.py --backend array_api_strict --epochs 1 --limit 5000
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from _common import finish, load_data, make_parser, parse, timed

import portanet

REPORTED = "97.87%"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = make_parser(__doc__, epochs=8)
    parser.add_argument("--lr", type=float, default=0.5, help="learning rate (default: 0.5)")
    args = parse(parser, argv)
    data = load_data(args)

    model = portanet.Sequential(
        [
            portanet.Dense(784, 1024, weight_init="he"),
            portanet.ReLU(),
            portanet.Dense(1024, 10, weight_init="he"),
        ],
        backend=data.backend,
        seed=args.seed,
    )
    _, wall, cpu = timed(lambda: portanet.fit(
        model, data.x_train, data.y_train,
        loss=portanet.losses.softmax_cross_entropy,
        optimizer=portanet.optim.SGD(lr=args.lr),
        l2=1e-4,                      # adds 0.5 * 1e-4 * sum(W^2) over both weight matrices
        epochs=args.epochs,
        batch_size=256,
        verbose=True,
    ))
    return finish("mlp1024_l2_sgd", args, model, data, epochs=args.epochs, wall=wall, cpu=cpu,
                  reported=REPORTED, extra={"seconds_per_epoch": round(wall / args.epochs, 2)
                                            if args.epochs else None})


if __name__ == "__main__":
    main()
