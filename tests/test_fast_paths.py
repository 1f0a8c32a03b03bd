"""Every fast path against the standard path it replaces, on every backend: the backend's
capabilities (each seam row's ``capabilities``) on, then off (``backend.portable()``, what
array-api-strict always runs), and the pooling layers' tiling path against the general one;
and the (C, H, W, N) memory order the image layers hand each other."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import portanet as pn
from portanet.layers.convolution import columns
from portanet.layers.layout import TO_INNER
from tests.helpers import assert_close


def test_slice_addition_paths_agree(backend: pn.Backend) -> None:
    """The in-place view path (NumPy, CuPy, PyTorch) and the __setitem__ path give one result."""
    rng = np.random.default_rng(0)
    base, part = rng.normal(size=(2, 3, 7, 7)), rng.normal(size=(2, 3, 3, 3))
    key = (slice(None), slice(None), slice(1, 6, 2), slice(0, 5, 2))
    expected = base.copy()
    expected[key] += part
    for b in (backend, backend.portable()):
        target = b.asarray(base)
        assert_close(b, b.add_to_slice(target, key, b.asarray(part)), expected)


@pytest.mark.parametrize("kernel,stride,hw", [((3, 3), (1, 1), (7, 8)), ((2, 3), (2, 1), (7, 9)),
                                               ((5, 5), (1, 1), (5, 6)), ((1, 1), (3, 2), (7, 5))])
def test_columns_hold_every_window_in_offset_channel_order(backend: pn.Backend, kernel: tuple,
                                                          stride: tuple, hw: tuple) -> None:
    """Row (i, j, c) of the im2col matrix, column (y, x, n): x[c, y*sh + i, x*sw + j, n]."""
    x = np.random.default_rng(1).normal(size=(3, *hw, 2)).astype(np.float32)  # (C, H, W, N)
    out = tuple((n - k) // s + 1 for n, k, s in zip(hw, kernel, stride, strict=True))
    (kh, kw), (sh, sw) = kernel, stride
    expected = np.empty((kh, kw, 3, *out, 2))
    for i in range(kh):
        for j in range(kw):
            expected[i, j] = x[:, i:i + sh * (out[0] - 1) + 1:sh, j:j + sw * (out[1] - 1) + 1:sw]
    got = columns(backend.xp, backend.asarray(x), kernel, stride, out)
    assert_close(backend, got, expected.reshape(kh * kw * 3, -1), rtol=0, atol=0)


def test_columns_append_a_row_of_ones_for_one_channel(backend: pn.Backend) -> None:
    x = np.random.default_rng(1).normal(size=(1, 6, 5, 2)).astype(np.float32)  # (C, H, W, N)
    plain = backend.to_numpy(columns(backend.xp, backend.asarray(x), (3, 2), (1, 1), (4, 4)))
    got = backend.to_numpy(columns(backend.xp, backend.asarray(x), (3, 2), (1, 1), (4, 4),
                                   ones_row=True))
    assert got.shape == (7, 32)
    np.testing.assert_array_equal(got[:6], plain)
    np.testing.assert_array_equal(got[6], np.ones(32))
    with pytest.raises(ValueError, match="one input channel"):
        columns(backend.xp, backend.asarray(np.ones((2, 6, 5, 2))), (3, 2), (1, 1), (4, 4),
                ones_row=True)


ONE_CHANNEL = {"5x5": lambda: pn.Conv2D(1, 4, 5),
               "strided-padded": lambda: pn.Conv2D(1, 3, (2, 3), stride=(2, 1), padding=1)}


@pytest.mark.parametrize("make", ONE_CHANNEL.values(), ids=ONE_CHANNEL.keys())
def test_conv2d_bias_in_the_product_matches_the_separate_bias(backend: pn.Backend,
                                                              make: Any) -> None:
    """One input channel: the bias as a column of the weight matrix (and its gradient as a row
    of the weight product) gives the separate addition's and sum's numbers."""
    def separate() -> pn.Conv2D:
        layer = make()
        layer.bias_in_product = False
        return layer

    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 1, 9, 8))
    d = rng.normal(size=(3, *make().output_shape((1, 9, 8))))
    assert make().bias_in_product
    fused, plain = _step(make, backend, x, d, bias=0.5), _step(separate, backend, x, d, bias=0.5)
    for a, b in zip(fused[:2], plain[:2], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert fused[2].keys() == plain[2].keys() == {"W", "b"}
    for k in fused[2]:
        np.testing.assert_allclose(fused[2][k], plain[2][k], rtol=1e-5, atol=1e-5, err_msg=k)


def _step(layer_fn: Any, backend: pn.Backend, x: np.ndarray, d: np.ndarray,
          bias: float | None = None) -> tuple:
    layer = layer_fn()
    layer.build(backend, np.random.default_rng(2))
    if bias is not None:  # a bias that is not zero, so that its addition shows
        layer.params["b"] = backend.asarray(np.linspace(-bias, bias, layer.out_channels))
    out = layer.forward(backend.asarray(x))
    dx = layer.backward(backend.asarray(d))
    grads = {k: backend.to_numpy(g) for k, g in layer.grads.items()}
    return backend.to_numpy(out), backend.to_numpy(dx), grads


CONVS = {"3x3": lambda: pn.Conv2D(3, 4, 3),
         "strided-padded": lambda: pn.Conv2D(3, 2, (2, 3), stride=(2, 1), padding=1),
         "same": lambda: pn.Conv2D(3, 4, 3, padding="same")}


@pytest.mark.parametrize("make", CONVS.values(), ids=CONVS.keys())
def test_conv2d_is_the_same_with_and_without_fast_paths(backend: pn.Backend, make: Any) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 7, 8))
    shape = make().output_shape((3, 7, 8))
    d = rng.normal(size=(2, *shape))
    fast, slow = _step(make, backend, x, d), _step(make, backend.portable(), x, d)
    for a, b in zip(fast[:2], slow[:2], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    for k in fast[2]:
        np.testing.assert_allclose(fast[2][k], slow[2][k], rtol=1e-5, atol=1e-5, err_msg=k)


class _General:
    """A pooling layer forced onto its general (window slices) path."""

    def _tiles(self, h: int, w: int) -> bool:
        return False


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("kernel", [2, (2, 3), 3])
def test_tiled_pooling_matches_the_general_path(backend: pn.Backend, kind: str,
                                                kernel: Any) -> None:
    cls = pn.MaxPool2D if kind == "max" else pn.AvgPool2D
    general = type("General" + cls.__name__, (_General, cls), {})
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 6, 6))
    x[0, 0, :2, :2] = 1.5  # a tie inside one window
    layer = cls(kernel)
    d = rng.normal(size=(2, *layer.output_shape((3, 6, 6))))
    tiled, slow = _step(lambda: cls(kernel), backend, x, d), _step(lambda: general(kernel),
                                                                  backend, x, d)
    assert layer._tiles(6, 6)
    np.testing.assert_allclose(tiled[0], slow[0], rtol=1e-6, atol=1e-7)  # sums: order differs
    np.testing.assert_allclose(tiled[1], slow[1], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("make", [lambda: pn.MaxPool2D(2), lambda: pn.MaxPool2D(3, stride=2),
                                  lambda: pn.AvgPool2D(2), lambda: pn.Conv2D(3, 4, 3),
                                  lambda: pn.BatchNorm(3)],
                         ids=["maxpool", "maxpool-general", "avgpool", "conv", "batchnorm"])
def test_image_layers_hand_on_batch_innermost_memory(make: Any) -> None:
    """NumPy: outputs and input gradients are views of (C, H, W, N) buffers, whatever the
    input's memory order, so the next image layer slices them without a transposing copy."""
    backend = pn.get_backend("numpy")
    layer = make()
    layer.build(backend, np.random.default_rng(0))
    x = np.random.default_rng(0).normal(size=(2, 3, 6, 6)).astype(np.float32)
    out = layer.forward(backend.asarray(x))
    dx = layer.backward(np.ones_like(out))
    for a in (out, dx):
        assert np.transpose(a, TO_INNER).flags.c_contiguous


def test_flatten_reads_batch_innermost_images_without_a_copy() -> None:
    """Flatten hands Dense a transposed view of the image layers' buffer, in PyTorch's order."""
    backend = pn.get_backend("numpy")
    layer = pn.Flatten()
    layer.build(backend, np.random.default_rng(0))
    buffer = np.arange(3 * 2 * 2 * 4, dtype=np.float32).reshape(3, 2, 2, 4)  # (C, H, W, N)
    images = np.transpose(buffer, (3, 0, 1, 2))
    flat = layer.forward(images)
    assert np.shares_memory(flat, buffer)
    np.testing.assert_array_equal(flat, images.reshape(4, -1))
    d = layer.backward(np.asarray(flat) * 2)
    assert np.transpose(d, TO_INNER).flags.c_contiguous
    np.testing.assert_array_equal(d, images * 2)


@pytest.mark.parametrize("axis", [0, 1, -2, -1])
def test_sums_along_an_axis_as_a_product_match_the_reduction(backend: pn.Backend,
                                                            axis: int) -> None:
    """sum_along (a product with ones, for BatchNorm and the bias gradients) equals xp.sum."""
    from portanet.layers.base import sum_along

    a = backend.asarray(np.random.default_rng(3).normal(size=(5, 3000)).astype(np.float32))
    a = a if axis % 2 else a.T
    got = sum_along(backend.xp, a, axis, backend.device)
    assert tuple(got.shape) == (a.shape[1 - axis % 2],)
    assert_close(backend, got, backend.to_numpy(backend.xp.sum(a, axis=axis)), rtol=1e-5,
                 atol=1e-4)


class _RowMajorNamespace:
    """NumPy's namespace, except that elementwise results come out row-major in the order of
    the shape they are given, as CuPy writes them (NumPy keeps the input's memory order)."""

    def __init__(self, xp: Any) -> None:
        self._xp = xp

    def __getattr__(self, name: str) -> Any:
        fn = getattr(self._xp, name)
        if name not in ("maximum", "astype", "tanh", "multiply"):
            return fn
        return lambda *a, **k: np.ascontiguousarray(fn(*a, **k))


@pytest.mark.parametrize("make", [pn.ReLU, pn.Sigmoid, pn.Tanh])
def test_activations_keep_batch_innermost_memory_on_a_row_major_library(make: Any) -> None:
    """Between image layers an activation hands on (C, H, W, N) memory even where the library
    writes elementwise results row-major (CuPy), so the next layer need not copy."""
    import dataclasses

    numpy_backend = pn.get_backend("numpy")
    backend = dataclasses.replace(numpy_backend, xp=_RowMajorNamespace(numpy_backend.xp))
    layer = make()
    layer.build(backend, np.random.default_rng(0))
    buffer = np.random.default_rng(0).normal(size=(3, 4, 4, 2)).astype(np.float32)
    x = np.transpose(buffer, (3, 0, 1, 2))  # (N, C, H, W) view of (C, H, W, N) memory
    for a in (layer.forward(x), layer.backward(np.ones_like(x))):
        assert np.transpose(a, TO_INNER).flags.c_contiguous
