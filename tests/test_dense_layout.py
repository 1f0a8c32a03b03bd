"""Dense's weight layout is a backend choice (Backend.weights_transposed): both layouts train
to the same numbers, and each keeps W and dW in the order it promises."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import portanet as pn
from portanet.backend import Backend
from tests.helpers import assert_layer_gradients, separable_data


class InOutBackend(Backend):
    """NumPy with W kept in (in, out) order, as CuPy keeps it."""

    @property
    def seam(self):  # type: ignore[override]
        return dataclasses.replace(super().seam, transposed_weights=False)


def in_out_numpy(seed: int = 0) -> Backend:
    base = pn.get_backend("numpy", "float64", seed=seed)
    return InOutBackend(**{f.name: getattr(base, f.name) for f in dataclasses.fields(base)})


@pytest.mark.parametrize("batch_size", [1, 7])
def test_both_layouts_train_to_the_same_weights(batch_size: int) -> None:
    X, y = separable_data(n=60, features=6, classes=3)
    results = []
    # float64: the layouts differ only in summation order, so float32 runs drift apart by
    # rounding over many steps; in float64 the two must agree to ~1e-9.
    for backend in (pn.get_backend("numpy", "float64", seed=0), in_out_numpy()):
        model = pn.Sequential([pn.Dense(6, 5), pn.ReLU(), pn.Dense(5, 3)], backend=backend,
                              seed=1)
        pn.fit(model, X, y, optimizer=pn.optim.SGD(0.1, momentum=0.9), epochs=3,
               batch_size=batch_size)
        w, dw = model.layers[0].params["W"], model.layers[0].grads["W"]
        assert w.flags.f_contiguous == backend.weights_transposed
        assert dw.flags.f_contiguous == backend.weights_transposed
        results.append(model.state_dict())
    for name in results[0]:
        np.testing.assert_allclose(results[0][name], results[1][name], rtol=1e-9, atol=1e-10)


def test_per_sample_gradients_match_numerical(backend64: pn.Backend) -> None:
    """Batch size 1 takes Dense's outer-product branch: check it numerically too."""
    layer = pn.Dense(5, 3)
    layer.build(backend64, np.random.default_rng(1))
    assert_layer_gradients(layer, backend64, np.random.default_rng(0).normal(size=(1, 5)))


def test_dense_skips_input_gradient_when_not_needed(backend64: pn.Backend) -> None:
    layer = pn.Dense(5, 3)
    layer.build(backend64, np.random.default_rng(1))
    layer.forward(backend64.asarray(np.ones((2, 5))))
    assert layer.backward(backend64.asarray(np.ones((2, 3))), need_dx=False) is None
    assert "W" in layer.grads and "b" in layer.grads
