"""``python -m bench.augment``: what each augmentation adds to a training step.

Milliseconds per batch of MNIST images (batch 128 and 256, one thread and all) for
``RandomShift(2)``, ``RandomAffine`` as ``cnn-best`` draws it, ``ElasticDistortion()`` and the
two composed, beside the time of one ``cnn-best`` training step without augmentation (forward,
backward, update) at the same batch. The baseline is the plain program a user would write: a
loop of ``scipy.ndimage.affine_transform(order=1)`` over the images (when scipy is installed).
Each figure is the median of ``--repeats`` timed calls after one untimed call.

    python -m bench.augment
    python -m bench.augment --batches 256 --repeats 20
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import portanet
from portanet.app.recipes import PRESETS
from portanet.augment import Compose, ElasticDistortion, RandomAffine, RandomShift


def median_ms(call: Callable[[], Any], repeats: int) -> float:
    """The median wall time of ``call`` in milliseconds, after one untimed call."""
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def scipy_loop(images: np.ndarray, degrees: float, rng: np.random.Generator) -> np.ndarray:
    """The plain per-image program: a random rotation and zoom with scipy, bilinear."""
    from scipy import ndimage

    out = np.empty_like(images)
    centre = np.array([13.5, 13.5])
    for i, image in enumerate(images[:, 0]):
        angle = np.radians(rng.uniform(-degrees, degrees))
        scale = rng.uniform(0.9, 1.1)
        inverse = np.array([[np.cos(angle), np.sin(angle)],
                            [-np.sin(angle), np.cos(angle)]]) / scale
        offset = centre - inverse @ centre - rng.uniform(-2, 2, 2)
        out[i, 0] = ndimage.affine_transform(image, inverse, offset=offset, order=1,
                                             mode="grid-constant")
    return out


def step_ms(batch: np.ndarray, labels: np.ndarray, repeats: int, steps: int = 8) -> float:
    """One cnn-best training step (no augmentation) at this batch, in milliseconds: an epoch
    of ``steps`` such batches timed whole, divided by ``steps`` (fit's start-up shared out)."""
    recipe = PRESETS["cnn-best"].replace(epochs=1, rotate=0.0, zoom=0.0, augment_pixels=0,
                                         elastic=0.0, average=0.0)
    model = recipe.build("numpy", seed=0)
    images, targets = np.concatenate([batch] * steps), np.concatenate([labels] * steps)
    arguments = recipe.fit_arguments(samples=len(images))
    arguments.update(epochs=1, batch_size=len(batch), shuffle=False)
    return median_ms(lambda: portanet.fit(model, images, targets, stop_on_interrupt=False,
                                          **arguments), repeats) / steps


def rows(images: np.ndarray, labels: np.ndarray, batches: list[int], repeats: int
         ) -> list[tuple[str, list[float]]]:
    """(name, milliseconds per batch size) for each augmentation and the step."""
    recipe = PRESETS["cnn-best"]
    augments = {
        "RandomShift(2)": RandomShift(2),
        "RandomAffine (cnn-best)": recipe.make_augment(),
        "ElasticDistortion(34, 4)": ElasticDistortion(),
        "Compose(affine, elastic)": Compose(
            RandomAffine(recipe.rotate, (1 - recipe.zoom, 1 + recipe.zoom), translate=2.0),
            ElasticDistortion()),
    }
    backend = portanet.get_backend("numpy", "float32", seed=0)
    table = [(name, [median_ms(lambda a=aug, n=n: a(images[:n], backend), repeats)
                     for n in batches]) for name, aug in augments.items()]
    try:
        import scipy  # noqa: F401

        rng = np.random.default_rng(0)
        table.append(("scipy affine_transform loop (baseline)",
                      [median_ms(lambda n=n: scipy_loop(images[:n], 10.0, rng), repeats)
                       for n in batches]))
    except ImportError:
        pass
    table.append(("cnn-best step without augmentation",
                  [step_ms(images[:n], labels[:n], max(3, repeats // 4)) for n in batches]))
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.augment",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--data", choices=("mnist", "random"), default="mnist",
                        help="random: uniform noise images, no download (the timings are the same)")
    args = parser.parse_args(argv)
    n = max(args.batches)
    if args.data == "mnist":
        (x, y), _ = portanet.data.load_mnist()
    else:
        rng = np.random.default_rng(0)
        x, y = rng.integers(0, 256, (n, 28, 28)), rng.integers(0, 10, n)
    images = (x[:n].reshape(-1, 1, 28, 28) / 255).astype(np.float32)
    print(f"load {os.getloadavg()[0]:.2f}; milliseconds per batch, median of {args.repeats}")
    print("| | " + " | ".join(f"batch {b}" for b in args.batches) + " |")
    print("|---|" + "---:|" * len(args.batches))
    for name, figures in rows(images, y[:n].astype(np.int64), args.batches, args.repeats):
        print(f"| {name} | " + " | ".join(f"{v:.1f}" for v in figures) + " |")
    print(f"load {os.getloadavg()[0]:.2f} at the end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
