"""ElasticDistortion and Compose: the smooth field as scipy.ndimage.gaussian_filter blurs it,
the sampling as scipy.ndimage.map_coordinates reads it, on every backend; seeded; checked."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import portanet as pn
from portanet.augment import (
    Compose,
    ElasticDistortion,
    RandomAffine,
    RandomShift,
    gaussian_matrix,
    warp_at,
)
from tests.helpers import assert_close

ndimage = pytest.importorskip("scipy.ndimage", reason="scipy is not installed")


@pytest.mark.parametrize(("size", "sigma"), [(28, 4.0), (9, 1.5), (5, 3.0)])
def test_the_field_is_scipys_gaussian_blur(size: int, sigma: float) -> None:
    noise = np.random.default_rng(0).uniform(-1, 1, (3, 2, size, size + 2))
    field = ElasticDistortion(alpha=7.0, sigma=sigma).displacement(noise)
    expected = 7.0 * ndimage.gaussian_filter(noise, (0, 0, sigma, sigma), mode="constant")
    np.testing.assert_allclose(field, expected, rtol=1e-12, atol=1e-12)


def test_gaussian_rows_sum_to_one_away_from_the_ends() -> None:
    blur = gaussian_matrix(40, 2.0)
    np.testing.assert_allclose(blur[10:30].sum(axis=1), 1.0, rtol=1e-12)
    assert blur[0].sum() < 1.0  # zeros beyond the ends


@pytest.mark.parametrize("channels", [1, 3])
def test_sampling_matches_map_coordinates(backend: pn.Backend, channels: int) -> None:
    rng = np.random.default_rng(1)
    images = rng.random((4, channels, 11, 9)).astype(np.float32)
    rows, cols = np.mgrid[0:11, 0:9]
    moved = rng.normal(0.0, 2.5, (4, 2, 11, 9))
    src = np.stack([rows, cols])[None].reshape(1, 2, 99) + moved.reshape(4, 2, 99)
    got = warp_at(backend, backend.asarray(images), src)
    expected = np.stack([[ndimage.map_coordinates(
        images[i, k].astype(np.float64), [rows + moved[i, 0], cols + moved[i, 1]], order=1,
        mode="grid-constant", cval=0.0) for k in range(channels)] for i in range(4)])
    assert_close(backend, got, expected, rtol=1e-5, atol=1e-5)


def test_a_call_draws_its_field_from_the_models_generator() -> None:
    images = np.random.default_rng(2).random((3, 1, 12, 12)).astype(np.float32)
    aug = ElasticDistortion(alpha=20.0, sigma=3.0)
    first = aug(images, pn.get_backend("numpy", seed=5))
    again = aug(images, pn.get_backend("numpy", seed=5))
    other = aug(images, pn.get_backend("numpy", seed=6))
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)
    rows, cols = np.mgrid[0:12, 0:12]
    field = aug.displacement(pn.get_backend("numpy", seed=5).rng.uniform(-1, 1, (3, 2, 12, 12)))
    expected = ndimage.map_coordinates(images[0, 0].astype(np.float64),
                                       [rows + field[0, 0], cols + field[0, 1]], order=1,
                                       mode="grid-constant")
    np.testing.assert_allclose(first[0, 0], expected, rtol=1e-5, atol=1e-5)


def test_alpha_zero_changes_nothing(backend: pn.Backend) -> None:
    images = np.random.default_rng(3).random((2, 1, 8, 8)).astype(np.float32)
    out = ElasticDistortion(alpha=0.0)(backend.asarray(images), backend)
    assert_close(backend, out, images, rtol=1e-6, atol=1e-6)


def test_compose_applies_each_step_in_turn() -> None:
    images = np.random.default_rng(4).random((3, 1, 10, 10)).astype(np.float32)
    steps = (RandomAffine(degrees=20, translate=1), ElasticDistortion(10.0, 2.0))
    composed = Compose(*steps)(images, pn.get_backend("numpy", seed=9))
    backend = pn.get_backend("numpy", seed=9)
    by_hand = steps[1](steps[0](images, backend), backend)
    np.testing.assert_array_equal(composed, by_hand)
    assert "RandomAffine" in repr(Compose(*steps)) and "ElasticDistortion" in repr(
        Compose(*steps))


def test_compose_checks_through_its_steps() -> None:
    with pytest.raises(ValueError, match="RandomShift"):
        Compose(ElasticDistortion(), RandomShift(20)).check((1, 28, 28))
    with pytest.raises(ValueError, match="image batches"):
        Compose(RandomShift(1), ElasticDistortion()).check((784,))


@pytest.mark.parametrize(("make", "match"), [
    (lambda: ElasticDistortion(alpha=-1.0), "ElasticDistortion alpha must be"),
    (lambda: ElasticDistortion(sigma=0.0), "sigma"),
    (lambda: ElasticDistortion(alpha=float("inf")), "alpha"),
    (lambda: Compose(), "one or more"),
    (lambda: Compose(3), "one or more"),
])
def test_bad_arguments_are_refused(make: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


def test_it_trains_a_cnn() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.random((64, 1, 8, 8)).astype(np.float32), rng.integers(0, 3, 64)
    model = pn.Sequential([pn.Conv2D(1, 3, 3), pn.ReLU(), pn.Flatten(), pn.Dense(108, 3)],
                          backend="numpy", seed=0)
    history = pn.fit(model, x, y, epochs=2, batch_size=32,
                     augment=Compose(RandomAffine(5), ElasticDistortion(8.0, 2.0)))
    assert len(history.loss) == 2 and np.isfinite(history.loss).all()
