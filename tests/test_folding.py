"""BatchNorm folded into the Conv2D or Dense layer before it (portanet.layers.folding): the same
outputs as the model in evaluation mode, the model itself untouched, used by evaluate and
predict."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import portanet as pn
from portanet import optim
from portanet.layers.folding import fold_batchnorm
from tests.helpers import assert_close


def trained_model(backend: pn.Backend | str, *middle: Any) -> tuple[pn.Sequential, np.ndarray]:
    """Conv -> BN -> ReLU -> pool -> [middle] -> Dense -> BN -> Dense, trained two epochs so
    that the running statistics and gamma/beta are far from their defaults."""
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 2.0, size=(64, 2, 8, 8)).astype(np.float32)
    y = rng.integers(0, 3, 64)
    model = pn.Sequential([pn.Conv2D(2, 4, 3), pn.BatchNorm(4), pn.ReLU(), pn.MaxPool2D(2),
                           *middle, pn.Flatten(), pn.Dense(36, 5), pn.BatchNorm(5),
                           pn.Dense(5, 3)], backend=backend, seed=0, input_shape=(2, 8, 8))
    pn.fit(model, x, y, optimizer=optim.Adam(0.05), epochs=2, batch_size=16, threads=1)
    model.eval()
    return model, x


def test_folded_model_gives_the_models_outputs(backend: pn.Backend) -> None:
    model, x = trained_model(backend)
    before = {k: v.copy() for k, v in model.state_dict().items()}
    xb = backend.asarray(x)
    expected = backend.to_numpy(model.forward_unchecked(xb))
    folded = fold_batchnorm(model)
    assert [type(layer).__name__ for layer in folded.layers] == [
        "Conv2D", "ReLU", "MaxPool2D", "Flatten", "Dense", "Dense"]
    assert_close(backend, folded.forward_unchecked(xb), expected, rtol=1e-4, atol=1e-5)
    for key, value in model.state_dict().items():  # the model's own arrays are untouched
        np.testing.assert_array_equal(value, before[key], err_msg=key)
    assert len(model.layers) == 8  # the model keeps its layers


def test_only_batchnorm_right_after_conv_or_dense_is_folded() -> None:
    plain = pn.Sequential([pn.Dense(4, 3), pn.ReLU(), pn.BatchNorm(3)], backend="numpy")
    assert fold_batchnorm(plain) is plain  # after an activation: a different function
    model, _ = trained_model("numpy", pn.BatchNorm(4))  # BN after pooling stays too
    names = [type(layer).__name__ for layer in fold_batchnorm(model).layers]
    assert names.count("BatchNorm") == 1


def test_evaluate_and_predict_run_the_folded_model(monkeypatch: pytest.MonkeyPatch) -> None:
    model, x = trained_model("numpy")
    y = np.arange(64) % 3
    expected = pn.predict_proba(model, x), pn.evaluate(model, x, y)

    def refused(self: Any, x: Any) -> Any:
        raise AssertionError("BatchNorm ran in inference")

    with monkeypatch.context() as patch:
        patch.setattr(pn.BatchNorm, "forward", refused)
        np.testing.assert_allclose(pn.predict_proba(model, x), expected[0], rtol=1e-6)
        assert pn.evaluate(model, x, y) == expected[1]
    model.eval()
    unfolded = pn.layers.softmax(np, model.forward(model.backend.asarray(x)))
    np.testing.assert_allclose(expected[0], unfolded, rtol=1e-4, atol=1e-6)


def test_an_ensembles_members_are_folded(backend: pn.Backend) -> None:
    first, x = trained_model(backend)
    second, _ = trained_model(backend, pn.ReLU())
    plain = pn.Sequential([pn.Flatten(), pn.Dense(128, 3)], backend=backend, seed=1,
                          input_shape=(2, 8, 8))  # nothing to fold: kept as it is
    model = pn.ensemble([first, second, plain], shift=1)
    xb = backend.asarray(x)
    expected = backend.to_numpy(model.forward_unchecked(xb))
    folded = fold_batchnorm(model)
    assert [[type(layer).__name__ for layer in member] for member in folded.layers[0].members] == [
        ["Conv2D", "ReLU", "MaxPool2D", "Flatten", "Dense", "Dense"],
        ["Conv2D", "ReLU", "MaxPool2D", "ReLU", "Flatten", "Dense", "Dense"],
        ["Flatten", "Dense"]]
    assert folded.layers[0].shift == 1
    assert_close(backend, folded.forward_unchecked(xb), expected, rtol=1e-4, atol=1e-5)
    assert [len(member) for member in model.layers[0].members] == [8, 9, 2]  # the model's own


def test_evaluate_runs_an_ensemble_folded(monkeypatch: pytest.MonkeyPatch) -> None:
    (first, x), (second, _) = trained_model("numpy"), trained_model("numpy", pn.ReLU())
    model = pn.ensemble([first, second])
    unfolded = pn.layers.softmax(np, model.forward_unchecked(model.backend.asarray(x)))
    with monkeypatch.context() as patch:
        patch.setattr(pn.BatchNorm, "forward", lambda self, x: pytest.fail("BatchNorm ran"))
        np.testing.assert_allclose(pn.predict_proba(model, x), unfolded, rtol=1e-4, atol=1e-6)
