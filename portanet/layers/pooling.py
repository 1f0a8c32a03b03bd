"""2-D max and average pooling over (N, C, H, W) input.

Both work on a (C, N, H, W) view (see :mod:`portanet.layers.convolution`).

Tiling windows (stride == kernel, the window dividing the input, as in every preset) take two
passes, each over a reshape of the input: one across the kw columns of each window row, with
the columns as a short last axis of an (M, kw) view, then one across the kh rows of that
result. Each pass is kw (or kh) elementwise operations on long, regularly strided arrays, which
is far faster on NumPy than a reduction over two tiny axes; the backward pass hands the
gradient back through the same two passes and interleaves it with one ``stack`` per pass.

Other windows take the general path: each of the kh*kw window offsets is one strided slice,
and the backward pass adds those slices back (``Backend.add_to_slice``).
``tests/test_fast_paths.py`` checks that both paths agree.
"""

from __future__ import annotations

from typing import Any

from portanet.layers.base import Layer, Shape, pair, shape_error
from portanet.layers.convolution import SWAP, window_slices


def first_maximum_shares(xp: Any, parts: list[Any], top: Any, d: Any) -> list[Any]:
    """``d`` handed to the first of ``parts`` that equals ``top`` (their maximum): one share per
    part, zero elsewhere. Ties go to one part only, so they never multiply the gradient."""
    shares, left = [], d
    for part in parts[:-1]:
        share = xp.astype(part == top, d.dtype) * left
        shares.append(share)
        left = left - share
    shares.append(left)  # what is left belongs to the last part, the maximum where none was
    return shares


class _Pool2D(Layer):
    """Shared shape logic and backward assembly of the pooling layers."""

    def __init__(self, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] | None = None) -> None:
        super().__init__()
        name = type(self).__name__
        self.kernel_size = pair(name, "kernel_size", kernel_size)
        self.stride = self.kernel_size if stride is None else pair(name, "stride", stride)

    def output_shape(self, input_shape: Shape) -> Shape:
        shape = tuple(input_shape)
        if len(shape) != 3:
            raise shape_error(self, shape, "(channels, height, width)")
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        if shape[1] < kh or shape[2] < kw:
            raise ValueError(f"{self!r}: the window {self.kernel_size} is larger than the input "
                             f"{shape[1:]} (samples of shape {shape})")
        return (shape[0], (shape[1] - kh) // sh + 1, (shape[2] - kw) // sw + 1)

    def _tiles(self, x: Any) -> bool:
        """Whether the windows tile ``x`` exactly (stride == kernel, dividing H and W)."""
        (kh, kw), (h, w) = self.kernel_size, tuple(x.shape[2:])
        return self.stride == self.kernel_size and h % kh == 0 and w % kw == 0

    def _windows(self, x: Any) -> tuple[Any, list[Any]]:
        """The (C, N, H, W) view of ``x`` and its window slices, one per kernel offset."""
        _, ho, wo = self.output_shape(tuple(x.shape[1:]))
        x = self.xp.permute_dims(x, SWAP)
        self._in_shape = tuple(x.shape)
        self._keys = window_slices(self.kernel_size, self.stride, (ho, wo))
        return x, [x[key] for key in self._keys]

    def _assemble(self, parts: list[Any]) -> Any:
        """dL/dx from each window offset's share of the output gradient."""
        xp = self.xp
        dx = xp.zeros(self._in_shape, dtype=parts[0].dtype, device=self.backend.device)
        for key, part in zip(self._keys, parts, strict=True):
            dx = self.backend.add_to_slice(dx, key, part)
        return xp.permute_dims(dx, SWAP)

    def _tiled_forward(self, x: Any, combine: Any) -> Any:
        """Tiling windows: ``combine(parts)`` across the columns, then across the rows of
        each window; returns the (C, N, Ho, Wo) result."""
        xp = self.xp
        self.output_shape(tuple(x.shape[1:]))
        (kh, kw), (_, c, h, w) = self.kernel_size, tuple(x.shape)
        x = xp.permute_dims(x, SWAP)
        self._in_shape = (c, -1, h, w)  # the batch axis inferred: no arithmetic on it
        cols = xp.reshape(x, (-1, kw))                    # (C*N*H*Wo, kw)
        across = combine([cols[:, j] for j in range(kw)])  # (C*N*H*Wo,)
        rows = xp.reshape(across, (-1, kh, w // kw))       # (C*N*Ho, kh, Wo)
        out = combine([rows[:, i, :] for i in range(kh)])  # (C*N*Ho, Wo)
        self._tiled = (cols, across, rows, out)
        return xp.permute_dims(xp.reshape(out, (c, -1, h // kh, w // kw)), SWAP)

    def config(self) -> dict[str, Any]:
        return {"kernel_size": list(self.kernel_size), "stride": list(self.stride)}


class MaxPool2D(_Pool2D):
    """Maximum over each kh x kw window (stride defaults to the window size).

    The gradient goes to one maximum per window: the first in row-major window order when
    several inputs tie, so ties never multiply the gradient.
    """

    def forward(self, x: Any) -> Any:
        xp = self.xp
        if self._tiles(x):
            return self._tiled_forward(x, self._maximum)
        self._tiled = None
        _, windows = self._windows(x)
        out = self._maximum(windows)
        self._windows_cache, self._out = windows, out
        return xp.permute_dims(out, SWAP)

    def _maximum(self, parts: list[Any]) -> Any:
        out = parts[0]
        for part in parts[1:]:
            out = self.xp.maximum(out, part)
        return out

    def backward(self, dout: Any, need_dx: bool = True) -> Any:
        xp = self.xp
        d = xp.permute_dims(dout, SWAP)
        if self._tiled is not None:
            # The first row of each window holding the maximum takes the gradient, then the
            # first column of that row holding the row's maximum: the first in row-major order.
            (kh, kw), cols, across, rows, out = self.kernel_size, *self._tiled
            by_row = xp.stack(first_maximum_shares(xp, [rows[:, i, :] for i in range(kh)], out,
                                                   xp.reshape(d, out.shape)), axis=1)
            by_col = xp.stack(first_maximum_shares(xp, [cols[:, j] for j in range(kw)], across,
                                                   xp.reshape(by_row, (-1,))), axis=1)
            return xp.permute_dims(xp.reshape(by_col, self._in_shape), SWAP)  # by_col: (M, kw)
        return self._assemble(first_maximum_shares(xp, self._windows_cache, self._out, d))


class AvgPool2D(_Pool2D):
    """Mean over each kh x kw window (stride defaults to the window size)."""

    def forward(self, x: Any) -> Any:
        (kh, kw) = self.kernel_size
        if self._tiles(x):
            return self._tiled_forward(x, self._sum) * (1.0 / (kh * kw))
        self._tiled = None
        _, windows = self._windows(x)
        return self.xp.permute_dims(self._sum(windows) * (1.0 / len(windows)), SWAP)

    @staticmethod
    def _sum(parts: list[Any]) -> Any:
        out = parts[0]
        for part in parts[1:]:
            out = out + part
        return out

    def backward(self, dout: Any, need_dx: bool = True) -> Any:
        xp = self.xp
        (kh, kw) = self.kernel_size
        d = xp.permute_dims(dout, SWAP)
        if self._tiled is not None:
            # Every input of a window gets d / (kh * kw): one broadcast product.
            c, _, ho, wo = d.shape
            share = xp.full((kh, 1, kw), 1.0 / (kh * kw), dtype=d.dtype, device=self.backend.device)
            spread = xp.reshape(d, (c, -1, ho, 1, wo, 1)) * share  # (C, N, Ho, kh, Wo, kw)
            return xp.permute_dims(xp.reshape(spread, self._in_shape), SWAP)
        return self._assemble([d * (1.0 / (kh * kw))] * len(self._keys))
