"""Reshaping layers."""

from __future__ import annotations

import math
from typing import Any

from portanet.layers.base import Layer, Shape


class Flatten(Layer):
    """Flatten every axis but the first: (N, 28, 28) -> (N, 784); (N, C, H, W) -> (N, C*H*W)
    in (C, H, W) order, as PyTorch's ``Flatten`` (so weights carry over between the two)."""

    def output_shape(self, input_shape: Shape) -> Shape:
        return (math.prod(input_shape),)

    def forward(self, x: Any) -> Any:
        self._shape = tuple(x.shape)
        return self.xp.reshape(x, (x.shape[0], math.prod(x.shape[1:])))

    def backward(self, dout: Any, need_dx: bool = True) -> Any:
        return self.xp.reshape(dout, self._shape)
