"""Numerical gradient checks (central differences in float64) for every layer and loss."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import portanet as pn
from portanet import losses
from tests.helpers import tolerance

EPS = 1e-6
RTOL = 1e-6
ATOL = 1e-8


def numerical_gradient(f: Callable[[np.ndarray], float], x: np.ndarray) -> np.ndarray:
    """Central differences of a scalar function of a host array."""
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + EPS
        up = f(x)
        x[i] = old - EPS
        down = f(x)
        x[i] = old
        grad[i] = (up - down) / (2 * EPS)
    return grad


def build(layer: pn.Layer, backend: pn.Backend) -> pn.Layer:
    layer.build(backend, np.random.default_rng(1))
    return layer


def check_layer(layer: pn.Layer, backend: pn.Backend, x_host: np.ndarray) -> None:
    """Loss L = sum(forward(x) * R) for a fixed random R: dL/dout = R."""
    rng = np.random.default_rng(2)
    out = layer.forward(backend.asarray(x_host))
    r_host = rng.normal(size=tuple(out.shape))
    r = backend.asarray(r_host)
    dx = layer.backward(r)

    def loss_of_x(x: np.ndarray) -> float:
        return float(np.sum(backend.to_numpy(layer.forward(backend.asarray(x))) * r_host))

    expected_dx = numerical_gradient(loss_of_x, x_host.copy())
    assert backend.owns(dx) and dx.dtype == backend.dtype
    np.testing.assert_allclose(backend.to_numpy(dx), expected_dx, rtol=RTOL, atol=ATOL)

    for name in list(layer.params):
        analytic = backend.to_numpy(layer.grads[name])
        p_host = backend.to_numpy(layer.params[name])

        def loss_of_p(p: np.ndarray, name: str = name) -> float:
            layer.params[name] = backend.asarray(p)
            return float(np.sum(backend.to_numpy(layer.forward(backend.asarray(x_host))) * r_host))

        expected = numerical_gradient(loss_of_p, p_host.copy())
        layer.params[name] = backend.asarray(p_host)
        np.testing.assert_allclose(analytic, expected, rtol=RTOL, atol=ATOL, err_msg=name)


@pytest.mark.parametrize(
    "make_layer",
    [
        lambda: pn.Dense(5, 3),
        lambda: pn.ReLU(),
        lambda: pn.Sigmoid(),
        lambda: pn.Tanh(),
        lambda: pn.Softmax(),
    ],
    ids=["Dense", "ReLU", "Sigmoid", "Tanh", "Softmax"],
)
def test_layer_gradients(make_layer: Callable[[], pn.Layer], backend64: pn.Backend) -> None:
    x = np.random.default_rng(0).normal(size=(4, 5))
    x[np.abs(x) < 1e-3] = 0.1  # keep ReLU's kink out of the finite differences
    check_layer(build(make_layer(), backend64), backend64, x)


def test_dense_per_sample_path(backend64: pn.Backend) -> None:
    """Batch size 1 takes Dense's outer-product branch: check it numerically too."""
    x = np.random.default_rng(0).normal(size=(1, 5))
    check_layer(build(pn.Dense(5, 3), backend64), backend64, x)


def test_flatten_gradient(backend64: pn.Backend) -> None:
    x = np.random.default_rng(0).normal(size=(3, 2, 4))
    check_layer(build(pn.Flatten(), backend64), backend64, x)


def test_dense_skips_input_gradient_when_not_needed(backend64: pn.Backend) -> None:
    layer = build(pn.Dense(5, 3), backend64)
    layer.forward(backend64.asarray(np.ones((2, 5))))
    assert layer.backward(backend64.asarray(np.ones((2, 3))), need_dx=False) is None
    assert "W" in layer.grads and "b" in layer.grads


def test_dropout_backward_uses_the_forward_mask(backend: pn.Backend) -> None:
    layer = build(pn.Dropout(0.5), backend)
    x = backend.asarray(np.ones((200, 50)))
    out = backend.to_numpy(layer.forward(x))
    assert set(np.unique(out)) <= {0.0, 2.0}  # inverted dropout: kept values scaled by 1/(1-p)
    assert 0.4 < np.mean(out == 0.0) < 0.6
    dout = np.random.default_rng(0).normal(size=(200, 50))
    dx = backend.to_numpy(layer.backward(backend.asarray(dout)))
    np.testing.assert_allclose(dx, dout * out, **tolerance(backend.dtype_name))
    layer.training = False
    np.testing.assert_array_equal(backend.to_numpy(layer.forward(x)), np.ones((200, 50)))


@pytest.mark.parametrize(
    "loss_fn",
    [losses.softmax_cross_entropy, losses.softmax_squared_error],
    ids=["cross_entropy", "squared_error"],
)
def test_loss_gradients(loss_fn: Callable[[Any, Any], Any], backend64: pn.Backend) -> None:
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(6, 4)) * 3
    labels = backend64.asarray(np.array([0, 1, 2, 3, 1, 0]))
    value, dlogits = loss_fn(backend64.asarray(logits), labels)
    assert value.shape == () and value.dtype == backend64.dtype

    def loss_of(z: np.ndarray) -> float:
        return float(backend64.to_numpy(loss_fn(backend64.asarray(z), labels)[0]))

    expected = numerical_gradient(loss_of, logits.copy())
    np.testing.assert_allclose(backend64.to_numpy(dlogits), expected, rtol=RTOL, atol=ATOL)


def test_cross_entropy_value_and_stability(backend: pn.Backend) -> None:
    logits = np.array([[1000.0, 0.0, -1000.0], [0.0, 0.0, 0.0]])
    labels = backend.asarray(np.array([0, 2]))
    value, dlogits = losses.softmax_cross_entropy(backend.asarray(logits), labels)
    # row 0: log-softmax of the target is 0; row 1: log(3)
    np.testing.assert_allclose(float(backend.to_numpy(value)), np.log(3) / 2, rtol=1e-6)
    assert np.all(np.isfinite(backend.to_numpy(dlogits)))


def test_squared_error_value_and_full_jacobian(backend64: pn.Backend) -> None:
    z = np.array([[2.0, 1.0, 0.0]])
    p = np.exp(z) / np.exp(z).sum()
    t = np.array([[0.0, 1.0, 0.0]])
    value, dz = losses.softmax_squared_error(backend64.asarray(z), backend64.asarray(np.array([1])))
    np.testing.assert_allclose(float(backend64.to_numpy(value)), np.sum((t - p) ** 2))
    g = 2 * (p - t)
    jacobian = np.diag(p[0]) - np.outer(p[0], p[0])
    np.testing.assert_allclose(backend64.to_numpy(dz), g @ jacobian, rtol=1e-12)
    diagonal_only = g * p * (1 - p)  # the shortcut some from-scratch programs take
    assert not np.allclose(backend64.to_numpy(dz), diagonal_only)


def test_l2_penalty_value_and_gradient(backend64: pn.Backend) -> None:
    """The penalty's value (losses.l2_penalty) and its gradient term (the optimizer's weight
    decay, the one L2 mechanism) over the same parameters: weights, not biases."""
    model = pn.Sequential([pn.Dense(3, 2), pn.ReLU(), pn.Dense(2, 2)], backend=backend64, seed=0)
    x = backend64.asarray(np.ones((1, 3)))
    labels = backend64.asarray(np.array([1]))
    _, dlogits = losses.softmax_cross_entropy(model.forward(x), labels)
    model.backward(dlogits)
    grads = {name: backend64.to_numpy(g) for name, _, g in model.named_parameters()}
    weights = {name: backend64.to_numpy(p) for name, p, _ in model.named_parameters()}
    penalty = losses.l2_penalty(model, 0.1)
    expected = 0.5 * 0.1 * (np.sum(weights["0.W"] ** 2) + np.sum(weights["2.W"] ** 2))
    np.testing.assert_allclose(float(backend64.to_numpy(penalty)), expected, rtol=1e-12)
    pn.optim.SGD(1.0, weight_decay=0.1).step(model)
    for name, p, _ in model.named_parameters():
        extra = 0.1 * weights[name] if name.endswith("W") else 0.0
        np.testing.assert_allclose(backend64.to_numpy(p), weights[name] - grads[name] - extra,
                                   rtol=1e-12, atol=1e-15, err_msg=name)


def test_model_backward_matches_numerical(backend64: pn.Backend) -> None:
    """The whole chain: Flatten, Dense, Tanh, Dense, Sigmoid, Dense, loss."""
    model = pn.Sequential(
        [pn.Flatten(), pn.Dense(6, 5), pn.Tanh(), pn.Dense(5, 4), pn.Sigmoid(), pn.Dense(4, 3)],
        backend=backend64, seed=0,
    )
    x = np.random.default_rng(0).normal(size=(4, 2, 3))
    labels = backend64.asarray(np.array([0, 1, 2, 1]))
    _, dlogits = losses.softmax_cross_entropy(model.forward(backend64.asarray(x)), labels)
    model.backward(dlogits)
    for name, param, grad in model.named_parameters():
        p_host = backend64.to_numpy(param)
        layer, key = model.layers[int(name.split(".")[0])], name.split(".")[1]

        def loss_of(p: np.ndarray, layer: pn.Layer = layer, key: str = key) -> float:
            layer.params[key] = backend64.asarray(p)
            logits = model.forward(backend64.asarray(x))
            return float(backend64.to_numpy(losses.softmax_cross_entropy(logits, labels)[0]))

        expected = numerical_gradient(loss_of, p_host.copy())
        layer.params[key] = backend64.asarray(p_host)
        np.testing.assert_allclose(backend64.to_numpy(grad), expected, rtol=RTOL, atol=ATOL,
                                   err_msg=name)
