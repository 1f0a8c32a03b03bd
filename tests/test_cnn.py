"""Convolution, pooling and BatchNorm: agreement with PyTorch, ties, bad input, backend parity,
augmentation and the one-cycle schedule."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import portanet as pn
from portanet import optim
from portanet.augment import RandomShift
from tests.helpers import assert_close, assert_model_gradients

HAVE_TORCH = importlib.util.find_spec("torch") is not None
needs_torch = pytest.mark.skipif(not HAVE_TORCH, reason="PyTorch is not installed")


def built(layer: pn.Layer, backend: pn.Backend) -> pn.Layer:
    layer.build(backend, np.random.default_rng(1))
    return layer


def torch_check(layer: pn.Layer, torch_fn, x: np.ndarray, backend: pn.Backend,
                params: dict[str, str]) -> None:
    """Forward, input gradient and parameter gradients of ``layer`` against ``torch_fn``
    (a function of the torch input and a dict of torch parameters named as in ``params``:
    portanet name -> torch name)."""
    import torch

    tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    tparams = {tname: torch.tensor(backend.to_numpy(layer.params[name]), dtype=torch.float64,
                                   requires_grad=True) for name, tname in params.items()}
    tout = torch_fn(tx, tparams)
    r = np.random.default_rng(7).normal(size=tuple(tout.shape))
    (tout * torch.tensor(r)).sum().backward()
    out = layer.forward(backend.asarray(x))
    dx = layer.backward(backend.asarray(r))
    sums = {"op": "matmul", "size": int(np.prod(x.shape[1:]))}  # bounds every sum's length
    assert_close(backend, out, tout.detach().numpy(), **sums)
    assert_close(backend, dx, tx.grad.numpy(), **sums)
    for name, tname in params.items():
        assert_close(backend, layer.grads[name], tparams[tname].grad.numpy(), **sums)


CONV_CASES = [
    dict(kernel_size=3), dict(kernel_size=3, stride=2), dict(kernel_size=3, padding=1),
    dict(kernel_size=(2, 3), padding="same"), dict(kernel_size=(3, 1), stride=(2, 1), padding=2),
    dict(kernel_size=5),
]


@needs_torch
@pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel")
@pytest.mark.parametrize("case", CONV_CASES, ids=[str(c) for c in CONV_CASES])
def test_conv2d_matches_torch(case: dict, backend64: pn.Backend) -> None:
    import torch.nn.functional as F

    layer = built(pn.Conv2D(3, 4, **case), backend64)
    layer.load_param("b", np.random.default_rng(3).normal(size=4))
    x = np.random.default_rng(0).normal(size=(2, 3, 7, 8))
    padding = case.get("padding", 0)
    padding = tuple(padding) if isinstance(padding, list) else padding
    torch_check(layer, lambda t, p: F.conv2d(t, p["w"], p["b"], stride=case.get("stride", 1),
                                             padding=padding),
                x, backend64, {"W": "w", "b": "b"})


@needs_torch
@pytest.mark.parametrize("shape,kernel,stride", [((2, 3, 8, 6), 2, None), ((2, 3, 7, 9), 3, 2),
                                                 ((1, 2, 5, 5), 2, 1)])
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pools_match_torch(kind: str, shape: tuple, kernel: int, stride: int | None,
                           backend64: pn.Backend) -> None:
    import torch.nn.functional as F

    cls, fn = (pn.MaxPool2D, F.max_pool2d) if kind == "max" else (pn.AvgPool2D, F.avg_pool2d)
    layer = built(cls(kernel, stride), backend64)
    x = np.random.default_rng(0).normal(size=shape)
    torch_check(layer, lambda t, p: fn(t, kernel, stride), x, backend64, {})


@needs_torch
@pytest.mark.parametrize("shape", [(6, 4), (3, 4, 5, 2)], ids=["2d", "4d"])
def test_batchnorm_matches_torch(shape: tuple, backend64: pn.Backend) -> None:
    """Training steps (output, gradients, running statistics), then evaluation."""
    import torch

    layer = built(pn.BatchNorm(4, momentum=0.2), backend64)
    rng = np.random.default_rng(0)
    layer.load_param("gamma", rng.normal(size=4))
    layer.load_param("beta", rng.normal(size=4))
    tbn = (torch.nn.BatchNorm1d if len(shape) == 2 else torch.nn.BatchNorm2d)(
        4, momentum=0.2).double()
    with torch.no_grad():
        tbn.weight.copy_(torch.tensor(backend64.to_numpy(layer.params["gamma"])))
        tbn.bias.copy_(torch.tensor(backend64.to_numpy(layer.params["beta"])))
    for step in range(3):
        x = rng.normal(size=shape) * 2 + step
        tbn.weight.grad = tbn.bias.grad = None
        torch_check(layer, lambda t, p: tbn(t), x, backend64, {})
        assert_close(backend64, layer.grads["gamma"], tbn.weight.grad.numpy())
        assert_close(backend64, layer.grads["beta"], tbn.bias.grad.numpy())
        assert_close(backend64, layer.buffers["running_mean"], tbn.running_mean.numpy())
        assert_close(backend64, layer.buffers["running_var"], tbn.running_var.numpy())
    layer.training = False
    tbn.eval()
    torch_check(layer, lambda t, p: tbn(t), rng.normal(size=shape), backend64, {})


def test_maxpool_ties_send_the_gradient_to_one_input(backend: pn.Backend) -> None:
    layer = built(pn.MaxPool2D(2), backend)
    x = np.zeros((2, 3, 4, 6))
    x[0, 0, 0, 0] = x[0, 0, 1, 1] = 5.0  # a tie between two positions of one window
    layer.forward(backend.asarray(x))
    dx = backend.to_numpy(layer.backward(backend.asarray(np.ones((2, 3, 2, 3)))))
    assert dx.sum() == 2 * 3 * 2 * 3  # one gradient per window, never doubled
    assert dx[0, 0, 0, 0] == 1.0 and dx[0, 0, 1, 1] == 0.0
    overlapping = built(pn.MaxPool2D(2, stride=1), backend)
    overlapping.forward(backend.asarray(np.zeros((1, 1, 3, 3))))
    dx = backend.to_numpy(overlapping.backward(backend.asarray(np.ones((1, 1, 2, 2)))))
    assert dx.sum() == 4.0


@pytest.mark.parametrize("layer,shape,message", [
    (lambda: pn.Conv2D(3, 4, 3), (2, 1, 8, 8), r"expects samples of shape \(3, height, width\)"
                                               r", got \(1, 8, 8\)"),
    (lambda: pn.Conv2D(1, 4, 5, padding=1), (2, 1, 2, 9), r"kernel \(5, 5\) is larger than the "
                                                          r"padded input \(4, 11\)"),
    (lambda: pn.BatchNorm(8), (2, 4, 3, 3), r"\(8,\) or \(8, height, width\), got \(4, 3, 3\)"),
    (lambda: pn.BatchNorm(8), (5, 6), r"got \(6,\)"),
    (lambda: pn.MaxPool2D(3), (2, 1, 2, 2), r"window \(3, 3\) is larger than the input"),
])
def test_bad_input_names_both_shapes(layer, shape: tuple, message: str) -> None:
    model = pn.Sequential([layer()], backend="numpy", seed=0)
    with pytest.raises(ValueError, match=message):
        pn.predict(model, np.zeros(shape, dtype=np.float32))
    with pytest.raises(ValueError, match=r"layer 0 does not fit.*" + message):
        pn.Sequential([layer()], backend="numpy", input_shape=shape[1:])


def test_chain_error_names_the_layer_and_both_shapes() -> None:
    with pytest.raises(ValueError, match=r"layer 3 does not fit the input of shape \(1, 28, 28\) "
                                         r"\(after layers 0-2 it has shape \(24, 12, 12\)\)"):
        pn.Sequential([pn.Conv2D(1, 24, 5), pn.MaxPool2D(2), pn.ReLU(), pn.Conv2D(20, 8, 3)],
                      input_shape=(1, 28, 28), backend="numpy")
    model = pn.recipes.get_recipe("cnn-fast").build("numpy")
    with pytest.raises(ValueError, match=r"reshape it, e.g. X.reshape\(-1, 1, 28, 28\)"):
        pn.predict(model, np.zeros((2, 784), dtype=np.float32))


def small_cnn(backend: pn.Backend | str, seed: int = 0) -> pn.Sequential:
    return pn.Sequential(
        [pn.Conv2D(1, 4, 3, padding=1), pn.BatchNorm(4), pn.ReLU(), pn.MaxPool2D(2),
         pn.Conv2D(4, 6, 3), pn.AvgPool2D(2), pn.Flatten(), pn.Dense(6, 8), pn.BatchNorm(8),
         pn.ReLU(), pn.Dense(8, 3)],
        backend=backend, seed=seed, input_shape=(1, 8, 8))


def test_cnn_training_step_is_the_same_on_every_backend(backend: pn.Backend) -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 1, 8, 8)).astype(np.float32), rng.integers(0, 3, 16)
    reference, model = small_cnn("numpy"), small_cnn(backend)
    # SGD, not Adam: a bias before BatchNorm has a zero gradient up to rounding, which Adam
    # would scale up to full steps and so make the rounding of each backend visible.
    for m in (reference, model):
        pn.fit(m, x, y, optimizer=optim.SGD(0.1, momentum=0.9), epochs=2, batch_size=8,
               shuffle=False)
    want, got = reference.state_dict(), model.state_dict()
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=2e-4, atol=2e-5, err_msg=name)


def test_cnn_with_batchnorm_saved_on_one_backend_predicts_the_same_on_another(
    backend: pn.Backend, tmp_path: Path
) -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(32, 1, 8, 8)).astype(np.float32), rng.integers(0, 3, 32)
    model = small_cnn(backend)
    pn.fit(model, x, y, optimizer=optim.Adam(0.01), epochs=2, batch_size=8)
    path = pn.save(model, tmp_path / "cnn.npz")
    for target in ("numpy", backend):
        loaded = pn.load(path, backend=target)
        assert loaded.input_shape == (1, 8, 8)
        np.testing.assert_allclose(pn.predict_proba(loaded, x), pn.predict_proba(model, x)
                                   if backend.name == "numpy" else
                                   backend.to_numpy(pn.predict_proba(model, backend.asarray(x))),
                                   rtol=1e-4, atol=1e-5)


def test_random_shift_moves_each_image_within_bounds(backend: pn.Backend) -> None:
    x = np.zeros((64, 1, 9, 9), dtype=np.float32)
    x[:, 0, 4, 4] = 1.0  # one lit pixel in the centre
    out = backend.to_numpy(RandomShift(2)(backend.asarray(x), backend))
    assert out.shape == x.shape and out.sum() == 64  # nothing lost at 2 pixels from the edge
    where = np.argwhere(out[:, 0] == 1.0)
    rows, cols = where[:, 1] - 4, where[:, 2] - 4
    assert set(rows) == set(cols) == {-2, -1, 0, 1, 2}  # every offset drawn, none beyond
    assert np.any(rows != cols)  # rows and columns drawn independently
    again = backend.to_numpy(RandomShift(2)(backend.asarray(x), backend))
    assert not np.array_equal(again, out)  # fresh offsets for each batch
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        RandomShift(1)(backend.asarray(np.zeros((2, 81), dtype=np.float32)), backend)


def test_fit_with_augment_is_seeded_and_changes_training() -> None:
    rng = np.random.default_rng(2)
    x, y = rng.random(size=(32, 1, 8, 8)).astype(np.float32), rng.integers(0, 3, 32)
    runs = []
    for augment in (RandomShift(1), RandomShift(1), None):
        model = small_cnn("numpy", seed=4)
        pn.fit(model, x, y, optimizer=optim.Adam(0.01), epochs=2, batch_size=8, augment=augment)
        runs.append(model.state_dict()["0.W"])
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.allclose(runs[0], runs[2])


@needs_torch
def test_one_cycle_matches_torch() -> None:
    import torch

    p = torch.nn.Parameter(torch.zeros(1))
    topt = torch.optim.Adam([p], lr=1.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(topt, max_lr=3e-3, total_steps=50,
                                                pct_start=0.25, cycle_momentum=False)
    ours = optim.OneCycle(optim.Adam(), max_lr=3e-3, total_steps=50)
    for step in range(50):
        assert ours.lr_at(step) == pytest.approx(topt.param_groups[0]["lr"], rel=1e-9)
        topt.step()
        sched.step()


def test_one_cycle_sets_the_inner_rate_each_step() -> None:
    model = pn.Sequential([pn.Dense(2, 2)], backend="numpy", seed=0)
    inner = optim.SGD(0.1)
    opt = optim.OneCycle(inner, max_lr=1.0, total_steps=10)
    x, y = np.ones((4, 2), dtype=np.float32), np.array([0, 1, 0, 1])
    pn.fit(model, x, y, optimizer=opt, epochs=10, batch_size=4)
    assert opt.steps == 10 and inner.lr == pytest.approx(opt.lr_at(9))
    assert max(opt.lr_at(s) for s in range(10)) == pytest.approx(1.0, rel=0.05)


def test_loss_gradient_through_a_cnn_matches_numerical(backend64: pn.Backend) -> None:
    """The whole chain, BatchNorm in training mode included."""
    model = small_cnn(backend64)
    x = backend64.asarray(np.random.default_rng(0).normal(size=(4, 1, 8, 8)))
    buffers = {name: b for name, b in model.named_buffers()}
    assert_model_gradients(model, x, backend64.asarray(np.array([0, 1, 2, 1])), first=4)
    assert buffers


def test_first_convolution_skips_its_input_gradient(backend: pn.Backend) -> None:
    """The first layer's input gradient is never used: Conv2D skips the column product and
    col2im, and its weight gradients are the same as when it computes everything."""
    rng = np.random.default_rng(0)
    model = small_cnn(backend)
    x = backend.asarray(rng.normal(size=(4, 1, 8, 8)))
    d = backend.asarray(rng.normal(size=(4, 3)))
    model.forward(x)
    assert model.backward(d, need_input_grad=False) is None
    skipped = {k: backend.to_numpy(g) for k, g in model.layers[0].grads.items()}
    model.forward(x)
    assert model.backward(d).shape == x.shape
    for k, g in model.layers[0].grads.items():
        np.testing.assert_array_equal(backend.to_numpy(g), skipped[k])
