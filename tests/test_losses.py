"""Loss objects: the prepare/loss protocol, its parity with the functions, and one L2."""

from __future__ import annotations

import copy
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import portanet as pn
from portanet import losses, optim
from tests.helpers import ATOL, RTOL, assert_close, numerical_gradient, separable_data


def mlp(backend: pn.Backend | str, seed: int = 0) -> pn.Sequential:
    return pn.Sequential([pn.Dense(20, 16), pn.ReLU(), pn.Dense(16, 4)], backend=backend,
                         seed=seed)


def reference_losses(z: np.ndarray, labels: np.ndarray) -> dict[str, tuple]:
    """Both built-in losses and their gradients in float64 NumPy, written out longhand."""
    n = z.shape[0]
    t = np.eye(z.shape[1])[labels]
    shifted = z - z.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    p = np.exp(log_p)
    ce = (-np.einsum("ij,ij->", t, log_p) / n, (p - t) / n)
    g = 2 * (p - t) / n
    se = (np.einsum("ij,ij->", p - t, p - t) / n, p * (g - np.einsum("ij,ij->i", g, p)[:, None]))
    return {"softmax_cross_entropy": ce, "softmax_squared_error": se}


@pytest.mark.parametrize("name", ["softmax_cross_entropy", "softmax_squared_error"])
def test_loss_objects_match_the_longhand_form(name: str, backend: pn.Backend) -> None:
    """The one-pass ``sum(a * b, axis=-1)`` form (no vecdot) against einsum, on every backend;
    the hand-stepping call and the prepare/loss protocol agree."""
    rng = np.random.default_rng(1)
    z = rng.normal(size=(7, 5)) * 3
    labels = rng.integers(0, 5, size=7)
    value_ref, grad_ref = reference_losses(z, labels)[name]
    loss = losses.LOSSES[name]
    logits, y = backend.asarray(z), backend.asarray(labels)
    value, grad = loss(logits, y)
    assert_close(backend, value, value_ref, rtol=2e-6)
    assert_close(backend, grad, grad_ref, rtol=2e-5, atol=1e-6)
    prepared = loss.prepare(y, 5, backend.dtype)
    value2, grad2 = loss.loss(logits, prepared)
    assert_close(backend, value2, backend.to_numpy(value))
    assert_close(backend, grad2, backend.to_numpy(grad))


def test_user_loss_gets_the_fast_path() -> None:
    """A user-defined Loss is prepared once per run and gets each batch's prepared rows."""
    calls = {"prepare": 0, "rows": []}

    class Hinge(losses.Loss):
        def prepare(self, labels, num_classes, dtype):
            calls["prepare"] += 1
            return losses.softmax_cross_entropy.prepare(labels, num_classes, dtype) * 2.0

        def loss(self, logits, prepared):
            calls["rows"].append(prepared.shape)
            return losses.softmax_cross_entropy.loss(logits, prepared / 2.0)

    X, y = separable_data(n=100)
    a, b = mlp("numpy", seed=3), mlp("numpy", seed=3)
    pn.fit(a, X, y, loss=Hinge(), optimizer=optim.SGD(0.1), epochs=3, batch_size=32)
    pn.fit(b, X, y, optimizer=optim.SGD(0.1), epochs=3, batch_size=32)
    assert calls["prepare"] == 1
    assert calls["rows"][:5] == [(32, 4), (32, 4), (32, 4), (4, 4), (100, 4)]  # + epoch loss
    for name, value in a.state_dict().items():
        np.testing.assert_allclose(value, b.state_dict()[name], rtol=1e-5, atol=1e-6)


def test_plain_function_losses_are_still_accepted() -> None:
    X, y = separable_data(n=100)
    a, b = mlp("numpy", seed=4), mlp("numpy", seed=4)

    def my_loss(logits, labels):
        return losses.softmax_cross_entropy(logits, labels)

    ha = pn.fit(a, X, y, loss=my_loss, optimizer=optim.SGD(0.1), epochs=2, batch_size=16)
    hb = pn.fit(b, X, y, optimizer=optim.SGD(0.1), epochs=2, batch_size=16)
    assert ha.loss == pytest.approx(hb.loss, rel=1e-6)
    for name, value in a.state_dict().items():
        np.testing.assert_allclose(value, b.state_dict()[name], rtol=1e-6, atol=1e-7)
    with pytest.raises(TypeError, match="loss must be"):
        pn.fit(a, X, y, loss=3)


def test_fit_gathers_each_batch_from_one_permutation() -> None:
    """fit's steps are the hand-written loop over ``X[perm[lo:hi]]``, with the model's
    generator drawing one permutation per epoch."""
    X, y = separable_data(n=90)
    fitted, manual = mlp("numpy", seed=5), mlp("numpy", seed=5)
    rng = copy.deepcopy(fitted.backend.rng)
    pn.fit(fitted, X, y, optimizer=optim.SGD(0.2, momentum=0.5), epochs=2, batch_size=32)
    opt = optim.SGD(0.2, momentum=0.5)
    for _ in range(2):
        perm = rng.permutation(90)
        for lo in range(0, 90, 32):
            idx = perm[lo:lo + 32]
            _, dlogits = losses.softmax_cross_entropy(manual.forward(X[idx]), y[idx])
            manual.backward(dlogits)
            opt.step(manual)
    for name, value in fitted.state_dict().items():
        np.testing.assert_allclose(value, manual.state_dict()[name], rtol=1e-6, atol=1e-7)


def test_fit_keeps_no_shuffled_copy_of_the_data() -> None:
    """During an epoch the largest allocation is far below one copy of X (32 MB here)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20_000, 400)).astype(np.float32)
    y = rng.integers(0, 4, size=20_000)
    model = pn.Sequential([pn.Dense(400, 4)], backend="numpy", seed=0)
    peaks = []

    class EpochPeak(pn.Callback):
        def on_epoch_begin(self, epoch, epochs, num_batches):
            tracemalloc.reset_peak()
            self.start = tracemalloc.get_traced_memory()[0]

        def on_epoch_end(self, epoch, logs):
            peaks.append(tracemalloc.get_traced_memory()[1] - self.start)

    tracemalloc.start()
    try:
        pn.fit(model, X, y, optimizer=optim.SGD(0.1), epochs=2, batch_size=500,
               callbacks=[EpochPeak()])
    finally:
        tracemalloc.stop()
    assert len(peaks) == 2 and max(peaks) < X.nbytes / 4, f"peaks {peaks}; X is {X.nbytes}"


def test_fit_l2_is_the_optimizer_weight_decay_plus_the_reported_penalty() -> None:
    X, y = separable_data(n=64)
    a, b = mlp("numpy", seed=6), mlp("numpy", seed=6)
    ha = pn.fit(a, X, y, optimizer=optim.Adam(0.01), epochs=2, batch_size=16, l2=0.01,
                shuffle=False)
    hb = pn.fit(b, X, y, optimizer=optim.Adam(0.01, weight_decay=0.01), epochs=2,
                batch_size=16, shuffle=False)
    for name, value in a.state_dict().items():
        np.testing.assert_allclose(value, b.state_dict()[name], rtol=1e-6, err_msg=name)
    penalty = float(losses.l2_penalty(a, 0.01))
    assert penalty > 0
    assert ha.loss[-1] == pytest.approx(hb.loss[-1] + penalty, rel=1e-6)


@pytest.mark.parametrize(
    "loss_fn",
    [losses.softmax_cross_entropy, losses.softmax_squared_error],
    ids=["cross_entropy", "squared_error"],
)
def test_loss_gradients_match_numerical(loss_fn: Callable[[Any, Any], Any],
                                        backend64: pn.Backend) -> None:
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
