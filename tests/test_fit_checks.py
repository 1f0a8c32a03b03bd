"""fit's hyperparameter routes and divergence: every bad value is a clear error before work,
and a diverging run stops loudly at the end of the epoch whose loss is not finite."""

from __future__ import annotations

import math

import numpy as np
import pytest

import portanet as pn
from portanet import optim
from portanet.train import DivergedError
from tests.helpers import separable_data


def mlp(backend: pn.Backend | str = "numpy", features: int = 20, seed: int = 0) -> pn.Sequential:
    return pn.Sequential([pn.Dense(features, 8), pn.ReLU(), pn.Dense(8, 4)], backend=backend,
                         seed=seed)


class Epochs(pn.Callback):
    def __init__(self) -> None:
        self.ended: list[dict] = []

    def on_epoch_end(self, epoch, logs):
        self.ended.append(dict(logs))


def test_divergence_stops_at_the_end_of_the_epoch_and_says_what_to_change() -> None:
    X, y = separable_data(n=200)
    seen = Epochs()
    with pytest.raises(DivergedError) as caught:
        pn.fit(mlp(), X, y, optimizer=optim.SGD(1e30), epochs=5, batch_size=20,
               callbacks=[seen])
    err = caught.value
    assert err.epoch == 1 and err.lr == 1e30 and not math.isfinite(err.loss)
    assert err.history.epochs == 1 and len(seen.ended) == 1
    message = str(err)
    assert "epoch 1 of 5" in message and "learning rate 1e+30" in message
    assert "lower the learning rate" in message and "must not be saved" in message


def test_divergence_reports_the_scheduled_learning_rate() -> None:
    X, y = separable_data(n=100)
    schedule = lambda epoch, epochs: 0.01 if epoch < 2 else 1e30  # noqa: E731
    with pytest.raises(DivergedError, match="epoch 3 of 4 at learning rate 1e\\+30") as caught:
        pn.fit(mlp(), X, y, epochs=4, batch_size=10, lr_schedule=schedule)
    assert caught.value.history.epochs == 3
    assert all(math.isfinite(v) for v in caught.value.history.loss[:2])


def test_a_finite_run_is_not_flagged() -> None:
    X, y = separable_data(n=100)
    history = pn.fit(mlp(), X, y, optimizer=optim.SGD(0.1), epochs=2, batch_size=10)
    assert all(math.isfinite(v) for v in history.loss)


@pytest.mark.parametrize("value", [float("nan"), -0.1, 0.0, float("inf"), "fast"])
def test_lr_schedule_values_are_checked(value) -> None:
    X, y = separable_data(n=40)
    with pytest.raises(ValueError, match=r"lr_schedule returned .* for epoch 1 of 2"):
        pn.fit(mlp(), X, y, epochs=2, lr_schedule=lambda e, n: value)


@pytest.mark.parametrize("value", [float("nan"), -1e-4, float("inf"), "some", None])
def test_l2_is_checked(value) -> None:
    X, y = separable_data(n=40)
    with pytest.raises(ValueError, match="l2 must be"):
        pn.fit(mlp(), X, y, l2=value)


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_lr_inf_and_nan_say_finite(value: float) -> None:
    with pytest.raises(ValueError, match="finite") as caught:
        optim.SGD(lr=value)
    assert "must be > 0" not in str(caught.value)
    opt = optim.SGD(0.1)
    with pytest.raises(ValueError, match="lr must be a finite number"):
        opt.lr = value


def test_negative_lr_assigned_later_is_refused() -> None:
    opt = optim.Adam(0.01)
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        opt.lr = -0.5
    assert opt.lr == 0.01


def test_optimizer_by_name() -> None:
    X, y = separable_data(n=200)
    by_name, by_object = mlp(), mlp()
    history = pn.fit(by_name, X, y, optimizer="adam", epochs=2, batch_size=20)
    pn.fit(by_object, X, y, optimizer=optim.Adam(), epochs=2, batch_size=20)
    assert history.lr == [0.001, 0.001]
    for name, value in by_name.state_dict().items():
        np.testing.assert_array_equal(value, by_object.state_dict()[name])
    with pytest.raises(ValueError, match="unknown optimizer 'adamw'.*adam"):
        pn.fit(mlp(), X, y, optimizer="adamw")
    with pytest.raises(TypeError, match="optimizer must be a portanet.optim.Optimizer"):
        pn.fit(mlp(), X, y, optimizer=optim.Adam)


def test_callbacks_must_be_callbacks() -> None:
    X, y = separable_data(n=40)
    with pytest.raises(TypeError, match=r"callbacks\[1\] is a function, not a portanet"):
        pn.fit(mlp(), X, y, callbacks=[pn.Callback(), lambda *a: None])
    seen = Epochs()
    pn.fit(mlp(), X, y, epochs=2, callbacks=seen)  # a single callback is fine
    assert len(seen.ended) == 2


@pytest.mark.parametrize("bad", [lambda X, y: (X,), lambda X, y: (X, y, y), lambda X, y: X])
def test_validation_data_must_be_a_pair(bad) -> None:
    X, y = separable_data(n=40)
    with pytest.raises(ValueError, match=r"validation_data must be a pair \(X_val, y_val\)"):
        pn.fit(mlp(), X, y, validation_data=bad(X, y))


def test_a_model_without_parameters_is_refused() -> None:
    X, y = separable_data(n=40)
    model = pn.Sequential([pn.ReLU()], backend="numpy")
    with pytest.raises(ValueError, match="no parameters to train"):
        pn.fit(model, X, y)


def test_an_optimizer_with_state_belongs_to_one_model() -> None:
    X, y = separable_data(n=40)
    opt = optim.Adam(0.01)
    model = mlp()
    pn.fit(model, X, y, optimizer=opt)
    pn.fit(model, X, y, optimizer=opt)  # the same model: continuing is fine
    X5 = np.ascontiguousarray(X[:, :5])
    with pytest.raises(ValueError, match="create a new optimizer for each model"):
        pn.fit(mlp(features=5), X5, y, optimizer=opt)
    other = mlp(pn.get_backend("numpy", "float64"))
    with pytest.raises(ValueError, match="float32.*float64.*create a new optimizer"):
        pn.fit(other, X, y, optimizer=opt)
    stateless = optim.SGD(0.1)  # plain SGD keeps no state: any model
    pn.fit(mlp(), X, y, optimizer=stateless)
    pn.fit(mlp(features=5), X5, y, optimizer=stateless)


@pytest.mark.parametrize("bad", [3.0, "digits.png", None, {"x": 1}])
def test_predict_on_something_that_is_not_an_array(bad) -> None:
    with pytest.raises(TypeError, match="not an array; pass an array of shape"):
        pn.predict(mlp(), bad)


def test_huge_uint64_labels_are_named_as_they_are() -> None:
    """Labels of uint64 above 2**63 are reported with their real value, not a wrapped one."""
    model = pn.Sequential([pn.Dense(4, 3)], backend="numpy", seed=0)
    X = np.zeros((2, 4), np.float32)
    y = np.array([0, 2**63 + 5], dtype=np.uint64)
    with pytest.raises(ValueError, match=f"from 0 to {2**63 + 5}"):
        pn.fit(model, X, y)
