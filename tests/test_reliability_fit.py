"""A model is finished only when what it computes is finite, and BatchNorm never trains on one
value per channel: divergence in the last step, outputs that overflow at inference,
batches of one sample."""

from __future__ import annotations

import numpy as np
import pytest

import portanet as pn
from portanet import optim
from portanet.train import DivergedError, _batches
from tests.helpers import separable_data


def mlp(dtype: str = "float32", features: int = 20) -> pn.Sequential:
    return pn.Sequential([pn.Dense(features, 8), pn.ReLU(), pn.Dense(8, 4)], backend="numpy",
                         seed=0, dtype=dtype)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize(("dtype", "make"), [
    ("float32", lambda: optim.SGD(1e37)), ("float64", lambda: optim.SGD(1e300)),
    ("float64", lambda: optim.Adam(1e300)),
])
def test_divergence_in_the_last_step_is_caught(dtype: str, make) -> None:
    """One full-batch step: the loss read for the epoch is finite (computed before the
    update), but the updated weights make every output NaN."""
    X, y = separable_data(n=200)
    model = mlp(dtype)
    with pytest.raises(DivergedError) as caught:
        pn.fit(model, X, y, optimizer=make(), epochs=1, batch_size=None)
    message = str(caught.value)
    assert np.isfinite(caught.value.history.loss[0])
    assert "outputs on the last training batch are not" in message
    assert "weights are finite" in message and "no longer finite" not in message
    assert "must not be saved" in message


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_diverged_loss_names_what_is_not_finite() -> None:
    X, y = separable_data(n=200)
    with pytest.raises(DivergedError, match=r"the loss is nan, and 0\.W, 0\.b, 2\.W, 2\.b are "
                                            r"no longer finite"):
        pn.fit(mlp(), X, y, optimizer=optim.SGD(1e30), epochs=2, batch_size=20)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_validation_loss_that_is_not_finite_stops_training() -> None:
    X, y = separable_data(n=200)
    X_val = X[:20].copy()
    X_val[:, :] = 3e38
    with pytest.raises(DivergedError, match="the validation loss is nan"):
        pn.fit(mlp(), X, y, epochs=3, validation_data=(X_val, y[:20]))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_predict_and_evaluate_refuse_non_finite_weights() -> None:
    X, y = separable_data(n=50)
    model = mlp()
    model.layers[2].load_param("W", np.full((8, 4), np.inf))
    for call in (lambda: pn.predict(model, X), lambda: pn.predict_proba(model, X),
                 lambda: pn.evaluate(model, X, y)):
        with pytest.raises(ValueError, match=r"2\.W is not finite .* lower learning rate"):
            call()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_predict_and_evaluate_name_input_values_that_overflow() -> None:
    X, y = separable_data(n=50)
    model = mlp()
    X[7, :] = 3e38
    for call in (lambda: pn.predict(model, X), lambda: pn.evaluate(model, X, y)):
        with pytest.raises(ValueError, match=r"weights are: X holds values up to 3e\+38"):
            call()
    assert pn.predict_proba(model, X[:5]).shape == (5, 4)  # the finite rows still work


def bn_model(features: int = 6) -> pn.Sequential:
    return pn.Sequential([pn.Dense(features, 8), pn.BatchNorm(8), pn.ReLU(), pn.Dense(8, 3)],
                         backend="numpy", seed=0)


def test_batchnorm_refuses_batches_of_one_before_training() -> None:
    X, y = separable_data(n=40, features=6, classes=3)
    model = bn_model()
    before = model.state_dict()
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training.*"
                                         "at least 2"):
        pn.fit(model, X, y, batch_size=1)
    for name, value in model.state_dict().items():
        assert np.array_equal(value, before[name]), f"{name} changed before the refusal"
    with pytest.raises(ValueError, match="batch size is 1 .with 1 training samples"):
        pn.fit(bn_model(), X[:1], y[:1], batch_size=None)


class Steps(pn.Callback):
    def __init__(self) -> None:
        self.planned: list[int] = []
        self.done = 0

    def on_epoch_begin(self, epoch, epochs, num_batches):
        self.planned.append(num_batches)

    def on_batch_end(self, batch, running):
        self.done += 1


def test_batchnorm_never_forms_a_last_batch_of_one() -> None:
    """33 samples in batches of 16: 16 + 17 (the last one merged), not 16 + 16 + 1."""
    X, y = separable_data(n=33, features=6, classes=3)
    steps = Steps()
    pn.fit(bn_model(), X, y, batch_size=16, epochs=2, callbacks=[steps])
    assert steps.planned == [2, 2] and steps.done == 4
    plain = Steps()  # a model without BatchNorm keeps its last batch of one
    pn.fit(mlp(features=6), X, y, batch_size=16, callbacks=[plain])
    assert plain.planned == [3] and plain.done == 3


def test_batches_merge_only_a_too_small_tail() -> None:
    assert _batches(33, 16, 2) == [(0, 16), (16, 33)]
    assert _batches(34, 16, 2) == [(0, 16), (16, 32), (32, 34)]
    assert _batches(33, 16) == [(0, 16), (16, 32), (32, 33)]
    assert _batches(1, 16, 2) == [(0, 1)]


def test_spatial_batchnorm_may_take_one_image_per_batch() -> None:
    """A BatchNorm over (N, C, H, W) has H*W values per channel even for one image."""
    model = pn.Sequential([pn.Conv2D(1, 2, 3), pn.BatchNorm(2), pn.ReLU(), pn.Flatten(),
                           pn.Dense(2 * 6 * 6, 3)], backend="numpy", seed=0,
                          input_shape=(1, 8, 8))
    rng = np.random.default_rng(0)
    X = rng.normal(size=(5, 1, 8, 8)).astype(np.float32)
    history = pn.fit(model, X, np.array([0, 1, 2, 0, 1]), batch_size=1)
    assert history.epochs == 1
