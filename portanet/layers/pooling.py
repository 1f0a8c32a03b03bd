"""2-D max and average pooling over (N, C, H, W) input.

Both work on the (C, H, W, N) arrangement (see :mod:`portanet.layers.layout`).

Tiling windows (stride == kernel, the window dividing the input, as in every preset): a reshape
to (C*Ho, kh, Wo, kw, N) puts each window position (i, j) at one slice ``[:, i, :, j, :]``, whose
runs are N contiguous numbers, so the forward pass is kh*kw - 1 elementwise maxima (or sums) of
those slices. Max pooling's backward pass compares the whole reshaped input with the broadcast
maximum once, clears the ties after the first position holding the maximum, and multiplies the
mask by the broadcast gradient; average pooling writes each position's share into its slice.

Other windows take the general path: each of the kh*kw window offsets is one strided slice of
the (C, H, W, N) array, and the backward pass adds those slices back
(``Backend.add_to_slice``). ``tests/test_fast_paths.py`` checks that both paths agree.
"""

from __future__ import annotations

from typing import Any

from portanet.layers.base import Layer, Shape, pair, shape_error
from portanet.layers.convolution import window_slices
from portanet.layers.layout import inner, outer


def first_maximum_shares(xp: Any, parts: list[Any], top: Any, d: Any) -> list[Any]:
    """``d`` handed to the first of ``parts`` that equals ``top`` (their maximum): one share per
    part, zero elsewhere. Ties go to one part only, so they never multiply the gradient."""
    shares, left = [], d
    for part in parts[:-1]:
        share = xp.astype(part == top, d.dtype)
        share *= left  # into the new mask (where arrays are immutable, *= rebinds)
        shares.append(share)
        left = left - share
    shares.append(left)  # what is left belongs to the last part, the maximum where none was
    return shares


def first_maximum_mask(xp: Any, tiles: Any, top: Any, kernel: tuple[int, int]) -> Any:
    """For tiling windows, as :func:`first_maximum_shares` but in one piece: a boolean
    (C*Ho, kh, Wo, kw, N) mask of ``tiles``, true at the first position of each window (in
    row-major window order) that holds its maximum ``top`` (C*Ho, Wo, N). One comparison of the
    whole input with the broadcast maximum, then kh*kw - 1 small logical steps clearing the
    ties, instead of a comparison, a product and a subtraction per position."""
    kh, kw = kernel
    spread = (slice(None), None, slice(None), None, slice(None))
    at = [(slice(None), i, slice(None), j, slice(None)) for i in range(kh) for j in range(kw)]
    mask = tiles == top[spread]
    free = ~mask[at[0]]  # windows whose maximum no earlier position holds
    for k, key in enumerate(at[1:], start=2):
        first = mask[key] & free
        mask[key] = first
        if k < len(at):
            free = free ^ first  # free and not held here
    return mask


class _Pool2D(Layer):
    """Shared shape logic, window slicing and gradient assembly of the pooling layers."""

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

    def _tiles(self, h: int, w: int) -> bool:
        """Whether the windows tile an h x w input exactly (stride == kernel, dividing both)."""
        (kh, kw) = self.kernel_size
        return self.stride == self.kernel_size and h % kh == 0 and w % kw == 0

    def _positions(self, x: Any) -> list[Any]:
        """Every window position's slice of ``x`` (N, C, H, W), row-major, each (C*Ho, Wo, N)
        when the windows tile ``x``, else (C, Ho, Wo, N). Records what backward needs."""
        xp = self.xp
        c, ho, wo = self.output_shape(tuple(x.shape[1:]))
        (kh, kw), (h, w) = self.kernel_size, tuple(x.shape[2:])
        self._out_shape = (c, ho, wo, -1)  # the batch axis inferred: no arithmetic on it
        self._tiled = self._tiles(h, w)
        x = inner(xp, x)
        if self._tiled:
            tiles = xp.reshape(x, (c * ho, kh, wo, kw, -1))
            self._in_shape, self._tile_view = tuple(tiles.shape), tiles
            return [tiles[:, i, :, j, :] for i in range(kh) for j in range(kw)]
        self._in_shape = tuple(x.shape)
        self._keys = window_slices(self.kernel_size, self.stride, (ho, wo))
        return [x[key] for key in self._keys]

    def _assemble(self, shares: list[Any]) -> Any:
        """dL/dx (N, C, H, W) from each window position's share of the output gradient."""
        xp, kw = self.xp, self.kernel_size[1]
        if self._tiled:
            dx = xp.empty(self._in_shape, dtype=shares[0].dtype, device=self.backend.device)
            for k, share in enumerate(shares):
                dx[:, k // kw, :, k % kw, :] = share
            return self._untiled(dx)
        dx = xp.zeros(self._in_shape, dtype=shares[0].dtype, device=self.backend.device)
        for key, share in zip(self._keys, shares, strict=True):
            dx = self.backend.add_to_slice(dx, key, share)
        return outer(xp, dx)

    def _untiled(self, tiles: Any) -> Any:
        """The (N, C, H, W) view of a (C*Ho, kh, Wo, kw, N) array of the tiled input's shape."""
        (kh, kw), (c, ho, wo, _) = self.kernel_size, self._out_shape
        return outer(self.xp, self.xp.reshape(tiles, (c, ho * kh, wo * kw, -1)))

    def _output_gradient(self, dout: Any) -> Any:
        """``dout`` (N, C, Ho, Wo) arranged like the window slices."""
        xp = self.xp
        c, ho, wo, _ = self._out_shape
        d = xp.permute_dims(dout, (1, 2, 3, 0))
        return xp.reshape(d, (c * ho, wo, -1)) if self._tiled else d

    def _result(self, out: Any) -> Any:
        return outer(self.xp, self.xp.reshape(out, self._out_shape))

    def config(self) -> dict[str, Any]:
        return {"kernel_size": list(self.kernel_size), "stride": list(self.stride)}


class MaxPool2D(_Pool2D):
    """Maximum over each kh x kw window (stride defaults to the window size).

    The gradient goes to one maximum per window: the first in row-major window order when
    several inputs tie, so ties never multiply the gradient.
    """

    def forward(self, x: Any) -> Any:
        """x: (N, C, H, W) -> (N, C, Ho, Wo), ``Ho = (H - kh) // sh + 1`` (likewise Wo):
        each output the maximum of its kh x kw window."""
        parts = self._positions(x)
        out = parts[0]
        for part in parts[1:]:
            out = self.xp.maximum(out, part)
        self._parts, self._out = parts, out
        return self._result(out)

    def backward(self, dout: Any, need_dx: bool = True) -> Any:
        """dout: (N, C, Ho, Wo) -> dx: (N, C, H, W): each output's gradient to the (first)
        input of its window that holds the maximum, summed where windows overlap."""
        xp = self.xp
        d = self._output_gradient(dout)
        if not self._tiled:  # each position's share, added back at its slice
            return self._assemble(first_maximum_shares(xp, self._parts, self._out, d))
        # Tiling windows: dx = mask * dout, dout spread over each (kh, kw) window.
        mask = first_maximum_mask(xp, self._tile_view, self._out, self.kernel_size)
        dx = xp.astype(mask, d.dtype)
        dx *= d[:, None, :, None, :]  # into the new array (immutable arrays: *= rebinds)
        return self._untiled(dx)


class AvgPool2D(_Pool2D):
    """Mean over each kh x kw window (stride defaults to the window size)."""

    def forward(self, x: Any) -> Any:
        """x: (N, C, H, W) -> (N, C, Ho, Wo), ``Ho = (H - kh) // sh + 1`` (likewise Wo):
        each output the mean of its kh x kw window."""
        parts = self._positions(x)
        out = parts[0]
        for part in parts[1:]:
            out = out + part
        return self._result(out * (1.0 / len(parts)))

    def backward(self, dout: Any, need_dx: bool = True) -> Any:
        """dout: (N, C, Ho, Wo) -> dx: (N, C, H, W): each output's gradient shared equally,
        ``dout / (kh * kw)``, among the inputs of its window, summed where windows overlap."""
        (kh, kw) = self.kernel_size
        share = self._output_gradient(dout) * (1.0 / (kh * kw))
        return self._assemble([share] * (kh * kw))
