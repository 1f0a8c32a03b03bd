"""2-D max and average pooling over (N, C, H, W) input.

Both work on a (C, N, H, W) view (see :mod:`portanet.layers.convolution`): each of the kh*kw
window offsets is one strided slice, so pooling is kh*kw elementwise operations on arrays the
size of the output, and the backward pass writes those slices back (plain assignment when the
windows do not overlap, slice additions when they do).
"""

from __future__ import annotations

from typing import Any

from portanet.layers.base import Layer, Shape, pair, shape_error
from portanet.layers.convolution import SWAP, add_to_slice, window_slices


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
        overlap = any(s < k for s, k in zip(self.stride, self.kernel_size, strict=True))
        for key, part in zip(self._keys, parts, strict=True):
            if overlap:
                add_to_slice(dx, key, part)
            else:
                dx[key] = part
        return xp.permute_dims(dx, SWAP)

    def config(self) -> dict[str, Any]:
        return {"kernel_size": list(self.kernel_size), "stride": list(self.stride)}


class MaxPool2D(_Pool2D):
    """Maximum over each kh x kw window (stride defaults to the window size).

    The gradient goes to one maximum per window: the first in row-major window order when
    several inputs tie, so ties never multiply the gradient.
    """

    def forward(self, x: Any) -> Any:
        xp = self.xp
        _, windows = self._windows(x)
        out = windows[0]
        for w in windows[1:]:
            out = xp.maximum(out, w)
        self._windows_cache, self._out = windows, out
        return xp.permute_dims(out, SWAP)

    def backward(self, dout: Any, need_dx: bool = True) -> Any:
        xp = self.xp
        # Each window offset takes what is left of the gradient where it holds the maximum;
        # a later offset tying with it finds nothing left.
        left = xp.permute_dims(dout, SWAP)
        parts = []
        last = len(self._windows_cache) - 1
        for k, w in enumerate(self._windows_cache):
            part = xp.where(w == self._out, left, 0.0)
            parts.append(part)
            if k < last:
                left = left - part
        return self._assemble(parts)


class AvgPool2D(_Pool2D):
    """Mean over each kh x kw window (stride defaults to the window size)."""

    def forward(self, x: Any) -> Any:
        _, windows = self._windows(x)
        out = windows[0]
        for w in windows[1:]:
            out = out + w
        return self.xp.permute_dims(out * (1.0 / len(windows)), SWAP)

    def backward(self, dout: Any, need_dx: bool = True) -> Any:
        d = self.xp.permute_dims(dout, SWAP) * (1.0 / len(self._keys))
        return self._assemble([d] * len(self._keys))
