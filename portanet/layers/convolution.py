"""2-D convolution written against the array API standard: im2col and one matrix product.

Layout: inputs and outputs are (N, C, H, W) as in PyTorch; inside, the layer works on the
(C, H, W, N) arrangement, batch innermost (see :mod:`portanet.layers.layout`). The columns
matrix is (kh*kw*C, Ho*Wo*N), its rows in (i, j, c) order: the kernel offset (i, j) contributes
the slice ``x[:, i:i+Ho, j:j+Wo, :]``, which moves runs of Wo*N contiguous numbers (stride 1),
and ``stack`` lays the kh*kw slices one after the other in a single copy. One matrix product
``Wmat (out, kh*kw*C) @ cols`` gives the output in (out, Ho, Wo, N) order, handed on as an
(N, out, Ho, Wo) view.

The backward pass is two matrix products (weights: ``cols @ dout.T``; columns:
``Wmat.T @ dout``) and kh*kw slice additions that fold the columns back onto the input (col2im),
each again over runs of Wo*N numbers; the standard has no scatter, and slice assignment is all
col2im needs. The first layer of a model skips the second product and col2im
(``need_dx=False``).

With one input channel (the first layer on MNIST) the columns are few (kh*kw rows) and the
output long, so adding the bias and summing its gradient would each be a whole pass over the
output, about a sixth of the layer's time. There the columns get a last row of ones and the
weight matrix the bias as its last column: the product adds the bias, and the weight product
in backward yields the bias gradient as its last row.

``Conv2D.forward`` and ``backward`` read as the formulas; each of these tricks is a named
helper (:func:`columns` and :func:`col2im`, :func:`product_plus_bias`,
:func:`weight_and_bias_gradients`), checked against the plain formula it replaces in
``tests/test_layer_tricks.py`` and ``tests/test_fast_paths.py``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from portanet.backend import Backend
from portanet.init import Initializer, get_initializer
from portanet.layers.base import Layer, Shape, pair, positive_int, sum_along
from portanet.layers.layout import inner, outer


def window_slices(
    kernel: tuple[int, int], stride: tuple[int, int], out: tuple[int, int]
) -> list[tuple[slice, slice, slice, slice]]:
    """For each kernel offset (i, j), row-major, the index of a (C, H, W, N) array that holds
    what every output position sees at that offset."""
    (kh, kw), (sh, sw), (ho, wo) = kernel, stride, out
    every = slice(None)
    return [
        (every, slice(i, i + sh * (ho - 1) + 1, sh), slice(j, j + sw * (wo - 1) + 1, sw), every)
        for i in range(kh) for j in range(kw)
    ]


def columns(xp: Any, x: Any, kernel: tuple[int, int], stride: tuple[int, int],
            out: tuple[int, int], ones_row: bool = False) -> Any:
    """The im2col matrix (kh*kw*C, Ho*Wo*N) of a (C, H, W, N) array, rows in (i, j, c) order:
    the kh*kw offset slices, stacked in one copy. ``ones_row`` (one channel only) appends a
    row of ones in the same copy: (kh*kw + 1, Ho*Wo*N)."""
    c = x.shape[0]
    pieces = [x[key] for key in window_slices(kernel, stride, out)]
    if ones_row:
        if c != 1:
            raise ValueError(f"a row of ones needs one input channel, got {c}")
        pieces.append(xp.ones_like(pieces[0]))
    view = xp.stack(pieces, axis=0)
    return xp.reshape(view, (len(pieces) * c, -1))  # (kh*kw, C, Ho, Wo, N): contiguous


def pad(xp: Any, x: Any, pads: tuple[int, int, int, int], axes: tuple[int, int] = (1, 2)) -> Any:
    """``x`` with ``(top, bottom, left, right)`` rows and columns of zeros around each image;
    ``axes`` are its row and column axes, (1, 2) for (C, H, W, N), (2, 3) for (N, C, H, W).
    The zeros are shaped like one row or column of ``x``: nothing depends on the batch size."""
    top, bottom, left, right = pads
    for axis, (before, after) in zip(axes, ((top, bottom), (left, right)), strict=True):
        first = tuple(slice(0, 1) if a == axis else slice(None) for a in range(x.ndim))
        zero = xp.zeros_like(x[first])
        x = xp.concat([zero] * before + [x] + [zero] * after, axis=axis)
    return x


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
        self.bias_in_product = self.in_channels == 1
        """Whether the bias rides in the matrix product (a row of ones in the columns; see the
        module docstring): True for one input channel."""

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
        """x: (N, C, H, W) -> (N, out, Ho, Wo), ``Ho = (H + top + bottom - kh) // sh + 1``
        (likewise Wo): ``Z = Wmat @ cols + b`` with cols the (kh*kw*C, Ho*Wo*N) im2col matrix
        of the padded input and Wmat (out, kh*kw*C) the weights."""
        xp = self.xp
        _, ho, wo = self.output_shape(tuple(x.shape[1:]))
        x = inner(xp, x)  # (C, H, W, N): the batch innermost (see portanet.layers.layout)
        if any(self._pads):
            x = pad(xp, x, self._pads)
        self._in_shape = tuple(x.shape)
        self._out_hw = (ho, wo)
        self._cols = columns(xp, x, self.kernel_size, self.stride, (ho, wo),
                             ones_row=self.bias_in_product)  # (kh*kw*C [+ 1], Ho*Wo*N)
        self._wmat = self._weight_matrix()  # (out, kh*kw*C)
        z = product_plus_bias(xp, self._wmat, self.params["b"], self._cols,
                              self.bias_in_product)  # Wmat @ cols + b
        return outer(xp, xp.reshape(z, (self.out_channels, ho, wo, -1)))

    def backward(self, dout: Any, need_dx: bool = True) -> Any:
        """dout: (N, out, Ho, Wo) -> dx: (N, C, H, W) (None when ``need_dx`` is False): the
        columns' gradient ``Wmat.T @ dZ`` folded back onto the input (col2im); sets grads
        W (out, C, kh, kw) = ``dZ @ cols.T`` and b (out,) = dZ summed over N, Ho, Wo."""
        xp = self.xp
        dz = xp.reshape(inner(xp, dout), (self.out_channels, -1))  # (out, Ho*Wo*N)
        self.grads["W"], self.grads["b"] = weight_and_bias_gradients(
            self.backend, self._cols, dz, self.params["W"].shape,
            self.bias_in_product)  # dZ @ cols.T, sum of dZ
        if not need_dx:
            return None
        dcols = self._wmat.T @ dz  # (kh*kw*C, Ho*Wo*N)
        dx = col2im(self.backend, dcols, self._in_shape, self.kernel_size, self.stride,
                    self._out_hw)  # (C, Hp, Wp, N): the padded input's gradient
        top, bottom, left, right = self._pads
        if top or bottom or left or right:
            dx = dx[:, top:dx.shape[1] - bottom, left:dx.shape[2] - right, :]
        return outer(xp, dx)

    def config(self) -> dict[str, Any]:
        padding = list(self.padding) if isinstance(self.padding, tuple) else self.padding
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": padding}


# --- speed tricks, each checked against the plain formula in tests/test_layer_tricks.py -------


def product_plus_bias(xp: Any, wmat: Any, b: Any, cols: Any, ones_row: bool) -> Any:
    """``wmat @ cols + b[:, None]``, (out, P), of wmat (out, K), b (out,) and the columns
    (K, P). With ``ones_row`` the columns carry a last row of ones (K + 1 rows, see
    :func:`columns`) and the bias rides in the product as a last column of wmat instead,
    which saves a whole pass over the (long) output."""
    bias = xp.reshape(b, (wmat.shape[0], 1))
    if ones_row:
        return xp.concat([wmat, bias], axis=1) @ cols
    out = wmat @ cols
    out += bias  # in place where arrays allow it: no second output-sized array
    return out


def weight_and_bias_gradients(backend: Backend, cols: Any, dz: Any, weight_shape: Shape,
                              ones_row: bool) -> tuple[Any, Any]:
    """``dW = dz @ cols.T`` as (out, C, kh, kw) and ``db = sum(dz, axis=1)`` (out,), of the
    columns (kh*kw*C [+ 1], P) and dz (out, P). The product runs as ``cols @ dz.T``, which
    OpenBLAS splits well over threads (the other order badly), and dW is handed back as a view
    of it, in (kh, kw, C, out) memory order (:meth:`Conv2D.memory_order`). With ``ones_row``
    (a last row of ones in the columns) db is the product's last row: no pass over dz; else a
    product with ones
    (:func:`sum_along`), several times faster than the reduction along the long axis P."""
    xp = backend.xp
    o, c, kh, kw = (int(n) for n in weight_shape)
    grad = cols @ dz.T  # (kh*kw*C [+ 1], out)
    k = kh * kw * c
    dw = xp.permute_dims(xp.reshape(grad[:k, :], (kh, kw, c, o)), (3, 2, 0, 1))
    db = grad[k, :] if ones_row else sum_along(xp, dz, 1, backend.device)
    return dw, db


def col2im(backend: Backend, dcols: Any, shape: Shape, kernel: tuple[int, int],
           stride: tuple[int, int], out: tuple[int, int]) -> Any:
    """The inverse gather of :func:`columns`: the (C, H, W, N) array of ``shape`` onto which
    each kernel offset's rows of dcols (kh*kw*C, Ho*Wo*N) are added back at the positions
    they were read from. The standard has no scatter; kh*kw slice additions
    (``Backend.add_to_slice``) over runs of Wo*N contiguous numbers do it."""
    xp, (kh, kw), c = backend.xp, kernel, shape[0]
    dcols = xp.reshape(dcols, (kh * kw, c, *out, -1))
    dx = xp.zeros(shape, dtype=dcols.dtype, device=backend.device)
    for k, key in enumerate(window_slices(kernel, stride, out)):
        dx = backend.add_to_slice(dx, key, dcols[k, ...])
    return dx
