"""WeightAverage: the exponential moving average of the weights and BatchNorm's statistics,
step by step as the formula says, given to the model when training ends; checked decay."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import portanet as pn
from portanet.averaging import WeightAverage


class Snapshots(pn.Callback):
    """The model's parameters and buffers after every step, on the host."""

    def __init__(self, model: pn.Sequential) -> None:
        self.model, self.states = model, []

    def on_batch_end(self, batch: int, running: Callable[[], tuple[float, float]]) -> None:
        self.states.append(self.model.state_dict())


def small_bn_model(backend: Any) -> pn.Sequential:
    return pn.Sequential([pn.Dense(6, 8), pn.BatchNorm(8), pn.ReLU(), pn.Dense(8, 3)],
                         backend=backend, seed=0)


def expected_average(states: list[dict[str, np.ndarray]], decay: float) -> dict[str, Any]:
    average = {k: v.astype(np.float64) for k, v in states[0].items()}
    for t, state in enumerate(states[1:], start=1):
        d = min(decay, (1.0 + t) / (10.0 + t))
        average = {k: d * average[k] + (1.0 - d) * state[k] for k in state}
    return average


def test_the_model_ends_with_the_average_of_its_steps(backend: pn.Backend) -> None:
    rng = np.random.default_rng(0)
    x, y = rng.random((96, 6)).astype(np.float32), rng.integers(0, 3, 96)
    model = small_bn_model(backend.name)
    snapshots = Snapshots(model)
    # The snapshot runs first, so it sees each step's weights before they are averaged.
    pn.fit(model, x, y, optimizer="adam", epochs=3, batch_size=16,
           callbacks=[snapshots, WeightAverage(model, decay=0.9)])
    assert len(snapshots.states) == 18
    expected = expected_average(snapshots.states, 0.9)
    final = model.state_dict()
    assert set(final) == set(expected) and "1.running_mean" in final
    for name, value in final.items():
        np.testing.assert_allclose(value, expected[name], rtol=2e-5, atol=2e-6, err_msg=name)
    assert not np.allclose(final["0.W"], snapshots.states[-1]["0.W"])


def test_the_average_is_given_only_at_the_last_epoch() -> None:
    model = small_bn_model("numpy")
    average = WeightAverage(model, decay=0.5)
    average.on_epoch_begin(0, 3, 1)
    average.update()
    before = model.state_dict()["0.W"]
    model.load_state_dict({k: v + 1.0 for k, v in model.state_dict().items()})
    average.on_epoch_end(1, {})  # not the last epoch: the model keeps its own weights
    np.testing.assert_array_equal(model.state_dict()["0.W"], before + 1.0)
    average.on_epoch_end(2, {})
    np.testing.assert_array_equal(model.state_dict()["0.W"], before)


def test_an_interrupted_fit_keeps_the_last_steps_weights() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.random((64, 6)).astype(np.float32), rng.integers(0, 3, 64)

    class StopAfterOneEpoch(pn.Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
            raise KeyboardInterrupt

    model = small_bn_model("numpy")
    snapshots = Snapshots(model)
    with pytest.raises(KeyboardInterrupt):
        pn.fit(model, x, y, epochs=3, batch_size=16,
               callbacks=[snapshots, WeightAverage(model), StopAfterOneEpoch()])
    np.testing.assert_array_equal(model.state_dict()["0.W"], snapshots.states[-1]["0.W"])


@pytest.mark.parametrize("decay", [1.0, -0.1, float("nan")])
def test_a_bad_decay_is_refused(decay: Any) -> None:
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(small_bn_model("numpy"), decay=decay)


def test_recalibration_sets_the_mean_of_the_batch_statistics(backend: pn.Backend) -> None:
    from portanet.averaging import recalibrate_batchnorm

    rng = np.random.default_rng(2)
    x = rng.normal(1.0, 2.0, (96, 6)).astype(np.float32)
    model = pn.Sequential([pn.Dropout(0.5), pn.Dense(6, 8), pn.BatchNorm(8), pn.ReLU(),
                           pn.Dense(8, 3)], backend=backend, seed=0)
    weights = {name: backend.to_numpy(p) for name, p, _ in model.named_parameters()}
    recalibrate_batchnorm(model, backend.asarray(x), batch_size=32)
    z = [x[k:k + 32] @ weights["1.W"] + weights["1.b"] for k in (0, 32, 64)]  # no dropout
    state = model.state_dict()
    np.testing.assert_allclose(state["2.running_mean"], np.mean([b.mean(0) for b in z], 0),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(state["2.running_var"],
                               np.mean([b.var(0, ddof=1) for b in z], 0), rtol=1e-4, atol=1e-5)
    assert all(np.array_equal(state[k], v) for k, v in weights.items())
    assert model.layers[2].momentum == 0.1
    assert not any(layer.training for layer in model.layers)


def test_recalibration_without_batchnorm_changes_nothing() -> None:
    from portanet.averaging import recalibrate_batchnorm

    model = pn.Sequential([pn.Dense(6, 3)], backend="numpy", seed=0)
    before = model.state_dict()
    recalibrate_batchnorm(model, np.ones((4, 6), np.float32))
    assert all(np.array_equal(model.state_dict()[k], v) for k, v in before.items())
