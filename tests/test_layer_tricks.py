"""Every speed trick in portanet/layers against the plain formula it replaces, on every backend
(NumPy, array-api-strict and its float32-only device, PyTorch; CuPy where there is a GPU).

The plain formulas are written here as the textbook has them, on (N, C, H, W) arrays as
cs231n's ``layers.py`` does, with the backend's own namespace; the layers compute the same
numbers through their tricks (the (C, H, W, N) memory order, the bias in the product, sums as
products with ones, folded per-feature constants, outer products for one sample, ...).
tests/test_fast_paths.py holds the older checks of the same kind (im2col's rows, the bias in
the product at the layer, sum_along, tiled against general pooling, memory order).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import portanet as pn
from portanet.layers.convolution import (
    col2im,
    product_plus_bias,
    weight_and_bias_gradients,
)
from portanet.layers.dense import bias_gradient, weight_gradient
from portanet.layers.normalisation import _added, _merged
from portanet.layers.pooling import first_maximum_mask, first_maximum_shares
from tests.helpers import assert_close

CLOSE = {"rtol": 1e-5, "atol": 1e-5}
"""float32 sums of a few dozen terms in another order: a few units of rounding."""


def host(backend: pn.Backend, a: Any) -> np.ndarray:
    return backend.to_numpy(a)


# --- Dense -------------------------------------------------------------------------------------


@pytest.mark.parametrize("rows", [1, 4], ids=["one-sample", "batch"])
@pytest.mark.parametrize("transposed", [True, False], ids=["out-in-memory", "in-out-memory"])
def test_dense_gradients_match_the_plain_products(backend: pn.Backend, rows: int,
                                                  transposed: bool) -> None:
    """weight_gradient is x.T @ dout in either memory order (and by broadcasting for one
    sample); bias_gradient is sum(dout, axis=0) (a reshape for one sample)."""
    xp, rng = backend.xp, np.random.default_rng(0)
    x = backend.asarray(rng.normal(size=(rows, 5)))
    dout = backend.asarray(rng.normal(size=(rows, 3)))
    dw = weight_gradient(xp, x, dout, transposed)
    assert_close(backend, dw, host(backend, x.T @ dout), **CLOSE)
    assert_close(backend, bias_gradient(xp, dout), host(backend, xp.sum(dout, axis=0)), **CLOSE)
    if backend.name == "numpy":  # W's memory order: (out, in) row-major when transposed
        assert np.asarray(dw).flags.f_contiguous == transposed


@pytest.mark.parametrize("rows", [1, 4], ids=["one-sample", "batch"])
def test_dense_layer_is_the_plain_affine_map(backend: pn.Backend, rows: int) -> None:
    """Z = x @ W + b; dW = x.T @ dZ, db = sum(dZ, axis=0), dx = dZ @ W.T."""
    layer = pn.Dense(5, 3)
    layer.build(backend, np.random.default_rng(1))
    xp, rng = backend.xp, np.random.default_rng(0)
    layer.params["b"] = backend.asarray(np.linspace(-1.0, 1.0, 3))
    x, dz = backend.asarray(rng.normal(size=(rows, 5))), backend.asarray(rng.normal(size=(rows, 3)))
    w, b = layer.params["W"], layer.params["b"]
    assert_close(backend, layer.forward(x), host(backend, x @ w + b), **CLOSE)
    assert_close(backend, layer.backward(dz), host(backend, dz @ w.T), **CLOSE)
    assert_close(backend, layer.grads["W"], host(backend, x.T @ dz), **CLOSE)
    assert_close(backend, layer.grads["b"], host(backend, xp.sum(dz, axis=0)), **CLOSE)


# --- Conv2D ------------------------------------------------------------------------------------


@pytest.mark.parametrize("ones_row", [True, False], ids=["bias-in-product", "bias-added"])
def test_product_plus_bias_is_the_product_and_the_bias(backend: pn.Backend,
                                                       ones_row: bool) -> None:
    """With a row of ones in the columns the bias rides in the product: Wmat @ cols + b."""
    xp, rng = backend.xp, np.random.default_rng(0)
    wmat, cols = backend.asarray(rng.normal(size=(4, 6))), backend.asarray(rng.normal(size=(6, 50)))
    b = backend.asarray(rng.normal(size=(4,)))
    expected = host(backend, wmat @ cols + xp.reshape(b, (4, 1)))
    if ones_row:
        cols = xp.concat([cols, xp.ones((1, 50), dtype=cols.dtype, device=backend.device)])
    assert_close(backend, product_plus_bias(xp, wmat, b, cols, ones_row), expected, **CLOSE)


@pytest.mark.parametrize("ones_row", [True, False], ids=["bias-in-product", "bias-summed"])
def test_weight_and_bias_gradients_are_the_plain_products(backend: pn.Backend,
                                                          ones_row: bool) -> None:
    """dW = dZ @ cols.T (rows (i, j, c) back to (out, C, kh, kw)) and db = sum(dZ, axis=1),
    whether db is the product's row of the ones or a product with ones."""
    xp, rng = backend.xp, np.random.default_rng(0)
    (o, c, kh, kw), p = (4, 2, 3, 2), 40
    cols = backend.asarray(rng.normal(size=(kh * kw * c, p)))
    dz = backend.asarray(rng.normal(size=(o, p)))
    plain_w = xp.permute_dims(xp.reshape(dz @ cols.T, (o, kh, kw, c)), (0, 3, 1, 2))
    plain_b = xp.sum(dz, axis=1)
    if ones_row:
        cols = xp.concat([cols, xp.ones((1, p), dtype=cols.dtype, device=backend.device)])
    dw, db = weight_and_bias_gradients(backend, cols, dz, (o, c, kh, kw), ones_row)
    assert_close(backend, dw, host(backend, plain_w), **CLOSE)
    assert_close(backend, db, host(backend, plain_b), **CLOSE)
    if backend.name == "numpy":  # (kh, kw, C, out) memory order: Conv2D.memory_order
        assert np.transpose(dw, (2, 3, 1, 0)).flags.c_contiguous


@pytest.mark.parametrize("kernel,stride", [((3, 3), (1, 1)), ((2, 3), (2, 1)), ((3, 2), (2, 3))])
def test_col2im_adds_each_column_back_where_it_was_read(backend: pn.Backend, kernel: tuple,
                                                        stride: tuple) -> None:
    """dx[c, y*sh + i, x*sw + j, n] accumulates row (i, j, c), column (y, x, n) of dcols."""
    (kh, kw), (sh, sw), (c, h, w, n) = kernel, stride, (2, 7, 8, 3)
    ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    dcols = np.random.default_rng(0).normal(size=(kh, kw, c, ho, wo, n)).astype(np.float32)
    expected = np.zeros((c, h, w, n), dtype=np.float32)
    for i, j, y, x in np.ndindex(kh, kw, ho, wo):
        expected[:, y * sh + i, x * sw + j, :] += dcols[i, j, :, y, x, :]
    got = col2im(backend, backend.asarray(dcols.reshape(kh * kw * c, -1)), (c, h, w, n), kernel,
                 stride, (ho, wo))
    assert_close(backend, got, expected, **CLOSE)


def plain_conv_forward(xp: Any, x: Any, w: Any, b: Any, stride: tuple[int, int],
                       pads: tuple[int, int, int, int], device: Any) -> tuple[Any, Any, Any]:
    """cs231n's im2col convolution on (N, C, H, W): padded input, the (N*Ho*Wo, C*kh*kw)
    columns, and the output ``cols @ Wmat.T + b`` as (N, out, Ho, Wo)."""
    (top, bottom, left, right), (sh, sw) = pads, stride
    n, c, h, width = (int(s) for s in x.shape)
    zeros = xp.zeros((n, c, h + top + bottom, width + left + right), dtype=x.dtype,
                     device=device)
    zeros[:, :, top:top + h, left:left + width] = x
    x = zeros
    o, _, kh, kw = (int(s) for s in w.shape)
    ho, wo = (int(x.shape[2]) - kh) // sh + 1, (int(x.shape[3]) - kw) // sw + 1
    patches = [x[:, :, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw]
               for i in range(kh) for j in range(kw)]  # each (N, C, Ho, Wo)
    cols = xp.reshape(xp.permute_dims(xp.stack(patches, axis=2), (0, 3, 4, 1, 2)),
                      (n * ho * wo, c * kh * kw))  # rows (n, y, x), columns (c, i, j)
    z = cols @ xp.reshape(w, (o, c * kh * kw)).T + b
    return x, cols, xp.permute_dims(xp.reshape(z, (n, ho, wo, o)), (0, 3, 1, 2))


def plain_conv_backward(xp: Any, padded: Any, cols: Any, w: Any, dout: Any,
                        stride: tuple[int, int], pads: tuple[int, int, int, int],
                        device: Any) -> tuple[Any, Any, Any]:
    """dW = dZ.T @ cols, db = sum(dZ), dx: dZ @ Wmat folded back window by window (col2im)."""
    (top, bottom, left, right), (sh, sw) = pads, stride
    n, o, ho, wo = (int(s) for s in dout.shape)
    _, c, kh, kw = (int(s) for s in w.shape)
    dz = xp.reshape(xp.permute_dims(dout, (0, 2, 3, 1)), (n * ho * wo, o))
    dw = xp.reshape(dz.T @ cols, (o, c, kh, kw))
    dcols = xp.reshape(dz @ xp.reshape(w, (o, c * kh * kw)), (n, ho, wo, c, kh, kw))
    dx = xp.zeros(padded.shape, dtype=dout.dtype, device=device)
    for i in range(kh):
        for j in range(kw):
            key = (slice(None), slice(None), slice(i, i + sh * (ho - 1) + 1, sh),
                   slice(j, j + sw * (wo - 1) + 1, sw))
            dx[key] = dx[key] + xp.permute_dims(dcols[:, :, :, :, i, j], (0, 3, 1, 2))
    h, width = int(padded.shape[2]), int(padded.shape[3])
    return dw, xp.sum(dz, axis=0), dx[:, :, top:h - bottom, left:width - right]


CONVS = {"3x3": (lambda: pn.Conv2D(3, 4, 3), (3, 7, 8)),
         "one-channel-strided-padded": (lambda: pn.Conv2D(1, 3, (2, 3), stride=(2, 1),
                                                          padding=1), (1, 9, 8)),
         "same-2x3": (lambda: pn.Conv2D(2, 2, (2, 3), padding="same"), (2, 5, 6))}


@pytest.mark.parametrize("make,shape", CONVS.values(), ids=CONVS.keys())
def test_conv2d_in_batch_innermost_order_is_the_plain_im2col(backend: pn.Backend, make: Any,
                                                             shape: tuple) -> None:
    """Conv2D (the (C, H, W, N) columns, bias in the product for one channel, cols @ dZ.T,
    sum_along, col2im by slice additions) against the plain (N, C, H, W) im2col."""
    layer = make()
    layer.build(backend, np.random.default_rng(2))
    xp, rng = backend.xp, np.random.default_rng(0)
    layer.params["b"] = backend.asarray(np.linspace(-0.5, 0.5, layer.out_channels))
    x = backend.asarray(rng.normal(size=(3, *shape)))
    d = backend.asarray(rng.normal(size=(3, *layer.output_shape(shape))))
    w, b = layer.params["W"], layer.params["b"]
    padded, cols, expected = plain_conv_forward(xp, x, w, b, layer.stride, layer._pads,
                                                backend.device)
    dw, db, dx = plain_conv_backward(xp, padded, cols, w, d, layer.stride, layer._pads,
                                     backend.device)
    assert_close(backend, layer.forward(x), host(backend, expected), **CLOSE)
    assert_close(backend, layer.backward(d), host(backend, dx), **CLOSE)
    assert_close(backend, layer.grads["W"], host(backend, dw), **CLOSE)
    assert_close(backend, layer.grads["b"], host(backend, db), **CLOSE)


# --- BatchNorm ---------------------------------------------------------------------------------


def test_pairwise_merge_of_parts_is_the_whole_batchs_mean_and_variance(
        backend: pn.Backend) -> None:
    """_merged (Chan, Golub and LeVeque's update) of uneven parts, each given as its sum and
    its squared deviations from its own mean, gives the mean and squared deviations of all
    rows, far from zero in float32; _added adds every part's sums."""
    xp, rng = backend.xp, np.random.default_rng(0)
    rows = (5, 11, 3)
    data = [1000.0 + k + rng.normal(size=(3, n)) for k, n in enumerate(rows)]  # (C, rows)
    parts = []
    for values in data:
        a = backend.asarray(values)
        total = xp.sum(a, axis=1)
        centred = a - xp.reshape(total * (1.0 / a.shape[1]), (3, 1))
        parts.append(((total, xp.sum(centred * centred, axis=1)), int(a.shape[1])))
    whole = np.concatenate(data, axis=1)
    mean, squares, m = _merged(parts)
    assert m == sum(rows)
    assert_close(backend, mean, whole.mean(axis=1), rtol=1e-6, atol=0)
    assert_close(backend, squares * (1.0 / m), whole.var(axis=1), rtol=1e-3, atol=0)
    (total, squares), m = _added(parts)
    assert m == sum(rows)
    assert_close(backend, total, whole.sum(axis=1), rtol=1e-6, atol=0)
    own = sum(((v - v.mean(axis=1, keepdims=True)) ** 2).sum(axis=1) for v in data)
    assert_close(backend, squares, own, rtol=1e-4, atol=0)


def plain_batchnorm(xp: Any, x: Any, d: Any, gamma: Any, beta: Any, mean: Any | None,
                    var: Any | None, eps: float) -> tuple[Any, Any, Any, Any]:
    """y, dx, dgamma, dbeta of ``y = gamma * (x - mean) / sqrt(var + eps) + beta`` over the
    features of (N, C) or the channels of (N, C, H, W); the batch's statistics (mean and var
    None, training) or the given ones (evaluation)."""
    axes = (0,) if x.ndim == 2 else (0, 2, 3)
    shape = (1, -1) if x.ndim == 2 else (1, -1, 1, 1)
    training = mean is None
    if training:
        mean, var = xp.mean(x, axis=axes), xp.var(x, axis=axes)
    inv_std = xp.reshape(1.0 / xp.sqrt(var + eps), shape)
    xhat = (x - xp.reshape(mean, shape)) * inv_std
    y = xp.reshape(gamma, shape) * xhat + xp.reshape(beta, shape)
    dxhat = d * xp.reshape(gamma, shape)
    if training:
        dxhat = (dxhat - xp.mean(dxhat, axis=axes, keepdims=True)
                 - xhat * xp.mean(dxhat * xhat, axis=axes, keepdims=True))
    return y, dxhat * inv_std, xp.sum(d * xhat, axis=axes), xp.sum(d, axis=axes)


@pytest.mark.parametrize("shape", [(7, 3), (5, 3, 4, 6)], ids=["features", "images"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_batchnorm_is_the_plain_normalisation(backend: pn.Backend, shape: tuple,
                                              training: bool) -> None:
    """BatchNorm (the (C, H*W*N) table, sums as products with ones, squares as vecdot,
    per-feature constants folded into two passes forward and three backward) against the
    textbook formulas on (N, C[, H, W]); the running statistics move as PyTorch's do."""
    layer = pn.BatchNorm(3, momentum=0.2)
    layer.build(backend, np.random.default_rng(0))
    xp, rng = backend.xp, np.random.default_rng(1)
    layer.params["gamma"], layer.params["beta"] = (backend.asarray(np.array([1.0, -2.0, 0.5])),
                                                   backend.asarray(np.array([0.1, 0.0, -0.3])))
    running = {"running_mean": np.array([0.5, -1.0, 2.0]), "running_var": np.array([0.5, 2.0, 1.5])}
    for key, value in running.items():
        layer.load_buffer(key, value)
    x = backend.asarray(3.0 + rng.normal(size=shape))
    d = backend.asarray(rng.normal(size=shape))
    stats = (None, None) if training else tuple(backend.asarray(v) for v in running.values())
    y, dx, dgamma, dbeta = plain_batchnorm(xp, x, d, layer.params["gamma"],
                                           layer.params["beta"], *stats, layer.eps)
    layer.training = training
    assert_close(backend, layer.forward(x), host(backend, y), **CLOSE)
    assert_close(backend, layer.backward(d), host(backend, dx), **CLOSE)
    assert_close(backend, layer.grads["gamma"], host(backend, dgamma), **CLOSE)
    assert_close(backend, layer.grads["beta"], host(backend, dbeta), **CLOSE)
    if training:
        axes = (0,) if len(shape) == 2 else (0, 2, 3)
        values, m = host(backend, x), int(np.prod(shape)) // 3
        running["running_mean"] = 0.8 * running["running_mean"] + 0.2 * values.mean(axis=axes)
        running["running_var"] = (0.8 * running["running_var"]
                                  + 0.2 * values.var(axis=axes) * m / (m - 1))
    for key, value in running.items():
        assert_close(backend, layer.buffers[key], value, **CLOSE)


# --- pooling -----------------------------------------------------------------------------------


def first_maximum_windows(windows: np.ndarray) -> np.ndarray:
    """A 0/1 mask of (windows, k) values: 1 at the first maximum of each window."""
    mask = np.zeros(windows.shape)
    mask[np.arange(len(windows)), np.argmax(windows, axis=1)] = 1.0
    return mask


def test_first_maximum_mask_marks_the_first_maximum_of_each_tile(backend: pn.Backend) -> None:
    """The tiled max-pool backward's one comparison and tie clearing: true at the first
    position (row-major in the window) that holds the window's maximum, ties included."""
    kh, kw = 2, 3
    tiles = np.random.default_rng(0).integers(0, 3, size=(4, kh, 5, kw, 6)).astype(np.float32)
    top = tiles.max(axis=(1, 3))
    got = first_maximum_mask(backend.xp, backend.asarray(tiles), backend.asarray(top), (kh, kw))
    windows = np.moveaxis(tiles, (1, 3), (3, 4)).reshape(-1, kh * kw)  # (windows, kh*kw)
    expected = np.moveaxis(first_maximum_windows(windows).reshape(4, 5, 6, kh, kw), (3, 4),
                           (1, 3))
    assert_close(backend, backend.xp.astype(got, backend.dtype), expected, rtol=0, atol=0)


def test_first_maximum_shares_give_the_gradient_to_the_first_maximum(
        backend: pn.Backend) -> None:
    """The general max-pool backward: ``d`` to the first of the parts that holds the
    maximum, 0 to the others, ties included."""
    values = np.random.default_rng(0).integers(0, 3, size=(4, 3, 5)).astype(np.float32)
    d = np.random.default_rng(1).normal(size=(3, 5)).astype(np.float32)
    parts = [backend.asarray(v) for v in values]
    shares = first_maximum_shares(backend.xp, parts, backend.asarray(values.max(axis=0)),
                                  backend.asarray(d))
    mask = first_maximum_windows(values.reshape(4, -1).T).T.reshape(values.shape)
    for share, expected in zip(shares, mask * d, strict=True):
        assert_close(backend, share, expected, rtol=0, atol=0)


# --- activations and Flatten -------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["rows", "images"])
def test_activations_are_their_plain_formulas(backend: pn.Backend, layout: str) -> None:
    """ReLU's float mask times dout is where(x > 0, dout, 0); Sigmoid through tanh is
    1 / (1 + exp(-x)); Tanh is tanh; images go through their (C, H, W, N) views (layout's
    ``elementwise``) and come back the same numbers."""
    xp, rng = backend.xp, np.random.default_rng(0)
    shape = (4, 6) if layout == "rows" else (2, 3, 4, 5)
    x, d = backend.asarray(rng.normal(size=shape) * 3.0), backend.asarray(rng.normal(size=shape))
    zero = xp.zeros(shape, dtype=x.dtype, device=backend.device)
    plain = {pn.ReLU: (xp.maximum(x, zero), xp.where(x > 0, d, zero)),
             pn.Sigmoid: (1.0 / (1.0 + xp.exp(-x)), None), pn.Tanh: (xp.tanh(x), None)}
    for cls, (y, dx) in plain.items():
        layer = cls()
        layer.build(backend, np.random.default_rng(0))
        out = layer.forward(x)
        assert_close(backend, out, host(backend, y), rtol=1e-6, atol=1e-7)
        if dx is None:  # the derivative from the output: s * (1 - s), 1 - t**2
            dx = d * out * (1.0 - out) if cls is pn.Sigmoid else d * (1.0 - out * out)
        assert_close(backend, layer.backward(d), host(backend, dx), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("shape", [(3, 2, 4, 5), (3, 4, 5)], ids=["images", "3-d"])
def test_flatten_is_the_plain_reshape(backend: pn.Backend, shape: tuple) -> None:
    """Flatten's transposed view of the (C, H, W, N) buffer is reshape(x, (N, -1)), and its
    gradient reshape(dout, x.shape), on every backend."""
    xp, rng = backend.xp, np.random.default_rng(0)
    layer = pn.Flatten()
    layer.build(backend, np.random.default_rng(0))
    x = backend.asarray(rng.normal(size=shape))
    d = backend.asarray(rng.normal(size=(shape[0], int(np.prod(shape[1:])))))
    assert_close(backend, layer.forward(x), host(backend, xp.reshape(x, (shape[0], -1))),
                 rtol=0, atol=0)
    assert_close(backend, layer.backward(d), host(backend, xp.reshape(d, shape)), rtol=0, atol=0)
