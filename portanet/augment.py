"""Data augmentation applied to each training batch on the device: ``fit(..., augment=...)``.

An augmentation is any callable ``augment(batch, backend) -> batch`` for image batches of shape
(N, C, H, W); its randomness comes from ``backend.rng``, the model's seeded host generator, so
runs repeat exactly. The math is array-API only, so it runs where the model runs.
"""

from __future__ import annotations

from typing import Any

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
        if len(sample_shape) != 3:
            raise ValueError(
                f"RandomShift works on image batches of shape (N, C, H, W), got samples of "
                f"shape {tuple(sample_shape)}; give a CNN its images as "
                f"X.reshape(-1, 1, 28, 28)"
            )
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
