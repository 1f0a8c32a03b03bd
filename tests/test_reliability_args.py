"""Values that were accepted silently: a negative warm-up, BatchNorm's eps and
momentum, a shift that blanks the images, and a stateful optimizer reused on another model."""

from __future__ import annotations

import math

import numpy as np
import pytest

import portanet as pn
from portanet import optim
from portanet.augment import RandomShift
from tests.helpers import separable_data


@pytest.mark.parametrize("warmup", [-3, 1.5, True, "2"])
def test_cosine_decay_refuses_a_warmup_that_is_not_a_count(warmup) -> None:
    with pytest.raises(ValueError, match=r"warmup_epochs must be a non-negative integer"):
        optim.cosine_decay(0.1, warmup_epochs=warmup)


@pytest.mark.parametrize(("make", "match"), [
    (lambda: optim.cosine_decay(math.nan), "lr must be a finite number > 0"),
    (lambda: optim.cosine_decay(0.1, final_lr=-1.0), "final_lr must be a finite number >= 0"),
    (lambda: optim.linear_decay(-0.1), "lr must be a finite number > 0"),
    (lambda: optim.linear_decay(0.1, final_lr=math.inf), "final_lr must be a finite number"),
])
def test_schedules_check_their_rates_when_made(make, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


def test_schedules_still_work() -> None:
    schedule = optim.cosine_decay(0.1, final_lr=0.0, warmup_epochs=2)
    assert [round(schedule(e, 6), 4) for e in range(6)] == [0.0333, 0.0667, 0.1, 0.0854,
                                                             0.05, 0.0146]
    assert optim.linear_decay(0.1)(0, 4) == 0.1


@pytest.mark.parametrize("eps", [math.inf, math.nan, 0.0, -1e-5, "tiny", True])
def test_batchnorm_eps_must_be_finite_and_positive(eps) -> None:
    with pytest.raises(ValueError, match="BatchNorm eps must be"):
        pn.BatchNorm(4, eps=eps)


@pytest.mark.parametrize("momentum", [0.0, -0.1, 1.5, math.nan, math.inf, None])
def test_batchnorm_momentum_must_be_in_0_1(momentum) -> None:
    with pytest.raises(ValueError, match=r"BatchNorm momentum must be"):
        pn.BatchNorm(4, momentum=momentum)


def test_batchnorm_accepts_its_usual_values() -> None:
    assert pn.BatchNorm(4, momentum=1.0, eps=1e-3).config() == {
        "num_features": 4, "momentum": 1.0, "eps": 1e-3}


def small_cnn() -> pn.Sequential:
    return pn.Sequential([pn.Conv2D(1, 2, 3), pn.ReLU(), pn.Flatten(), pn.Dense(2 * 26 * 26, 3)],
                         backend="numpy", seed=0, input_shape=(1, 28, 28))


def test_a_shift_that_blanks_the_images_is_refused_before_training() -> None:
    rng = np.random.default_rng(0)
    X, y = rng.random((8, 1, 28, 28)).astype(np.float32), rng.integers(0, 3, 8)
    model = small_cnn()
    before = model.state_dict()["0.W"].copy()
    with pytest.raises(ValueError, match=r"RandomShift\(max_pixels=100\) .* 28x28 image .*less "
                                         r"than half of it; use at most 8 pixels"):
        pn.fit(model, X, y, augment=RandomShift(100))
    np.testing.assert_array_equal(model.state_dict()["0.W"], before)
    with pytest.raises(ValueError, match="use at most 8 pixels"):
        pn.fit(model, X, y, augment=RandomShift(9))
    pn.fit(model, X, y, augment=RandomShift(8))


def test_a_shift_is_checked_when_called_directly() -> None:
    backend = pn.get_backend("numpy")
    with pytest.raises(ValueError, match="use at most 2 pixels for 9x9"):
        RandomShift(5)(np.zeros((2, 1, 9, 9), np.float32), backend)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        pn.fit(pn.Sequential([pn.Dense(4, 2)], backend="numpy"), np.zeros((4, 4), np.float32),
               np.array([0, 1, 0, 1]), augment=RandomShift(1))


def mlp(seed: int = 0) -> pn.Sequential:
    return pn.Sequential([pn.Dense(20, 8), pn.ReLU(), pn.Dense(8, 4)], backend="numpy", seed=seed)


@pytest.mark.parametrize("make", [lambda: optim.Adam(0.01), lambda: optim.SGD(0.1, momentum=0.9),
                                  lambda: optim.RMSProp(0.01)])
def test_a_stateful_optimizer_is_refused_on_a_second_model_of_the_same_shapes(make) -> None:
    X, y = separable_data(n=40)
    opt = make()
    first = mlp()
    pn.fit(first, X, y, optimizer=opt)
    second = mlp(seed=1)
    before = second.state_dict()
    with pytest.raises(ValueError, match="already holds state .* for another model of the same "
                                         "shapes; create a new optimizer for each model"):
        pn.fit(second, X, y, optimizer=opt)
    for name, value in second.state_dict().items():
        np.testing.assert_array_equal(value, before[name])
    pn.fit(first, X, y, optimizer=opt)  # its own model: continuing is fine
