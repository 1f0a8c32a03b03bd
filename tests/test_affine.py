"""RandomAffine: bilinear resampling as scipy.ndimage.affine_transform computes it, on every
backend; seeded draws; checked arguments; it trains."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import portanet as pn
from portanet.augment import RandomAffine, warp
from tests.helpers import assert_close

ndimage = pytest.importorskip("scipy.ndimage", reason="scipy is not installed")


def reference(images: np.ndarray, inverse: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """scipy's order-1 affine_transform, image by image: input point = M @ out + offset."""
    n, c, h, w = images.shape
    centre = np.array([(h - 1) / 2.0, (w - 1) / 2.0])
    out = np.empty_like(images, dtype=np.float64)
    for i in range(n):
        offset = centre - inverse[i] @ centre - shift[i]
        for k in range(c):
            out[i, k] = ndimage.affine_transform(images[i, k].astype(np.float64), inverse[i],
                                                 offset=offset, order=1, mode="grid-constant",
                                                 cval=0.0)
    return out


@pytest.mark.parametrize("channels", [1, 3])
def test_warp_matches_scipy(backend: pn.Backend, channels: int) -> None:
    rng = np.random.default_rng(0)
    images = rng.random((5, channels, 12, 10)).astype(np.float32)
    inverse, shift = RandomAffine(degrees=30, scale=(0.8, 1.25), shear=15,
                                  translate=3).draw(rng, 5)
    got = warp(backend, backend.asarray(images), inverse, shift)
    assert tuple(got.shape) == images.shape
    assert_close(backend, got, reference(images, inverse, shift), rtol=1e-5, atol=1e-5)


def test_the_identity_changes_nothing(backend: pn.Backend) -> None:
    images = np.random.default_rng(1).random((3, 1, 7, 9)).astype(np.float32)
    same = warp(backend, backend.asarray(images), np.tile(np.eye(2), (3, 1, 1)),
                np.zeros((3, 2)))
    assert_close(backend, same, images, rtol=1e-6, atol=1e-6)


def test_draws_repeat_for_a_seed_and_differ_per_image() -> None:
    aug = RandomAffine(degrees=15, scale=(0.9, 1.1), shear=5, translate=2)
    first = aug.draw(np.random.default_rng(3), 4)
    again = aug.draw(np.random.default_rng(3), 4)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not np.allclose(first[0][0], first[0][1])


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"degrees": -1}, "degrees"), ({"scale": (1.2, 0.8)}, "scale"),
    ({"shear": float("nan")}, "shear"), ({"translate": "2"}, "translate")])
def test_bad_arguments_are_refused(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RandomAffine(**kwargs)


def test_it_trains_a_cnn_and_refuses_flat_samples() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.random((64, 1, 8, 8)).astype(np.float32), rng.integers(0, 3, 64)
    model = pn.Sequential([pn.Conv2D(1, 3, 3), pn.ReLU(), pn.Flatten(), pn.Dense(108, 3)],
                          backend="numpy", seed=0)
    history = pn.fit(model, x, y, epochs=2, batch_size=32, augment=RandomAffine(translate=1))
    assert len(history.loss) == 2 and np.isfinite(history.loss).all()
    with pytest.raises(ValueError, match="image batches"):
        pn.fit(pn.Sequential([pn.Dense(64, 3)], backend="numpy"), x.reshape(64, 64), y,
               augment=RandomAffine())
