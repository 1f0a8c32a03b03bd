"""Reshaping layers."""

from __future__ import annotations

import math
from typing import Any

from portanet.layers.base import Layer, Shape
from portanet.layers.layout import inner, outer


class Flatten(Layer):
    """Flatten every axis but the first: (N, 28, 28) -> (N, 784); (N, C, H, W) -> (N, C*H*W)
    in (C, H, W) order, as PyTorch's ``Flatten`` (so weights carry over between the two).

    Images come from the layers below in (C, H, W, N) memory order (see
    :mod:`portanet.layers.layout`): the (N, C*H*W) result is the transposed view of that
    buffer, no copy, which a following Dense multiplies as it is; the gradient goes back
    copied once into that order."""

    def output_shape(self, input_shape: Shape) -> Shape:
        return (math.prod(input_shape),)

    def forward(self, x: Any) -> Any:
        """x: (N, d1, d2, ...) -> (N, d1*d2*...), e.g. (N, C, H, W) -> (N, C*H*W)."""
        xp = self.xp
        self._shape = tuple(x.shape)
        features = math.prod(x.shape[1:])
        if x.ndim != 4:
            return xp.reshape(x, (-1, features))  # the batch axis inferred
        return xp.permute_dims(xp.reshape(inner(xp, x), (features, -1)), (1, 0))

    def backward(self, dout: Any, need_dx: bool = True) -> Any:
        """dout: (N, d1*d2*...) -> dx: (N, d1, d2, ...), the shape of the last input."""
        xp = self.xp
        if len(self._shape) != 4:
            return xp.reshape(dout, self._shape)
        _, c, h, w = self._shape
        by_feature = xp.reshape(xp.permute_dims(dout, (1, 0)), (-1,))  # one copy, (C, H, W, N)
        return outer(xp, xp.reshape(by_feature, (c, h, w, -1)))
