"""Optimizers against updates computed by hand, on every backend."""

from __future__ import annotations

import numpy as np
import pytest

import portanet as pn
from portanet import optim
from tests.helpers import assert_close

W0 = np.array([[1.0, -2.0], [0.5, 0.0]])
B0 = np.array([0.1, -0.1])
G1 = np.array([[0.2, -0.4], [1.0, 0.0]])
G2 = np.array([[-0.1, 0.3], [0.5, 2.0]])
GB = np.array([0.5, -0.5])


def one_dense_model(backend: pn.Backend) -> pn.Sequential:
    model = pn.Sequential([pn.Dense(2, 2)], backend=backend, seed=0)
    model.load_state_dict({"0.W": W0, "0.b": B0})
    return model


def step(model: pn.Sequential, opt: optim.Optimizer, gw: np.ndarray, gb: np.ndarray) -> None:
    layer = model.layers[0]
    layer.grads["W"] = model.backend.asarray(gw)
    layer.grads["b"] = model.backend.asarray(gb)
    opt.step(model)


def params(model: pn.Sequential) -> tuple:
    return model.layers[0].params["W"], model.layers[0].params["b"]


def test_plain_sgd(backend: pn.Backend) -> None:
    model = one_dense_model(backend)
    step(model, optim.SGD(lr=0.1), G1, GB)
    w, b = params(model)
    assert_close(backend, w, W0 - 0.1 * G1)
    assert_close(backend, b, B0 - 0.1 * GB)


def test_sgd_momentum_two_steps(backend: pn.Backend) -> None:
    model = one_dense_model(backend)
    opt = optim.SGD(lr=0.1, momentum=0.9)
    step(model, opt, G1, GB)
    step(model, opt, G2, GB)
    v1 = G1
    v2 = 0.9 * v1 + G2
    assert_close(backend, params(model)[0], W0 - 0.1 * v1 - 0.1 * v2)


def test_sgd_nesterov_two_steps(backend: pn.Backend) -> None:
    model = one_dense_model(backend)
    opt = optim.SGD(lr=0.1, momentum=0.9, nesterov=True)
    step(model, opt, G1, GB)
    step(model, opt, G2, GB)
    v1 = G1
    v2 = 0.9 * v1 + G2
    expected = W0 - 0.1 * (G1 + 0.9 * v1) - 0.1 * (G2 + 0.9 * v2)
    assert_close(backend, params(model)[0], expected)


def test_sgd_weight_decay_spares_biases(backend: pn.Backend) -> None:
    model = one_dense_model(backend)
    step(model, optim.SGD(lr=0.1, weight_decay=0.01), G1, GB)
    w, b = params(model)
    assert_close(backend, w, W0 - 0.1 * (G1 + 0.01 * W0))
    assert_close(backend, b, B0 - 0.1 * GB)


def test_rmsprop_two_steps(backend: pn.Backend) -> None:
    model = one_dense_model(backend)
    opt = optim.RMSProp(lr=0.01, rho=0.9, eps=1e-8)
    step(model, opt, G1, GB)
    step(model, opt, G2, GB)
    s1 = 0.1 * G1**2
    w1 = W0 - 0.01 * G1 / (np.sqrt(s1) + 1e-8)
    s2 = 0.9 * s1 + 0.1 * G2**2
    w2 = w1 - 0.01 * G2 / (np.sqrt(s2) + 1e-8)
    assert_close(backend, params(model)[0], w2, rtol=1e-5, atol=1e-5)


def test_adam_two_steps(backend: pn.Backend) -> None:
    model = one_dense_model(backend)
    opt = optim.Adam(lr=0.01, betas=(0.9, 0.999), eps=1e-8)
    step(model, opt, G1, GB)
    step(model, opt, G2, GB)
    w = W0.copy()
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    for t, g in ((1, G1), (2, G2)):
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g**2
        w = w - 0.01 * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
    assert_close(backend, params(model)[0], w, rtol=1e-5, atol=1e-5)
    assert opt.steps == 2


def test_first_adam_step_moves_by_about_lr(backend: pn.Backend) -> None:
    """With bias correction the first step is lr * g / |g|: about lr for every nonzero gradient
    (without it, (1 - beta1) / sqrt(1 - beta2) = 3.16 times as far)."""
    model = one_dense_model(backend)
    step(model, optim.Adam(lr=0.01), G1, GB)
    moved = np.abs(backend.to_numpy(params(model)[0]) - W0)
    np.testing.assert_allclose(moved[G1 != 0], 0.01, rtol=1e-3)
    assert moved[G1 == 0].max() == 0.0


def test_float32_stays_float32(backend: pn.Backend) -> None:
    model = one_dense_model(backend)
    for opt in (optim.SGD(0.1, momentum=0.9, nesterov=True, weight_decay=1e-4),
                optim.RMSProp(0.01, weight_decay=1e-4), optim.Adam(0.01, weight_decay=1e-4)):
        step(model, opt, G1, GB)
        step(model, opt, G2, GB)
        for _, p, _ in model.named_parameters():
            assert p.dtype == backend.dtype
        for state in opt.state.values():
            for buffer in state.values():
                assert buffer.dtype == backend.dtype


@pytest.mark.parametrize(
    "make",
    [
        lambda: optim.SGD(lr=0),
        lambda: optim.SGD(lr=-1),
        lambda: optim.SGD(lr=0.1, momentum=1.0),
        lambda: optim.SGD(lr=0.1, nesterov=True),
        lambda: optim.RMSProp(lr=0.1, rho=1.5),
        lambda: optim.Adam(lr=0.1, betas=(0.9, 1.0)),
        lambda: optim.Adam(lr=float("nan")),
    ],
)
def test_bad_hyperparameters_are_rejected(make) -> None:
    with pytest.raises(ValueError):
        make()


def test_schedules() -> None:
    linear = optim.linear_decay(0.1, 0.0)
    assert [round(linear(e, 4), 6) for e in range(4)] == [0.1, 0.075, 0.05, 0.025]
    cosine = optim.cosine_decay(1.0, 0.0)
    assert cosine(0, 10) == 1.0 and cosine(5, 10) == pytest.approx(0.5)
    warm = optim.cosine_decay(1.0, warmup_epochs=1)
    assert warm(0, 10) == 0.5 and warm(1, 10) == 1.0


@pytest.mark.parametrize("name", ["numpy", "torch", "array_api_strict"])
def test_subtract_scaled_fast_paths_match_the_portable_form(name: str) -> None:
    """``p -= factor * g`` through each backend's fast path against the portable form, on a
    transposed view like Dense's W; NumPy's path is bit for bit the same and updates in place
    through one reused scratch buffer."""
    if name != "numpy":
        pytest.importorskip("torch" if name == "torch" else name)
    backend = pn.get_backend(name, "float32", seed=0)
    xp = backend.xp
    rng = np.random.default_rng(0)
    shape = (300, 256)  # above SCRATCH_MIN_SIZE, so NumPy takes its scratch-buffer path
    host_p, host_g = rng.normal(size=shape), rng.normal(size=shape)
    p = xp.permute_dims(backend.asarray(host_p.T.copy()), (1, 0))
    g = xp.permute_dims(backend.asarray(host_g.T.copy()), (1, 0))
    expected = backend.to_numpy(p) - np.float32(0.3) * backend.to_numpy(g)
    state: dict = {}
    out = optim.subtract_scaled(backend.capabilities, p, g, 0.3, state)
    exact = name != "torch"  # torch fuses the multiply-subtract: one rounding, not two
    assert_close(backend, out, expected, rtol=0 if exact else 1e-6, atol=0 if exact else 1e-7)
    if name == "numpy":
        assert host_p.size >= optim.SCRATCH_MIN_SIZE
        assert out is p and state["scratch"].strides == g.strides
        scratch = state["scratch"]
        optim.subtract_scaled(backend.capabilities, p, g, 0.3, state)
        assert state["scratch"] is scratch


def test_plain_sgd_with_weight_decay_fast_path(backend: pn.Backend) -> None:
    """Plain SGD's decay as p *= 1 - lr*wd; p -= lr*g equals p -= lr*(g + wd*p)."""
    model = one_dense_model(backend)
    step(model, optim.SGD(lr=0.1, weight_decay=0.5), G1, GB)
    W, b = params(model)
    assert_close(backend, W, W0 - 0.1 * (G1 + 0.5 * W0), rtol=1e-6)
    assert_close(backend, b, B0 - 0.1 * GB)


FLAT_CASES = {
    "momentum": lambda: optim.SGD(0.05, momentum=0.9, weight_decay=1e-3),
    "nesterov": lambda: optim.SGD(0.05, momentum=0.9, nesterov=True),
    "rmsprop": lambda: optim.RMSProp(0.01, weight_decay=1e-3),
    "adam": lambda: optim.Adam(0.01, weight_decay=1e-3),
}


def small_cnn(backend: pn.Backend) -> pn.Sequential:
    return pn.Sequential([pn.Conv2D(1, 3, 3), pn.BatchNorm(3), pn.ReLU(), pn.MaxPool2D(2),
                          pn.Flatten(), pn.Dense(27, 5), pn.ReLU(), pn.Dense(5, 3)],
                         backend=backend, seed=3, input_shape=(1, 8, 8))


@pytest.mark.parametrize("make", FLAT_CASES.values(), ids=FLAT_CASES.keys())
def test_flat_update_is_identical_to_the_per_parameter_update(backend: pn.Backend,
                                                               make: object) -> None:
    """One update over all parameters at once (the default for optimizers with state) against
    one update per parameter: bit for bit, across a reload of the weights in mid-training."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(24, 1, 8, 8)).astype(np.float32), rng.integers(0, 3, 24)
    states = []
    for flat in (True, False):
        model, opt = small_cnn(backend), make()
        opt.flat = flat
        assert opt.updates_flat == flat
        pn.fit(model, x, y, optimizer=opt, epochs=2, batch_size=8, l2=1e-3)
        model.load_state_dict(model.state_dict())  # new arrays: the flat store gathers again
        pn.fit(model, x, y, optimizer=opt, epochs=1, batch_size=8)
        states.append(model.state_dict())
    for name in states[0]:
        np.testing.assert_array_equal(states[0][name], states[1][name], err_msg=name)


def test_flat_update_keeps_names_shapes_and_the_dense_layout() -> None:
    backend = pn.get_backend("numpy", "float32", seed=0)
    model, opt = small_cnn(backend), optim.Adam(0.01)
    before = {name: tuple(p.shape) for name, p, _ in model.named_parameters()}
    rng = np.random.default_rng(0)
    pn.fit(model, rng.normal(size=(8, 1, 8, 8)).astype(np.float32), rng.integers(0, 3, 8),
           optimizer=opt, epochs=1, batch_size=8)
    assert {name: tuple(p.shape) for name, p, _ in model.named_parameters()} == before
    flat = opt._flat.values
    assert all(np.shares_memory(p, flat) for _, p, _ in model.named_parameters())
    assert model.layers[5].params["W"].flags.f_contiguous == backend.weights_transposed
    assert set(opt.state) == {"*"} and opt.state["*"]["m"].shape == flat.shape


@pytest.mark.parametrize("make", FLAT_CASES.values(), ids=FLAT_CASES.keys())
def test_flat_update_in_pieces_is_identical(backend: pn.Backend, make: object) -> None:
    """The flat update run as pieces of the parameters (what the parallel engine runs on its
    threads, :meth:`Optimizer.plan`) against the whole: bit for bit, parameters and optimizer
    state, over steps with weight decay, the pieces run last first. The first step creates
    the state whole; later steps split where the arrays are updated in place."""
    rng = np.random.default_rng(1)
    grads = [{(i, key): rng.normal(size=p.shape).astype(np.float32)
              for i, layer in enumerate(small_cnn(backend).layers)
              for key, p in layer.params.items()} for _ in range(4)]
    results = []
    for parts in (1, 2, 3):
        model, opt, counts = small_cnn(backend), make(), []
        for g in grads:
            for (i, key), value in g.items():
                model.layers[i].grads[key] = backend.asarray(value)
            pieces = opt.plan(model, l2=1e-3, parts=parts)
            counts.append(len(pieces))
            for piece in reversed(pieces):  # the pieces must not depend on their order
                piece()
        split = parts if backend.capabilities.in_place else 1
        assert counts == [1, split, split, split]
        results.append((model.state_dict(),
                        {k: backend.to_numpy(v) for k, v in opt.state["*"].items()}))
    for whole, pieces in zip(results[0], results[1], strict=True):
        for name in whole:
            np.testing.assert_array_equal(whole[name], pieces[name], err_msg=name)
    for whole, pieces in zip(results[0], results[2], strict=True):
        for name in whole:
            np.testing.assert_array_equal(whole[name], pieces[name], err_msg=name)


def test_a_subclass_that_overrides_step_plans_one_piece_its_step() -> None:
    class Counting(optim.SGD):
        calls = 0

        def step(self, model: pn.Sequential, l2: float = 0.0) -> None:
            Counting.calls += 1
            super().step(model, l2)

    model = small_cnn(pn.get_backend("numpy", seed=0))
    for layer in model.layers:
        for key, p in layer.params.items():
            layer.grads[key] = p * 0.0
    pieces = Counting(0.1, momentum=0.9).plan(model, parts=4)
    assert len(pieces) == 1
    pieces[0]()
    assert Counting.calls == 1
