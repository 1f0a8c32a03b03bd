"""Layers: explicit forward/backward pairs, each owning its ``params`` and ``grads``.

A layer caches what its backward pass needs during ``forward`` (as in cs231n's ``layers.py``).
All math goes through ``self.xp``, the backend's array-API namespace, so one code path serves
NumPy, CuPy, array-api-strict and PyTorch.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from portanet.backend import Backend
from portanet.init import Initializer, get_initializer


class Layer:
    """Base class. Subclasses implement ``forward`` and ``backward``.

    Attributes:
        params: name -> parameter array (empty for layers without parameters).
        grads: name -> gradient of the loss with respect to that parameter, set by ``backward``.
        training: True in training mode (affects Dropout only).
    """

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}
        self.grads: dict[str, Any] = {}
        self.training = True
        self.backend: Backend | None = None
        self.xp: Any = None

    def build(self, backend: Backend, rng: np.random.Generator) -> None:
        """Bind the layer to a backend and create its parameters (drawn from ``rng``)."""
        self.backend = backend
        self.xp = backend.xp

    def load_param(self, key: str, host: np.ndarray) -> None:
        """Set parameter ``key`` from a host array of the right shape (``load_state_dict``)."""
        self.params[key] = self.backend.asarray(host)

    def forward(self, x: Any) -> Any:
        """Compute the layer's output for a batch ``x``, caching what backward needs."""
        raise NotImplementedError

    def backward(self, dout: Any, need_dx: bool = True) -> Any:
        """Given dL/d(output), set ``self.grads`` and return dL/d(input).

        ``need_dx=False`` lets the first layer of a model skip computing the input gradient,
        which nobody uses (for Dense that saves a third of its backward matrix work).
        """
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """Constructor arguments, for saving a model's architecture as JSON."""
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


class Dense(Layer):
    """Fully connected layer: ``Z = X @ W + b`` with W of shape (in, out), b of shape (out,).

    W is kept in (out, in) memory order (a transposed view), as the reference programs keep
    it: the per-sample products and the weight-gradient product ``dout.T @ X`` run fastest that
    way, and the gradient comes out in the same order, so updates stream through matching
    memory. Only speed depends on this; ``W.shape`` is (in, out) everywhere.

    Args:
        in_features: number of input features (784 for flattened MNIST).
        out_features: number of outputs.
        weight_init: initializer name or callable for W (default He, for ReLU nets).
        bias_init: initializer for b (default zeros).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        weight_init: str | Initializer = "he",
        bias_init: str | Initializer = "zeros",
    ) -> None:
        super().__init__()
        for what, value in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Dense {what} must be a positive integer, got {value!r}")
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.weight_init = get_initializer(weight_init)
        self.bias_init = get_initializer(bias_init)
        self._x: Any = None

    def build(self, backend: Backend, rng: np.random.Generator) -> None:
        super().build(backend, rng)
        w = self.weight_init(rng, (self.in_features, self.out_features))
        b = self.bias_init(rng, (self.out_features,))
        self.params = {}
        self.grads = {}
        self.load_param("W", w)
        self.load_param("b", b)

    def load_param(self, key: str, host: np.ndarray) -> None:
        if key == "W":
            self.params["W"] = self.xp.permute_dims(self.backend.asarray(host.T), (1, 0))
        else:
            super().load_param(key, host)

    def forward(self, x: Any) -> Any:
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(
                f"Dense({self.in_features}, {self.out_features}) expects input of shape "
                f"(batch, {self.in_features}), got {tuple(x.shape)}"
                + ("; add a Flatten() layer before it" if x.ndim > 2 else "")
            )
        self._x = x
        z = x @ self.params["W"]
        z += self.params["b"]  # in place where arrays allow it; saves a pass and an allocation
        return z

    def backward(self, dout: Any, need_dx: bool = True) -> Any:
        xp = self.xp
        if dout.shape[0] == 1:
            # Per-sample SGD: an outer product by broadcasting is several times cheaper than a
            # matrix product with an inner dimension of 1; the bias gradient is dout itself.
            grad_t = xp.reshape(dout, (self.out_features, 1)) * self._x
            self.grads["b"] = xp.reshape(dout, (self.out_features,))
        else:
            grad_t = dout.T @ self._x
            self.grads["b"] = xp.sum(dout, axis=0)
        self.grads["W"] = xp.permute_dims(grad_t, (1, 0))  # dW = X.T @ dout, in W's order
        return dout @ self.params["W"].T if need_dx else None

    def config(self) -> dict[str, Any]:
        return {"in_features": self.in_features, "out_features": self.out_features}


class ReLU(Layer):
    """Rectified linear unit: ``max(x, 0)``."""

    def forward(self, x: Any) -> Any:
        self._x = x
        return self.xp.maximum(x, 0.0)

    def backward(self, dout: Any, need_dx: bool = True) -> Any:
        # A 0/1 float mask times dout: several times faster on NumPy than xp.where with a
        # scalar branch, and the standard forbids multiplying by a boolean array directly.
        return dout * self.xp.astype(self._x > 0, dout.dtype)


class Sigmoid(Layer):
    """Logistic sigmoid ``1 / (1 + exp(-x))``, computed as ``(1 + tanh(x/2)) / 2`` (no overflow)."""

    def forward(self, x: Any) -> Any:
        self._out = 0.5 * (1.0 + self.xp.tanh(0.5 * x))
        return self._out

    def backward(self, dout: Any, need_dx: bool = True) -> Any:
        s = self._out
        return dout * s * (1.0 - s)


class Tanh(Layer):
    """Hyperbolic tangent."""

    def forward(self, x: Any) -> Any:
        self._out = self.xp.tanh(x)
        return self._out

    def backward(self, dout: Any, need_dx: bool = True) -> Any:
        return dout * (1.0 - self._out * self._out)


def softmax(xp: Any, x: Any) -> Any:
    """Row-wise softmax of a (batch, classes) array, shifted by the row max for stability."""
    e = xp.exp(x - xp.max(x, axis=1, keepdims=True))
    return e / xp.sum(e, axis=1, keepdims=True)


class Softmax(Layer):
    """Softmax over the last axis, with the full Jacobian-vector product in backward.

    Use it as a last layer only with a loss that expects probabilities; the losses in
    :mod:`portanet.losses` take logits and apply softmax themselves.
    """

    def forward(self, x: Any) -> Any:
        self._p = softmax(self.xp, x)
        return self._p

    def backward(self, dout: Any, need_dx: bool = True) -> Any:
        p = self._p
        return p * (dout - self.xp.sum(dout * p, axis=1, keepdims=True))


class Dropout(Layer):
    """Inverted dropout: in training, zero each input with probability ``rate`` and scale the
    rest by ``1 / (1 - rate)``; in evaluation mode it is the identity."""

    def __init__(self, rate: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= float(rate) < 1.0:
            raise ValueError(f"Dropout rate must be in [0, 1), got {rate!r}")
        self.rate = float(rate)
        self._mask: Any = None

    def forward(self, x: Any) -> Any:
        if not self.training or self.rate == 0.0:
            self._mask = None
            return x
        keep = self.backend.uniform(tuple(x.shape)) >= self.rate
        self._mask = self.xp.astype(keep, x.dtype) * (1.0 / (1.0 - self.rate))
        return x * self._mask

    def backward(self, dout: Any, need_dx: bool = True) -> Any:
        return dout if self._mask is None else dout * self._mask

    def config(self) -> dict[str, Any]:
        return {"rate": self.rate}


class Flatten(Layer):
    """Flatten every axis but the first: (N, 28, 28) -> (N, 784)."""

    def forward(self, x: Any) -> Any:
        self._shape = tuple(x.shape)
        return self.xp.reshape(x, (x.shape[0], math.prod(x.shape[1:])))

    def backward(self, dout: Any, need_dx: bool = True) -> Any:
        return self.xp.reshape(dout, self._shape)


LAYER_TYPES: dict[str, type[Layer]] = {
    cls.__name__: cls for cls in (Dense, ReLU, Sigmoid, Tanh, Softmax, Dropout, Flatten)
}
