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
    ``W.shape`` is (in, out) everywhere. The gradients' tricks (that memory order, and outer
    products for one sample) are :func:`weight_gradient` and :func:`bias_gradient`.

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
        z += self.params["b"]  # Z = x @ W + b, the addition in place: saves a pass and a buffer
        return z

    def backward(self, dout: Any, need_dx: bool = True) -> Any:
        """dout: (N, D_out) -> dx: (N, D_in) = dout @ W.T (None when ``need_dx`` is False);
        sets grads W (D_in, D_out) = x.T @ dout, b (D_out,) = sum(dout, axis=0)."""
        self.grads["b"] = bias_gradient(self.xp, dout)  # sum(dout, axis=0)
        self.grads["W"] = weight_gradient(self.xp, self._x, dout, self._transposed)  # x.T @ dout
        return dout @ self.params["W"].T if need_dx else None

    def config(self) -> dict[str, Any]:
        return {"in_features": self.in_features, "out_features": self.out_features}


# --- speed tricks, each checked against the plain formula in tests/test_layer_tricks.py -------


def bias_gradient(xp: Any, dout: Any) -> Any:
    """``sum(dout, axis=0)``, (D_out,), of dout (N, D_out); for one sample dout itself,
    reshaped: no reduction at all (per-sample SGD takes this every step)."""
    if dout.shape[0] == 1:
        return xp.reshape(dout, (-1,))
    return xp.sum(dout, axis=0)


def weight_gradient(xp: Any, x: Any, dout: Any, transposed: bool) -> Any:
    """``x.T @ dout``, (D_in, D_out), of x (N, D_in) and dout (N, D_out), formed in W's memory
    order (row-major (D_out, D_in) when ``transposed``, see :class:`Dense`), so the update
    streams through matching memory; for one sample an outer product by broadcasting, several
    times cheaper than a matrix product with an inner dimension of 1."""
    if dout.shape[0] == 1:
        if transposed:
            return (xp.reshape(dout, (-1, 1)) * x).T
        return xp.reshape(x, (-1, 1)) * dout
    return (dout.T @ x).T if transposed else x.T @ dout
