"""Loss objects: the prepare/loss protocol, its parity with the functions, and one L2."""

from __future__ import annotations

import copy
import tracemalloc

import numpy as np
import pytest

import portanet as pn
from portanet import losses, optim
from tests.helpers import assert_close, separable_data


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
