"""Every fast path against the standard path it replaces, on every backend: the backend's
capabilities (each seam row's ``capabilities``) on, then off (``backend.portable()``, what
array-api-strict always runs), and the pooling layers' tiling path against the general one."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import portanet as pn
from portanet.layers.convolution import SWAP, columns
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
def test_window_view_columns_match_the_slices(backend: pn.Backend, kernel: tuple,
                                              stride: tuple, hw: tuple) -> None:
    x = np.random.default_rng(1).normal(size=(3, 2, *hw))
    out = tuple((n - k) // s + 1 for n, k, s in zip(hw, kernel, stride, strict=True))
    fast = columns(backend, backend.asarray(x), kernel, stride, out)
    portable = backend.portable()
    slow = columns(portable, portable.asarray(x), kernel, stride, out)
    assert tuple(fast.shape) == tuple(slow.shape) == (kernel[0] * kernel[1] * 3,
                                                      2 * out[0] * out[1])
    assert_close(backend, fast, backend.to_numpy(slow), rtol=0, atol=0)


def _step(layer_fn: Any, backend: pn.Backend, x: np.ndarray, d: np.ndarray) -> tuple:
    layer = layer_fn()
    layer.build(backend, np.random.default_rng(2))
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

    @staticmethod
    def _tiles(x: Any) -> bool:
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
    assert layer._tiles(np.zeros((2, 3, 6, 6)))
    np.testing.assert_allclose(tiled[0], slow[0], rtol=1e-6, atol=1e-7)  # sums: order differs
    np.testing.assert_allclose(tiled[1], slow[1], rtol=1e-6, atol=1e-7)


def test_pooling_output_keeps_the_channels_first_memory_order() -> None:
    """NumPy: the tiled path hands on (C, N, H, W) memory, as the convolutions make it."""
    backend = pn.get_backend("numpy")
    layer = pn.MaxPool2D(2)
    layer.build(backend, np.random.default_rng(0))
    x = np.transpose(np.random.default_rng(0).normal(size=(3, 2, 4, 4)), SWAP)
    out = layer.forward(backend.asarray(x))
    assert np.transpose(out, SWAP).flags.c_contiguous
