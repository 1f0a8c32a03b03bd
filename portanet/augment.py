"""Data augmentation applied to each training batch on the device: ``fit(..., augment=...)``.

An augmentation is any callable ``augment(batch, backend) -> batch`` for image batches of shape
(N, C, H, W); its randomness comes from ``backend.rng``, the model's seeded host generator, so
runs repeat exactly. The math is array-API only, so it runs where the model runs.

:class:`RandomShift` moves each image by whole pixels (no gathers). :class:`RandomAffine`
rotates, scales, shears and moves each image with bilinear sampling: for every output pixel the
source point ``src = M @ (out - centre) + centre - t`` is read from its four neighbours, zeros
outside the image (as ``scipy.ndimage.affine_transform(..., order=1, mode="grid-constant")``,
which the tests hold it against), ``M`` the inverse of ``scale * shear @ rotation``. It costs
about 10 ms per batch of 256 28x28 images on one core (``RandomShift``: about 2).
:class:`ElasticDistortion` (Simard et al. 2003) reads each output pixel from
``out + alpha * gaussian(noise, sigma)``, a smooth random displacement per image, sampled the
same way. :class:`Compose` applies several in turn.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from portanet.backend import Backend
from portanet.layers.convolution import pad


class RandomShift:
    """Shift each image by a random whole number of pixels, up to ``max_pixels`` in each
    direction (rows and columns drawn independently per image), filling with zeros.

    Done without gathers: the batch is padded once, then for each of the 2 * max_pixels + 1
    possible offsets per axis, the images drawing that offset take that window (``xp.where``
    with a per-image mask).
    """

    def __init__(self, max_pixels: int = 2) -> None:
        if not isinstance(max_pixels, int) or isinstance(max_pixels, bool) or max_pixels < 0:
            raise ValueError(f"RandomShift max_pixels must be an int >= 0, got {max_pixels!r}")
        self.max_pixels = max_pixels

    def check(self, sample_shape: tuple[int, ...]) -> None:
        """Refuse samples that are not images (C, H, W), and a shift that can leave less than
        half of an H x W image (``RandomShift(100)`` on 28x28 digits blanks almost all of
        them). ``fit`` calls this before the first step; each call checks it too."""
        require_images("RandomShift", sample_shape)
        _, h, w = sample_shape
        m = self.max_pixels
        if 2 * (h - m) * (w - m) < h * w or m >= min(h, w):
            largest = max(k for k in range(min(h, w)) if 2 * (h - k) * (w - k) >= h * w)
            raise ValueError(
                f"RandomShift(max_pixels={m}) can move a {h}x{w} image by {m} pixels down and "
                f"across, leaving less than half of it; use at most {largest} pixels for "
                f"{h}x{w} images (1-3 is usual for 28x28 digits)"
            )

    def __call__(self, batch: Any, backend: Backend) -> Any:
        self.check(tuple(batch.shape[1:]))
        m = self.max_pixels
        if m == 0:
            return batch
        xp = backend.xp
        n, c, h, w = batch.shape
        offsets = backend.asarray(backend.rng.integers(0, 2 * m + 1, size=(2, n, 1, 1, 1)))
        padded = pad(xp, batch, (m, m, m, m), axes=(2, 3))
        rows = padded[:, :, 0:h, :]
        for k in range(1, 2 * m + 1):
            rows = xp.where(offsets[0, ...] == k, padded[:, :, k:k + h, :], rows)
        out = rows[:, :, :, 0:w]
        for k in range(1, 2 * m + 1):
            out = xp.where(offsets[1, ...] == k, rows[:, :, :, k:k + w], out)
        return out

    def __repr__(self) -> str:
        return f"RandomShift(max_pixels={self.max_pixels})"


def require_images(owner: str, sample_shape: tuple[int, ...]) -> None:
    """Refuse samples that are not images (C, H, W), naming the augmentation ``owner``."""
    if len(sample_shape) != 3:
        raise ValueError(f"{owner} works on image batches of shape (N, C, H, W), got samples "
                         f"of shape {tuple(sample_shape)}; give a CNN its images as "
                         f"X.reshape(-1, 1, 28, 28)")


def _range(owner: str, name: str, value: Any, low: float, high: float
           ) -> tuple[float, float]:
    """``value`` as a (lo, hi) pair of finite floats within [low, high]."""
    pair = (value, value) if isinstance(value, (int, float)) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, (int, float)) and math.isfinite(v)
                                 for v in pair) or not low <= pair[0] <= pair[1] <= high:
        raise ValueError(f"{owner} {name} must be a number or a pair lo <= hi within "
                         f"[{low}, {high}], got {value!r}")
    return float(pair[0]), float(pair[1])


class RandomAffine:
    """Rotate by up to ``degrees`` either way, scale by a factor drawn from ``scale``, shear
    by up to ``shear`` degrees either way and shift by up to ``translate`` pixels in each
    direction, each image its own draw; bilinear sampling, zeros outside the image."""

    def __init__(self, degrees: float = 10.0, scale: tuple[float, float] = (0.9, 1.1),
                 shear: float = 0.0, translate: float = 0.0) -> None:
        self.degrees = _range("RandomAffine", "degrees", degrees, 0.0, 180.0)[1]
        self.scale = _range("RandomAffine", "scale", scale, 0.1, 10.0)
        self.shear = _range("RandomAffine", "shear", shear, 0.0, 60.0)[1]
        self.translate = _range("RandomAffine", "translate", translate, 0.0, 1e6)[1]

    def check(self, sample_shape: tuple[int, ...]) -> None:
        """Refuse samples that are not images (C, H, W) before the first step."""
        require_images("RandomAffine", sample_shape)

    def draw(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` inverse matrices (n, 2, 2) and shifts (n, 2), in (row, column) order."""
        angle = np.radians(rng.uniform(-self.degrees, self.degrees, n))
        shear = np.radians(rng.uniform(-self.shear, self.shear, n))
        factor = rng.uniform(*self.scale, n)
        shift = rng.uniform(-self.translate, self.translate, (n, 2))
        cos, sin = np.cos(angle), np.sin(angle)
        rotate = np.stack([np.stack([cos, sin], -1), np.stack([-sin, cos], -1)], -2)
        skew = np.zeros((n, 2, 2))
        skew[:, 0, 0] = skew[:, 1, 1] = 1.0
        skew[:, 1, 0] = np.tan(shear)
        forward = factor[:, None, None] * (skew @ rotate)
        return np.linalg.inv(forward), shift

    def __call__(self, batch: Any, backend: Backend) -> Any:
        self.check(tuple(batch.shape[1:]))
        inverse, shift = self.draw(backend.rng, int(batch.shape[0]))
        return warp(backend, batch, inverse, shift)

    def __repr__(self) -> str:
        return (f"RandomAffine(degrees={self.degrees}, scale={self.scale}, shear={self.shear}, "
                f"translate={self.translate})")


class ElasticDistortion:
    """Move each pixel by a smooth random field (Simard et al. 2003): uniform noise in [-1, 1]
    per pixel and axis, blurred by a Gaussian of ``sigma`` pixels (zeros beyond the edge,
    truncated at 4 sigma, as ``scipy.ndimage.gaussian_filter(..., mode="constant")``), times
    ``alpha``; bilinear sampling, zeros outside. Simard's MNIST values are the defaults."""

    def __init__(self, alpha: float = 34.0, sigma: float = 4.0) -> None:
        self.alpha = _range("ElasticDistortion", "alpha", alpha, 0.0, 1e3)[1]
        self.sigma = _range("ElasticDistortion", "sigma", sigma, 0.1, 1e3)[1]

    def check(self, sample_shape: tuple[int, ...]) -> None:
        """Refuse samples that are not images (C, H, W) before the first step."""
        require_images("ElasticDistortion", sample_shape)

    def displacement(self, noise: np.ndarray) -> np.ndarray:
        """``alpha`` times ``noise`` (n, 2, h, w) blurred over its last two axes."""
        h, w = noise.shape[-2:]
        return self.alpha * (gaussian_matrix(h, self.sigma) @ noise
                             @ gaussian_matrix(w, self.sigma).T)

    def __call__(self, batch: Any, backend: Backend) -> Any:
        self.check(tuple(batch.shape[1:]))
        n, _, h, w = (int(d) for d in batch.shape)
        moved = self.displacement(backend.rng.uniform(-1.0, 1.0, (n, 2, h, w)))
        rows, cols = np.mgrid[0:h, 0:w]
        src = np.stack([rows.ravel(), cols.ravel()]).astype(np.float64) + \
            moved.reshape(n, 2, h * w)
        return warp_at(backend, batch, src)

    def __repr__(self) -> str:
        return f"ElasticDistortion(alpha={self.alpha}, sigma={self.sigma})"


def gaussian_matrix(size: int, sigma: float) -> np.ndarray:
    """The (size, size) matrix that blurs a length-``size`` signal by a Gaussian of ``sigma``
    (weights summing to 1 over 4 sigma each way, zeros beyond the ends)."""
    radius = int(4.0 * sigma + 0.5)
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    offset = np.arange(size)[None, :] - np.arange(size)[:, None]
    return np.where(np.abs(offset) <= radius, taps[np.clip(offset + radius, 0, 2 * radius)],
                    0.0)


class Compose:
    """Apply augmentations in turn: ``Compose(RandomAffine(10), ElasticDistortion())``."""

    def __init__(self, *steps: Any) -> None:
        if not steps or not all(callable(step) for step in steps):
            raise ValueError(f"Compose takes one or more augmentations (callables "
                             f"augment(batch, backend)), got {steps!r}")
        self.steps = steps

    def check(self, sample_shape: tuple[int, ...]) -> None:
        """Each step's own check."""
        for step in self.steps:
            check = getattr(step, "check", None)
            if callable(check):
                check(sample_shape)

    def __call__(self, batch: Any, backend: Backend) -> Any:
        for step in self.steps:
            batch = step(batch, backend)
        return batch

    def __repr__(self) -> str:
        return f"Compose({', '.join(map(repr, self.steps))})"


def source_points(inverse: np.ndarray, shift: np.ndarray, h: int, w: int) -> np.ndarray:
    """The (row, column) each output pixel reads: (n, 2, h*w), on the host in float64."""
    rows, cols = np.mgrid[0:h, 0:w]
    centre = np.array([(h - 1) / 2.0, (w - 1) / 2.0])[:, None]
    out = np.stack([rows.ravel(), cols.ravel()]).astype(np.float64) - centre
    return inverse @ out + centre - shift[:, :, None]


def warp(backend: Backend, batch: Any, inverse: np.ndarray, shift: np.ndarray) -> Any:
    """``batch`` (N, C, H, W) resampled at :func:`source_points`, bilinearly, zeros outside."""
    n, c, h, w = batch.shape
    return warp_at(backend, batch, source_points(inverse, shift, h, w))


def warp_at(backend: Backend, batch: Any, src: np.ndarray) -> Any:
    """``batch`` (N, C, H, W) read bilinearly at the host points ``src`` (N, 2, H*W), given
    as (row, column) per output pixel; zeros outside."""
    xp = backend.xp
    n, c, h, w = batch.shape
    top, left = np.floor(src[:, 0]), np.floor(src[:, 1])
    fy, fx = src[:, 0] - top, src[:, 1] - left
    image = (np.arange(n) * (h * w))[:, None]
    out = None
    for dy, dx, weight in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx),
                           (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        r, q = top + dy, left + dx
        inside = (r >= 0) & (r < h) & (q >= 0) & (q < w)
        index = image + np.clip(r, 0, h - 1) * w + np.clip(q, 0, w - 1)
        part = _gathered(backend, batch, index.astype(np.int64).ravel(), n, c, h, w)
        factor = xp.reshape(backend.asarray(np.where(inside, weight, 0.0)), (n, 1, h, w))
        out = part * factor if out is None else out + part * factor
    return out


def _gathered(backend: Backend, batch: Any, index: np.ndarray, n: int, c: int, h: int,
              w: int) -> Any:
    """Each channel of ``batch`` read at the flat (image, row, column) ``index``."""
    xp = backend.xp
    where = backend.asarray(index)
    planes = [xp.reshape(xp.take(xp.reshape(batch[:, k, ...], (n * h * w,)), where, axis=0),
                         (n, 1, h, w)) for k in range(c)]
    return planes[0] if c == 1 else xp.concat(planes, axis=1)
