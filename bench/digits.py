"""``python -m bench.digits``: the own-digit reader on pictures that stand for real scans.

MNIST test digits are rendered the ways real scans and photos differ from MNIST: low
resolution (area-averaged down to 8, 12 or 16 px, then enlarged bilinearly to 64 px), dark
ink on light paper, blurred, thin and thick pens, strokes broken by a 1-3 px gap, digits
touching the picture's border, and the eleven synthetic scenes (uneven light, ruled lines,
stains: tests/test_images_scenes.py). Each picture goes through the reader
(:func:`portanet.reader.digit.prepare_digit`, what ``portanet predict`` and the draw page use)
and a model; the table gives, per kind: refused, right, wrong.

The models are trained here, with a fixed seed, on MNIST's training set (``cnn-fast``: two
epochs, about 20 s on two cores; ``mlp512``), unless ``--model PATH`` names saved ones. Only
test digits that the model classifies right as they are (28x28 MNIST) are used, so what goes
wrong is the reader's doing, not the model's.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

#: Digits a broken stroke is drawn into, and where the gap goes: ("rows" or "cols", the share
#: of the ink's height or width it crosses at).
BREAKS = {4: ("rows", 0.42), 7: ("rows", 0.3), 8: ("cols", 0.3), 5: ("cols", 0.45)}
PAGE = (240, 220)


def _pil() -> Any:
    from PIL import Image

    return Image


def resized(ink: np.ndarray, shape: tuple[int, int], method: str = "BILINEAR") -> np.ndarray:
    """``ink`` (float, 0..1) resized to ``shape`` (rows, cols) with Pillow's ``method``."""
    image = _pil()
    out = image.fromarray(ink.astype(np.float32)).resize(
        (shape[1], shape[0]), getattr(image.Resampling, method))
    return np.clip(np.asarray(out, dtype=np.float64), 0.0, 1.0)


def on_paper(ink: np.ndarray, paper: float = 0.9, pen: float = 0.12, seed: int = 0,
             grain: float = 0.015) -> np.ndarray:
    """Ink (1 = pen) as a dark-on-light picture: light paper with a little grain."""
    noise = np.random.default_rng(seed).normal(0.0, grain, ink.shape)
    return np.clip(paper - (paper - pen) * ink + noise, 0.0, 1.0)


def placed(shape: tuple[int, int], *marks: tuple[np.ndarray, int, int]) -> np.ndarray:
    """Ink marks placed at (top, left) on an empty ink map of ``shape``."""
    out = np.zeros(shape)
    for ink, top, left in marks:
        h, w = ink.shape
        out[top:top + h, left:left + w] = np.maximum(out[top:top + h, left:left + w], ink)
    return out


def tight(digit: np.ndarray) -> np.ndarray:
    """An MNIST digit (0..1) cropped to its ink and padded to a square on the shorter side
    only: the digit touches the border on its longer side."""
    rows = np.flatnonzero(digit.max(axis=1) > 0.1)
    cols = np.flatnonzero(digit.max(axis=0) > 0.1)
    ink = digit[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    h, w = ink.shape
    side = max(h, w)
    return placed((side, side), (ink, (side - h) // 2, (side - w) // 2))


def low_res(digit: np.ndarray, pixels: int, size: int = 64) -> np.ndarray:
    """Area-averaged down to ``pixels`` square, enlarged bilinearly to ``size``: a
    low-resolution original, scanned and upscaled."""
    return resized(resized(digit, (pixels, pixels), "BOX"), (size, size))


def broken(digit: np.ndarray, label: int, gap: int) -> np.ndarray:
    """The digit with a ``gap`` px band of its 28x28 picture erased across its strokes
    (BREAKS says where for each label)."""
    axis, at = BREAKS[label]
    out = digit.copy()
    ink = np.flatnonzero((digit.max(axis=1) if axis == "rows" else digit.max(axis=0)) > 0.1)
    start = int(round(ink[0] + at * (ink[-1] - ink[0])))
    if axis == "rows":
        out[start:start + gap, :] = 0.0
    else:
        out[:, start:start + gap] = 0.0
    return out


def pen(digit: np.ndarray, size: int, width: float) -> np.ndarray:
    """The digit's centre line redrawn with a pen ``width`` px wide on a ``size`` px
    picture: a thin or a thick pen."""
    from scipy import ndimage as ndi
    from skimage.morphology import skeletonize

    big = resized(digit, (size, size))
    centre = skeletonize(big > 0.5)
    distance = ndi.distance_transform_edt(~centre)
    return np.clip(width / 2 + 0.5 - distance, 0.0, 1.0)


def _page(digit: np.ndarray, seed: int = 0) -> np.ndarray:
    """The scenes' clean page: the digit enlarged to 130 px at (60, 50) on a 240x220 page."""
    return on_paper(placed(PAGE, (resized(digit, (130, 130)), 60, 50)), seed=seed)


def gradient(lo: float = 0.3, axis: int = 1) -> np.ndarray:
    ramp = np.linspace(1.0, lo, PAGE[axis])
    return np.broadcast_to(ramp if axis == 1 else ramp[:, None], PAGE)


def spotlight(lo: float = 0.25) -> np.ndarray:
    yy, xx = np.mgrid[: PAGE[0], : PAGE[1]]
    r = np.hypot(yy / PAGE[0] - 0.3, xx / PAGE[1] - 0.35)
    return lo + (1 - lo) * np.exp(-((r / 0.45) ** 2))


def shadow(level: float = 0.4, at: float = 0.5, soft: float = 6.0, axis: int = 1) -> np.ndarray:
    n = PAGE[axis]
    light = level + (1 - level) / (1 + np.exp(-(np.arange(n) - at * n) / soft))
    return np.broadcast_to(light if axis == 1 else light[:, None], PAGE)


def ruled(page: np.ndarray, darkness: float = 0.35, margin: bool = False) -> np.ndarray:
    out = page.copy()
    for row in range(12, out.shape[0], 32):
        out[row:row + 2, :] *= 1 - darkness
    if margin:
        out[:, 20:22] *= 0.6
    return out


def stained(page: np.ndarray, centre: tuple[int, int], radii: tuple[int, int],
            darkness: float, soft: float) -> np.ndarray:
    yy, xx = np.mgrid[: page.shape[0], : page.shape[1]]
    d = np.hypot((yy - centre[0]) / radii[0], (xx - centre[1]) / radii[1])
    return page * (1 - darkness * np.clip((1 - d) * max(radii) / soft, 0, 1))


SCENES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "gradient": lambda p: p * gradient(),
    "gradient-down": lambda p: p * gradient(0.35, axis=0),
    "spotlight": lambda p: p * spotlight(),
    "half-in-shadow": lambda p: p * shadow(),
    "sharp-shadow-across-the-digit": lambda p: p * shadow(0.45, at=0.45, soft=0.5),
    "shadow-from-the-top": lambda p: p * shadow(at=0.3, axis=0),
    "faint-ruled-lines": ruled,
    "dark-ruled-lines-and-margin": lambda p: ruled(p, darkness=0.7, margin=True),
    "ruled-and-gradient": lambda p: ruled(p) * gradient(0.4),
    "coffee-stain": lambda p: stained(p, (200, 185), (22, 16), 0.35, 3.0),
    "ink-blot": lambda p: stained(p, (40, 190), (9, 9), 0.9, 1.5),
}
"""The eleven synthetic scenes: a function of the clean page (a dark-on-light picture)."""

Render = Callable[[np.ndarray, int, int], np.ndarray]
"""A kind: (MNIST digit as 0..1 floats, its label, a seed) -> a picture of it in [0, 1]."""

KINDS: dict[str, Render] = {
    "plain scan": lambda d, y, s: on_paper(placed((128, 128), (resized(d, (100, 100)), 14, 14)),
                                           seed=s),
    "low-res 8 px": lambda d, y, s: 1.0 - low_res(d, 8),
    "low-res 12 px": lambda d, y, s: 1.0 - low_res(d, 12),
    "low-res 16 px": lambda d, y, s: 1.0 - low_res(d, 16),
    "low-res 8 px, touching the border": lambda d, y, s: 1.0 - low_res(tight(d), 8),
    "touching the border": lambda d, y, s: on_paper(resized(tight(d), (96, 96)), seed=s),
    "blurred": lambda d, y, s: on_paper(_blurred(resized(d, (112, 112)), 3.0), seed=s),
    "thin pen": lambda d, y, s: on_paper(pen(d, 140, 2.0), seed=s),
    "thick pen": lambda d, y, s: on_paper(pen(d, 112, 13.0), seed=s),
    "broken stroke 1 px": lambda d, y, s: on_paper(resized(broken(d, y, 1), (112, 112)), seed=s),
    "broken stroke 2 px": lambda d, y, s: on_paper(resized(broken(d, y, 2), (112, 112)), seed=s),
    "broken stroke 3 px": lambda d, y, s: on_paper(resized(broken(d, y, 3), (112, 112)), seed=s),
    "broken, low-res 16 px": lambda d, y, s: 1.0 - low_res(broken(d, y, 2), 16),
} | {f"scene: {name}": (lambda d, y, s, scene=scene: scene(_page(d, s)))
     for name, scene in SCENES.items()}
"""Every kind of picture, by name. The broken-stroke kinds are only drawn for the labels in
BREAKS (4, 7, 8, 5)."""


def _blurred(ink: np.ndarray, sigma: float) -> np.ndarray:
    from scipy import ndimage as ndi

    out = ndi.gaussian_filter(ink, sigma)
    return out / max(float(out.max()), 1e-12)


def applies(kind: str, label: int) -> bool:
    """Whether ``kind`` is drawn for a digit of ``label`` (broken strokes: 4, 7, 8, 5)."""
    return not kind.startswith("broken") or label in BREAKS


def render(kind: str, digit: np.ndarray, label: int, seed: int = 0) -> np.ndarray:
    """The MNIST ``digit`` (uint8 28x28) as a picture of ``kind``, in [0, 1]."""
    return KINDS[kind](digit.astype(np.float64) / 255.0, int(label), seed)


def trained(preset: str, seed: int = 0, verbose: bool = True) -> Any:
    """A model of ``preset`` trained on MNIST's training set with ``seed`` (NumPy backend)."""
    import portanet as pn
    from portanet.app.recipes import get_recipe

    recipe = get_recipe(preset)
    (x_train, y_train), _ = pn.data.load_mnist()
    shape = recipe.input_shape or (784,)
    X = (x_train.reshape(-1, *shape) / 255.0).astype(np.float32)
    model = recipe.build(backend="numpy", seed=seed)
    start = time.perf_counter()
    pn.fit(model, X, y_train.astype(np.int64), verbose=False,
           **recipe.fit_arguments(len(X)))
    if verbose:
        print(f"trained {preset} here (seed {seed}) in {time.perf_counter() - start:.0f} s")
    return model


def classify(model: Any, images: np.ndarray) -> np.ndarray:
    """The labels ``model`` gives 28x28 images in [0, 1]."""
    import portanet as pn

    shape = (1, 28, 28) if model.input_shape == (1, 28, 28) else (784,)
    return np.asarray(pn.predict(model, images.reshape(-1, *shape).astype(np.float32)))


def score(model: Any, kind: str, digits: np.ndarray, labels: np.ndarray,
          count: int) -> tuple[int, int, int, int]:
    """(digits drawn, refused, right, wrong) for the first ``count`` of ``digits`` that
    ``kind`` applies to, read by the own-digit reader and classified by ``model``."""
    from portanet.reader.digit import prepare_digit

    chosen = [i for i in range(len(digits)) if applies(kind, labels[i])][:count]
    prepared, wanted, refused = [], [], 0
    for i in chosen:
        try:
            prepared.append(prepare_digit(render(kind, digits[i], labels[i], seed=i)))
            wanted.append(labels[i])
        except ValueError:
            refused += 1
    right = int(np.sum(classify(model, np.array(prepared)) == np.array(wanted))) \
        if prepared else 0
    return len(chosen), refused, right, len(prepared) - right


def test_digits(model: Any, candidates: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """MNIST test digits (of the first ``candidates``) that ``model`` classifies right."""
    import portanet as pn

    _, (x_test, y_test) = pn.data.load_mnist()
    x, y = x_test[:candidates], y_test[:candidates]
    ok = classify(model, x / 255.0) == y
    return x[ok], y[ok]


def table(results: dict[str, dict[str, tuple[int, int, int, int]]]) -> str:
    """A Markdown table: one row per kind, refused / right / wrong per preset."""
    presets = list(results)
    head = "| kind | n | " + " | ".join(f"{p}: refused | right | wrong" for p in presets)
    lines = [head + " |", "|---|---:|" + "---:|---:|---:|" * len(presets)]
    for kind in results[presets[0]]:
        n = results[presets[0]][kind][0]
        cells = " | ".join(f"{r} | {ok} | {bad}" for _, r, ok, bad in
                           (results[p][kind] for p in presets))
        lines.append(f"| {kind} | {n} | {cells} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.digits", description=__doc__)
    parser.add_argument("--presets", default="cnn-fast,mlp512",
                        help="presets to train here (default: cnn-fast,mlp512)")
    parser.add_argument("--model", action="append", default=[],
                        help="a saved model to use instead (repeatable)")
    parser.add_argument("--per-kind", type=int, default=40, help="digits per kind (default 40)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    import portanet as pn

    models = {path: pn.load(path, backend="numpy") for path in args.model} or {
        preset: trained(preset, args.seed) for preset in args.presets.split(",")}
    results: dict[str, dict[str, tuple[int, int, int, int]]] = {}
    for name, model in models.items():
        digits, labels = test_digits(model)
        results[name] = {kind: score(model, kind, digits, labels, args.per_kind)
                         for kind in KINDS}
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
