"""Reshaping layers."""

from __future__ import annotations

import math
from typing import Any

from portanet.layers.base import Layer, Shape
from portanet.layers.convolution import SWAP


class Flatten(Layer):
    """Flatten every axis but the first: (N, 28, 28) -> (N, 784); (N, C, H, W) -> (N, C*H*W)
    in (C, H, W) order, as PyTorch's ``Flatten`` (so weights carry over between the two)."""

    def output_shape(self, input_shape: Shape) -> Shape:
        return (math.prod(input_shape),)

    def forward(self, x: Any) -> Any:
        self._shape = tuple(x.shape)
        return self.xp.reshape(x, (-1, math.prod(x.shape[1:])))  # the batch axis inferred

    def backward(self, dout: Any, need_dx: bool = True) -> Any:
        xp = self.xp
        if len(self._shape) != 4:
            return xp.reshape(dout, self._shape)
        # Hand the gradient back in the (C, N, H, W) memory order the convolution, pooling and
        # normalisation layers keep (see portanet.layers.convolution): one copy here instead of
        # slow mixed-order arithmetic in every layer below.
        _, c, h, w = self._shape
        images = xp.reshape(dout, (-1, c, h, w))
        by_channel = xp.reshape(xp.permute_dims(images, SWAP), (c, -1))
        return xp.permute_dims(xp.reshape(by_channel, (c, -1, h, w)), SWAP)
