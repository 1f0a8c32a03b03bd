"""Elementwise activations and softmax: they keep the shape of their input."""

from __future__ import annotations

from typing import Any

from portanet.layers.base import Layer, Shape, shape_error
from portanet.layers.layout import elementwise


class ReLU(Layer):
    """Rectified linear unit: ``max(x, 0)``."""

    keeps_shape = True

    def forward(self, x: Any) -> Any:
        """x: (N, ...) -> (N, ...), the same shape: ``max(x, 0)``."""
        self._x = x
        return elementwise(self.xp, lambda a: self.xp.maximum(a, 0.0), x)

    def backward(self, dout: Any, need_dx: bool = True) -> Any:
        """dout: (N, ...) -> dx: (N, ...), the same shape: ``dout`` where x > 0, else 0."""
        return elementwise(self.xp, self._masked, self._x, dout)

    def _masked(self, x: Any, dout: Any) -> Any:
        """``where(x > 0, dout, 0)`` as a 0/1 float mask times dout: several times faster on
        NumPy than ``xp.where`` with a scalar branch (the standard forbids multiplying by a
        boolean array directly). The product goes into the mask, a new array of our own: no
        second allocation (where arrays are immutable, ``*=`` rebinds, same result)."""
        dx = self.xp.astype(x > 0, dout.dtype)
        dx *= dout
        return dx


class Sigmoid(Layer):
    """Logistic sigmoid ``1 / (1 + exp(-x))``, computed as ``(1 + tanh(x/2)) / 2`` (no overflow)."""

    keeps_shape = True

    def forward(self, x: Any) -> Any:
        """x: (N, ...) -> s: (N, ...), the same shape: ``s = 1 / (1 + exp(-x))``."""
        self._out = elementwise(self.xp, lambda a: 0.5 * (1.0 + self.xp.tanh(0.5 * a)), x)
        return self._out

    def backward(self, dout: Any, need_dx: bool = True) -> Any:
        """dout: (N, ...) -> dx: (N, ...), the same shape: ``dx = dout * s * (1 - s)``."""
        return elementwise(self.xp, lambda d, s: d * s * (1.0 - s), dout, self._out)


class Tanh(Layer):
    """Hyperbolic tangent."""

    keeps_shape = True

    def forward(self, x: Any) -> Any:
        """x: (N, ...) -> t: (N, ...), the same shape: ``t = tanh(x)``."""
        self._out = elementwise(self.xp, self.xp.tanh, x)
        return self._out

    def backward(self, dout: Any, need_dx: bool = True) -> Any:
        """dout: (N, ...) -> dx: (N, ...), the same shape: ``dx = dout * (1 - t**2)``."""
        return elementwise(self.xp, lambda d, s: d * (1.0 - s * s), dout, self._out)


def softmax(xp: Any, x: Any) -> Any:
    """Row-wise softmax of a (batch, classes) array, shifted by the row max for stability."""
    e = xp.exp(x - xp.max(x, axis=1, keepdims=True))
    return e / xp.sum(e, axis=1, keepdims=True)


class Softmax(Layer):
    """Softmax over the classes of (batch, classes) input, with the full Jacobian-vector
    product in backward.

    Use it as a last layer only with a loss that expects probabilities; the losses in
    :mod:`portanet.losses` take logits and apply softmax themselves.
    """

    def output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) != 1:
            raise shape_error(self, input_shape, "(classes,)", "add a Flatten() layer before it")
        return tuple(input_shape)

    def forward(self, x: Any) -> Any:
        """x: (N, K) -> p: (N, K), each row ``p = exp(x) / sum(exp(x))``."""
        self._p = softmax(self.xp, x)
        return self._p

    def backward(self, dout: Any, need_dx: bool = True) -> Any:
        """dout: (N, K) -> dx: (N, K): the Jacobian-vector product of each row,
        ``dx = p * (dout - sum(dout * p))``."""
        p = self._p
        return p * (dout - self.xp.sum(dout * p, axis=1, keepdims=True))
