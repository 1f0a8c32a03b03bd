"""Dense (fully connected) layer."""

from __future__ import annotations

from typing import Any

import numpy as np

from portanet.backend import Backend
from portanet.init import Initializer, get_initializer
from portanet.layers.base import Layer, Shape, positive_int, shape_error


class Dense(Layer):
    """Fully connected layer: ``Z = X @ W + b`` with W of shape (in, out), b of shape (out,).

    On the CPU backends W is kept in (out, in) memory order (a transposed view), as the
    reference programs keep it: the per-sample products and the weight-gradient product
    ``dout.T @ X`` run fastest that way, and the gradient comes out in the same order, so updates
    stream through matching memory. CuPy keeps (in, out) order, which its elementwise kernels
    walk coalesced (:attr:`Backend.weights_transposed`). Only speed depends on this;
    ``W.shape`` is (in, out) everywhere.

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
        self.in_features = positive_int("Dense", "in_features", in_features)
        self.out_features = positive_int("Dense", "out_features", out_features)
        self.weight_init = get_initializer(weight_init)
        self.bias_init = get_initializer(bias_init)
        self._x: Any = None

    def output_shape(self, input_shape: Shape) -> Shape:
        if tuple(input_shape) != (self.in_features,):
            fix = "add a Flatten() layer before it" if len(input_shape) > 1 else ""
            raise shape_error(self, input_shape, f"({self.in_features},)", fix)
        return (self.out_features,)

    def input_shape_hint(self) -> Shape | None:
        return (self.in_features,)

    def state_shapes(self) -> dict[str, Shape]:
        return {"W": (self.in_features, self.out_features), "b": (self.out_features,)}

    def build(self, backend: Backend, rng: np.random.Generator) -> None:
        super().build(backend, rng)
        self._transposed = backend.weights_transposed  # read once: per-sample steps are short
        w = self.weight_init(rng, (self.in_features, self.out_features))
        b = self.bias_init(rng, (self.out_features,))
        self.params = {}
        self.grads = {}
        self.load_param("W", w)
        self.load_param("b", b)

    def load_param(self, key: str, host: np.ndarray) -> None:
        if key == "W" and self._transposed:
            self.params["W"] = self.backend.asarray(host.T).T
        else:
            super().load_param(key, host)

    def memory_order(self, key: str) -> tuple[int, ...] | None:
        return (1, 0) if key == "W" and self._transposed else None

    def forward(self, x: Any) -> Any:
        """x: (N, D_in) -> Z: (N, D_out), ``Z = x @ W + b``."""
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
        """dout: (N, D_out) -> dx: (N, D_in) = dout @ W.T (None when ``need_dx`` is False);
        sets grads W (D_in, D_out) = x.T @ dout, b (D_out,) = sum(dout, axis=0)."""
        xp = self.xp
        # dW = X.T @ dout, formed in W's memory order (see Backend.weights_transposed).
        transposed = self._transposed
        if dout.shape[0] == 1:
            # Per-sample SGD: an outer product by broadcasting is several times cheaper than a
            # matrix product with an inner dimension of 1; the bias gradient is dout itself.
            self.grads["b"] = xp.reshape(dout, (self.out_features,))
            if transposed:
                self.grads["W"] = (xp.reshape(dout, (self.out_features, 1)) * self._x).T
            else:
                self.grads["W"] = xp.reshape(self._x, (self.in_features, 1)) * dout
        else:
            self.grads["b"] = xp.sum(dout, axis=0)
            self.grads["W"] = (dout.T @ self._x).T if transposed else self._x.T @ dout
        return dout @ self.params["W"].T if need_dx else None

    def config(self) -> dict[str, Any]:
        return {"in_features": self.in_features, "out_features": self.out_features}
