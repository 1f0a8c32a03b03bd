"""Reference C: a 784-512-10 net after the TensorFlow tutorial, reported 92-95% on MNIST test.

The reference rewrites the TensorFlow beginners' tutorial in NumPy: 784 inputs, 512 ReLU units,
10 outputs, softmax cross-entropy, weights drawn as 0.01 * randn, zero biases, plain minibatch
SGD with batches of 64 and learning rate 0.01 for 5 epochs. Such small initial weights and a
small rate learn slowly, so 5 epochs land at the low end of the reported range.

The same network trains much further with momentum and a decaying learning rate:

    python examples/mlp512_tensorflow_tutorial.py                       # reference: 91.17%
    python examples/mlp512_tensorflow_tutorial.py --lr 0.05 --momentum 0.9 --schedule linear
                                                    # same net, same 5 epochs: 97.98%
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from _common import finish, load_data, make_parser, parse, timed

import portanet

REPORTED = "92-95%"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = make_parser(__doc__, epochs=5)
    parser.add_argument("--lr", type=float, default=0.01, help="learning rate (default: 0.01)")
    parser.add_argument("--momentum", type=float, default=0.0,
                        help="SGD momentum (default: 0, plain SGD as in the reference)")
    parser.add_argument("--schedule", choices=("constant", "linear"), default="constant",
                        help="learning rate constant (reference) or falling linearly towards 0")
    args = parse(parser, argv)
    data = load_data(args)

    small = portanet.init.normal(0.01)  # 0.01 * randn
    model = portanet.Sequential(
        [
            portanet.Dense(784, 512, weight_init=small),
            portanet.ReLU(),
            portanet.Dense(512, 10, weight_init=small),
        ],
        backend=data.backend,
        seed=args.seed,
    )
    schedule = portanet.optim.linear_decay(args.lr) if args.schedule == "linear" else None
    _, wall, cpu = timed(lambda: portanet.fit(
        model, data.x_train, data.y_train,
        loss=portanet.losses.softmax_cross_entropy,
        optimizer=portanet.optim.SGD(lr=args.lr, momentum=args.momentum),
        lr_schedule=schedule,
        epochs=args.epochs,
        batch_size=64,
        verbose=True,
    ))
    return finish("mlp512_tensorflow_tutorial", args, model, data, epochs=args.epochs,
                  wall=wall, cpu=cpu, reported=REPORTED,
                  extra={"lr": args.lr, "momentum": args.momentum, "schedule": args.schedule})


if __name__ == "__main__":
    main()
