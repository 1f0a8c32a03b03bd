"""2-D convolution written against the array API standard: im2col and one matrix product.

Layout: inputs and outputs are (N, C, H, W) as in PyTorch. Internally the layer works
"channels-first, batch second": ``permute_dims`` turns (N, C, H, W) into a (C, N, H, W) *view*
(no copy). The columns matrix is (kh*kw*C, N*Ho*Wo), its rows in (i, j, c) order: each kernel
offset's block of rows is one contiguous (C, N*Ho*Wo) slab, so col2im reads whole slabs. One
matrix product ``Wmat (out, kh*kw*C) @ cols`` gives the output in (out, N, Ho, Wo) memory
order, returned as an (N, out, Ho, Wo) view. Pooling, BatchNorm and the activations keep that
memory order, so a chain of them passes it along and never transposes; only Flatten copies,
into PyTorch's (C, H, W) order per sample. (For a 1-channel input, (N, 1, H, W) already is
that order.)

The columns come from one of two places, which ``tests/test_fast_paths.py`` checks agree:

* a strided window view (C, N, Ho, Wo, kh, kw) of the input where the backend has one
  (:attr:`portanet.seams.Capabilities.windows`: NumPy's ``sliding_window_view``, CuPy's
  ``as_strided``, PyTorch's ``unfold``), copied once into column order;
* the standard path: the kh*kw shifted windows as strided slices, stacked.

The backward pass is two matrix products (weights: ``cols @ dout.T``; columns:
``Wmat.T @ dout``) and kh*kw strided slice additions that fold the columns back onto the
input (col2im); the standard has no scatter, and slice assignment is all col2im needs. The first
layer of a model skips the second product and col2im (``need_dx=False``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from portanet.backend import Backend
from portanet.init import Initializer, get_initializer
from portanet.layers.base import Layer, Shape, pair, positive_int

SWAP = (1, 0, 2, 3)
"""``permute_dims`` axes between (N, C, H, W) and (C, N, H, W); its own inverse."""


def window_slices(
    kernel: tuple[int, int], stride: tuple[int, int], out: tuple[int, int]
) -> list[tuple[slice, slice, slice, slice]]:
    """For each kernel offset (i, j), row-major, the index of a (C, N, H, W) array that holds
    what every output position sees at that offset."""
    (kh, kw), (sh, sw), (ho, wo) = kernel, stride, out
    every = slice(None)
    return [
        (every, every, slice(i, i + sh * (ho - 1) + 1, sh), slice(j, j + sw * (wo - 1) + 1, sw))
        for i in range(kh) for j in range(kw)
    ]


def columns(backend: Backend, x: Any, kernel: tuple[int, int], stride: tuple[int, int],
            out: tuple[int, int]) -> Any:
    """The im2col matrix (kh*kw*C, N*Ho*Wo) of a (C, N, H, W) array, rows in (i, j, c) order:
    one copy of the backend's window view where it has one, else kh*kw stacked slices."""
    xp = backend.xp
    (kh, kw), c = kernel, x.shape[0]
    windows = backend.capabilities.windows
    if windows is not None:
        view = xp.permute_dims(windows(x, kernel, stride), (4, 5, 0, 1, 2, 3))
    else:
        view = xp.stack([x[key] for key in window_slices(kernel, stride, out)], axis=0)
    return xp.reshape(view, (kh * kw * c, -1))  # (kh, kw, C, N, Ho, Wo): one copy


def pad(xp: Any, x: Any, pads: tuple[int, int, int, int]) -> Any:
    """A (C, N, H, W) array with ``(top, bottom, left, right)`` rows and columns of zeros
    around each image (zeros shaped like a row or column of ``x``: nothing depends on N)."""
    top, bottom, left, right = pads
    row = xp.zeros_like(x[:, :, :1, :])
    x = xp.concat([row] * top + [x] + [row] * bottom, axis=2)
    col = xp.zeros_like(x[:, :, :, :1])
    return xp.concat([col] * left + [x] + [col] * right, axis=3)


class Conv2D(Layer):
    """2-D convolution (cross-correlation, as in PyTorch) over (N, C, H, W) input.

    ``params["W"]`` has shape (out_channels, in_channels, kh, kw), ``params["b"]`` (out_channels,).

    Args:
        in_channels: channels of the input (1 for MNIST).
        out_channels: number of filters.
        kernel_size: an int or a pair (kh, kw).
        stride: an int or a pair.
        padding: zeros added on each side: an int, a pair (rows, cols), or ``"same"`` (stride 1;
            output as large as the input, the extra row/column of an even kernel at the end).
        weight_init: initializer for W (default He, fan-in in_channels * kh * kw).
        bias_init: initializer for b (default zeros).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        weight_init: str | Initializer = "he",
        bias_init: str | Initializer = "zeros",
    ) -> None:
        super().__init__()
        self.in_channels = positive_int("Conv2D", "in_channels", in_channels)
        self.out_channels = positive_int("Conv2D", "out_channels", out_channels)
        self.kernel_size = pair("Conv2D", "kernel_size", kernel_size)
        self.stride = pair("Conv2D", "stride", stride)
        kh, kw = self.kernel_size
        if padding == "same":
            if self.stride != (1, 1):
                raise ValueError(f"Conv2D padding='same' needs stride 1, got {stride!r}")
            self.padding: int | tuple[int, int] | str = "same"
            top, left = (kh - 1) // 2, (kw - 1) // 2
            self._pads = (top, kh - 1 - top, left, kw - 1 - left)
        else:
            rows, cols = (padding, padding) if not isinstance(padding, (list, tuple)) else padding
            for p in (rows, cols):
                if not isinstance(p, (int, np.integer)) or isinstance(p, bool) or p < 0:
                    raise ValueError(f"Conv2D padding must be a non-negative int, a pair of them "
                                     f"or 'same', got {padding!r}")
            self.padding = int(rows) if rows == cols else (int(rows), int(cols))
            self._pads = (int(rows), int(rows), int(cols), int(cols))
        self.weight_init = get_initializer(weight_init)
        self.bias_init = get_initializer(bias_init)

    def output_shape(self, input_shape: Shape) -> Shape:
        c, h, w = self._check(tuple(input_shape))
        top, bottom, left, right = self._pads
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        return (self.out_channels, (h + top + bottom - kh) // sh + 1,
                (w + left + right - kw) // sw + 1)

    def _check(self, shape: Shape) -> Shape:
        if len(shape) != 3 or shape[0] != self.in_channels:
            fix = ("reshape images to (N, channels, height, width), e.g. X.reshape(-1, 1, 28, 28)"
                   if len(shape) != 3 else "")
            raise ValueError(f"{self!r} expects samples of shape ({self.in_channels}, height, "
                             f"width), got {shape}" + (f"; {fix}" if fix else ""))
        top, bottom, left, right = self._pads
        padded = (shape[1] + top + bottom, shape[2] + left + right)
        if padded[0] < self.kernel_size[0] or padded[1] < self.kernel_size[1]:
            raise ValueError(f"{self!r}: the kernel {self.kernel_size} is larger than the padded "
                             f"input {padded} (samples of shape {shape})")
        return shape

    def state_shapes(self) -> dict[str, Shape]:
        return {"W": (self.out_channels, self.in_channels, *self.kernel_size),
                "b": (self.out_channels,)}

    def build(self, backend: Backend, rng: np.random.Generator) -> None:
        super().build(backend, rng)
        (kh, kw), c, o = self.kernel_size, self.in_channels, self.out_channels
        w = self.weight_init(rng, (kh * kw * c, o))  # fan-in first, as the initializers expect
        self.params, self.grads = {}, {}
        self.load_param("W", np.ascontiguousarray(w.reshape(kh, kw, c, o).transpose(3, 2, 0, 1)))
        self.load_param("b", self.bias_init(rng, (o,)))

    def memory_order(self, key: str) -> tuple[int, ...] | None:
        # The weight gradient comes out of its product in (kh, kw, C, out) memory order.
        return (2, 3, 1, 0) if key == "W" else None

    def _weight_matrix(self) -> Any:
        """W as the (out, kh*kw*C) matrix that multiplies the columns (rows in (i, j, c) order)."""
        xp = self.xp
        (kh, kw), c = self.kernel_size, self.in_channels
        return xp.reshape(xp.permute_dims(self.params["W"], (0, 2, 3, 1)),
                          (self.out_channels, kh * kw * c))

    def forward(self, x: Any) -> Any:
        xp = self.xp
        _, ho, wo = self.output_shape(tuple(x.shape[1:]))
        x = xp.permute_dims(x, SWAP)
        if any(self._pads):
            x = pad(xp, x, self._pads)
        self._in_shape = tuple(x.shape)
        self._out_hw = (ho, wo)
        self._cols = columns(self.backend, x, self.kernel_size, self.stride, (ho, wo))
        self._wmat = self._weight_matrix()
        out = self._wmat @ self._cols  # (out, N*Ho*Wo)
        out += xp.reshape(self.params["b"], (self.out_channels, 1))
        return xp.permute_dims(xp.reshape(out, (self.out_channels, -1, ho, wo)), SWAP)

    def backward(self, dout: Any, need_dx: bool = True) -> Any:
        xp = self.xp
        (kh, kw), c, o = self.kernel_size, self.in_channels, self.out_channels
        ho, wo = self._out_hw
        d = xp.reshape(xp.permute_dims(dout, SWAP), (o, -1))  # (out, N*Ho*Wo)
        # (C*kh*kw, out) = cols @ d.T: the long axis (N*Ho*Wo) is the inner one either way,
        # but OpenBLAS splits this order well over threads and the other (d @ cols.T) badly.
        grad = self._cols @ d.T
        self.grads["W"] = xp.permute_dims(xp.reshape(grad, (kh, kw, c, o)), (3, 2, 0, 1))
        self.grads["b"] = xp.sum(d, axis=1)
        if not need_dx:
            return None
        dcols = xp.reshape(self._wmat.T @ d, (kh * kw, c, -1, ho, wo))
        dx = xp.zeros(self._in_shape, dtype=dout.dtype, device=self.backend.device)
        for k, key in enumerate(window_slices(self.kernel_size, self.stride, (ho, wo))):
            dx = self.backend.add_to_slice(dx, key, dcols[k, ...])
        top, bottom, left, right = self._pads
        if top or bottom or left or right:
            dx = dx[:, :, top:dx.shape[2] - bottom, left:dx.shape[3] - right]
        return xp.permute_dims(dx, SWAP)

    def config(self) -> dict[str, Any]:
        padding = list(self.padding) if isinstance(self.padding, tuple) else self.padding
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": padding}
