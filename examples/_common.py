"""Boilerplate shared by the examples: arguments, data loading, timing and the closing JSON line.

Every example is run as ``python examples/NAME.py [options]`` and also exposes
``main(argv) -> dict`` (what ``tests/test_examples.py`` calls). The last line an example prints
is one JSON object with at least ``test_accuracy``, ``seconds``, ``backend`` and ``epochs``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import portanet
from portanet import recipes
from portanet.backend import BACKEND_NAMES


def make_parser(
    doc: str | None,
    *,
    epochs: int | None = None,
    iterations: int | None = None,
    dtype: str = "float32",
) -> argparse.ArgumentParser:
    """The options every example has; ``epochs`` or ``iterations`` adds that override."""
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", default="auto", choices=BACKEND_NAMES,
                        help="array library to compute with (default: auto, CuPy if a GPU "
                             "is usable, else NumPy)")
    parser.add_argument("--dtype", default=dtype, choices=("float32", "float64"),
                        help=f"float type of weights and activations (default: {dtype})")
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="train on the first N training images only (for quick runs)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the initial weights, shuffling and dropout (default: 0)")
    if epochs is not None:
        parser.add_argument("--epochs", type=int, default=epochs,
                            help=f"passes over the training images (default: {epochs})")
    if iterations is not None:
        parser.add_argument("--iterations", type=int, default=iterations,
                            help=f"full-batch gradient steps (default: {iterations})")
    return parser


@dataclass
class Data:
    """Training and test arrays, already on the backend (pixels scaled to [0, 1])."""

    backend: portanet.Backend
    x_train: Any
    y_train: Any
    x_test: Any
    y_test: Any

    @property
    def train_size(self) -> int:
        return int(self.x_train.shape[0])


def load_data(args: argparse.Namespace, dataset: str = "mnist", first: int | None = None,
              image_shape: tuple[int, ...] | None = None) -> Data:
    """Load MNIST (or ``"fashion"``), keep the first ``first`` / ``--limit`` training images and
    copy everything to the backend chosen by ``--backend`` and ``--dtype``; images are flat
    (N, 784) vectors unless ``image_shape`` (e.g. (1, 28, 28) for a CNN) is given."""
    backend = portanet.get_backend(args.backend, args.dtype, seed=args.seed)
    (x_train, y_train), (x_test, y_test) = portanet.data.load_dataset(dataset)
    keep = [n for n in (first, args.limit) if n is not None]
    if keep:
        x_train, y_train = x_train[: min(keep)], y_train[: min(keep)]
    x_train, y_train = portanet.data.to_device(x_train, y_train, backend, shape=image_shape)
    x_test, y_test = portanet.data.to_device(x_test, y_test, backend, shape=image_shape)
    print(f"backend: {backend.note} ({backend.dtype_name}); "
          f"{x_train.shape[0]:,} training and {x_test.shape[0]:,} test images", flush=True)
    return Data(backend, x_train, y_train, x_test, y_test)


def timed(train: Callable[[], Any]) -> tuple[Any, float, float]:
    """Run ``train()``; return its result, wall seconds and process CPU seconds."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = train()
    return result, time.perf_counter() - wall, time.process_time() - cpu


class PrintEvery(portanet.Callback):
    """Print the training loss and accuracy every ``every`` epochs (full-batch runs)."""

    def __init__(self, every: int) -> None:
        self.every = every

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        if (epoch + 1) % self.every == 0:
            print(f"iteration {epoch + 1}: loss {logs['loss']:.4f}  "
                  f"train accuracy {logs['accuracy']:.4f}", flush=True)


def finish(
    example: str,
    args: argparse.Namespace,
    model: portanet.Sequential,
    data: Data,
    *,
    epochs: int,
    wall: float,
    cpu: float,
    reported: str,
    loss: Any = "softmax_cross_entropy",
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate on the test (and training) set, print a summary and, last, the JSON line."""
    test = portanet.evaluate(model, data.x_test, data.y_test, loss=loss)
    train = portanet.evaluate(model, data.x_train, data.y_train, loss=loss)
    samples = data.train_size * epochs
    result: dict[str, Any] = {
        "example": example,
        "test_accuracy": round(test["accuracy"], 4),
        "train_accuracy": round(train["accuracy"], 4),
        "seconds": round(wall, 2),
        "cpu_seconds": round(cpu, 2),
        "samples_per_second": round(samples / wall) if wall > 0 else None,
        "backend": data.backend.name,
        "dtype": data.backend.dtype_name,
        "epochs": epochs,
        "train_size": data.train_size,
        "seed": args.seed,
        "reported": reported,
    }
    result.update(extra or {})
    print(f"test accuracy {test['accuracy']:.2%}  (train {train['accuracy']:.2%}; "
          f"reference: {reported})")
    print(f"training took {wall:.1f} s wall, {cpu:.1f} s CPU, "
          f"{result['samples_per_second']:,} samples/s")
    print(json.dumps(result), flush=True)
    return result


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv`` (``None``: the command line) and reject a non-positive ``--limit``."""
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be a positive number of images")
    return args


def run_preset(example: str, preset: str, doc: str, target: str,
               argv: Sequence[str] | None) -> dict[str, Any]:
    """The whole of an example that trains one of portanet's presets (``--dataset`` to pick
    MNIST or Fashion-MNIST); ``target`` is the goal printed beside MNIST's test accuracy."""
    recipe = recipes.PRESETS[preset]
    parser = make_parser(doc, epochs=recipe.epochs)
    parser.add_argument("--dataset", choices=("mnist", "fashion"), default="mnist",
                        help="MNIST digits or Fashion-MNIST clothes (default: mnist)")
    args = parse(parser, argv)
    recipe = recipe.replace(epochs=args.epochs)
    data = load_data(args, dataset=args.dataset, image_shape=recipe.input_shape)

    model = recipe.build(data.backend, seed=args.seed, dtype=args.dtype)
    print(model.summary())
    print("recipe:", ", ".join(f"{k}={v}" for k, v in recipe.as_dict().items()
                               if k not in ("description", "reference", "extra")))
    def train() -> None:
        portanet.fit(model, data.x_train, data.y_train, verbose=True,
                     **recipe.fit_arguments(samples=data.train_size, model=model))
        recipe.finish(model, data.x_train)  # cnn-best: BatchNorm on the plain images

    _, wall, cpu = timed(train)
    extra = {"dataset": args.dataset, "recipe": recipe.as_dict()}
    if recipe.test_shift:  # cnn-best: also read each image moved by a pixel each way
        plain = portanet.evaluate(model, data.x_test, data.y_test)["accuracy"]
        print(f"test accuracy on the images alone: {plain:.2%}")
        extra["test_accuracy_images_alone"] = round(plain, 4)
    return finish(example, args, recipe.keep([model]), data, epochs=args.epochs, wall=wall,
                  cpu=cpu, reported=target if args.dataset == "mnist" else "no reference",
                  extra=extra)
