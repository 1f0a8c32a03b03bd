"""The layer contract: what every layer owns and promises.

A layer owns its ``params`` (trained), ``grads`` (set by ``backward``) and ``buffers`` (state
saved with the model but not trained, such as BatchNorm's running statistics). It says what it
does to the shape of one sample (:meth:`Layer.output_shape`), so a model can check its chain of
layers before any data flows, and it registers itself by class name when it is defined, so
saved models name their layers and load them back without a hand-kept table.

All math goes through ``self.xp``, the backend's array-API namespace, so one code path serves
NumPy, CuPy, array-api-strict and PyTorch.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from portanet import number_checks
from portanet.backend import Backend

Shape = tuple[int, ...]

LAYER_TYPES: dict[str, type[Layer]] = {}
"""Every layer class by name, filled in as classes are defined (see ``Layer.__init_subclass__``)."""


class Layer:
    """Base class. Subclasses implement ``forward``, ``backward`` and, unless they keep the
    shape of their input, ``output_shape``; layers with constructor arguments return them from
    ``config`` so that a saved model can rebuild them.

    Attributes:
        params: name -> parameter array (empty for layers without parameters).
        grads: name -> gradient of the loss with respect to that parameter, set by ``backward``.
        buffers: name -> state saved with the model but not trained (running statistics).
        training: True in training mode (affects Dropout and BatchNorm).
    """

    keeps_shape: ClassVar[bool] = False
    """True when the output has the input's shape whatever it is (activations, dropout)."""

    trainable: ClassVar[bool] = True
    """False for a layer that ``fit`` must refuse (an :class:`~portanet.layers.Ensemble`)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__name__.startswith("_"):  # private helpers (shared bases) are not layer types
            return
        known = LAYER_TYPES.get(cls.__name__)
        if known is not None and (known.__module__, known.__qualname__) != (
            cls.__module__, cls.__qualname__
        ):
            raise TypeError(
                f"a layer type named {cls.__name__!r} already exists ({known.__module__}."
                f"{known.__qualname__}); saved models name layers by class name, so give "
                f"{cls.__module__}.{cls.__qualname__} another name"
            )
        LAYER_TYPES[cls.__name__] = cls

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}
        self.grads: dict[str, Any] = {}
        self.buffers: dict[str, Any] = {}
        self.training = True
        self.backend: Backend | None = None
        self.xp: Any = None

    def build(self, backend: Backend, rng: np.random.Generator) -> None:
        """Bind the layer to a backend and create its parameters (drawn from ``rng``)."""
        self.backend = backend
        self.xp = backend.xp

    def output_shape(self, input_shape: Shape) -> Shape:
        """The shape of one output sample for one input sample of ``input_shape`` (no batch
        axis). Raises ValueError, naming both, when the layer cannot take that shape."""
        if self.keeps_shape:
            return tuple(input_shape)
        raise NotImplementedError(f"{type(self).__name__} does not define output_shape")

    def state_shapes(self) -> dict[str, Shape]:
        """The shape of every parameter and buffer this layer creates, from its arguments alone
        (nothing is allocated): what a model file is checked against before loading."""
        return {}

    def check_state(self, state: dict[str, np.ndarray]) -> list[str]:
        """Problems with saved values for this layer (host arrays keyed as
        :meth:`state_shapes`, of those shapes, finite), each a phrase naming the array and
        its domain, e.g. "running_var holds negative values"; none by default. A model file
        whose values a layer refuses does not load."""
        return []

    def input_shape_hint(self) -> Shape | None:
        """The one per-sample input shape this layer accepts, when its arguments fix it
        (Dense: ``(in_features,)``); None when several shapes fit."""
        return None

    def load_param(self, key: str, host: np.ndarray) -> None:
        """Set parameter ``key`` from a host array of the right shape (``load_state_dict``)."""
        self.params[key] = self.backend.asarray(host)

    def memory_order(self, key: str) -> tuple[int, ...] | None:
        """The axes of ``params[key]`` (and of its gradient) from the slowest-varying in memory
        to the fastest, where the layer keeps them in another order than row-major; None for
        row-major. An optimizer that stores all parameters in one flat array lays each one out
        in this order (:class:`portanet.flat.FlatParameters`), so gradients flatten without a
        copy and the layer's layout survives."""
        return None

    def load_buffer(self, key: str, host: np.ndarray) -> None:
        """Set buffer ``key`` from a host array of the right shape (``load_state_dict``)."""
        self.buffers[key] = self.backend.asarray(host)

    def forward(self, x: Any) -> Any:
        """x: (N, *input_shape) -> (N, *output_shape(input_shape)): the layer's output for a
        batch ``x``, caching what backward needs."""
        raise NotImplementedError

    def backward(self, dout: Any, need_dx: bool = True) -> Any:
        """dout: (N, *output_shape) -> dx: (N, *input_shape); sets ``self.grads`` (each the
        shape of its parameter). Given dL/d(output) of the last ``forward``, return dL/d(input).

        ``need_dx=False`` lets the first layer of a model skip computing the input gradient,
        which nobody uses (for Dense that saves a third of its backward matrix work).
        """
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """Constructor arguments (JSON-able), for saving a model's architecture."""
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


def shape_error(layer: Layer, input_shape: Shape, expected: str, fix: str = "") -> ValueError:
    """A ValueError saying what ``layer`` expects per sample and what it got."""
    message = (f"{layer!r} expects samples of shape {expected}, got {tuple(input_shape)}")
    return ValueError(message + (f"; {fix}" if fix else ""))


def positive_int(owner: str, what: str, value: Any) -> int:
    """``value`` as an int, or a ValueError when it is not a positive integer."""
    return number_checks.positive_int(f"{owner} {what}", value)


def pair(owner: str, what: str, value: Any) -> tuple[int, int]:
    """An int or a pair of ints (height, width) as a pair of positive ints."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(f"{owner} {what} must be an int or a pair (height, width), "
                             f"got {value!r}")
        return positive_int(owner, what, value[0]), positive_int(owner, what, value[1])
    n = positive_int(owner, what, value)
    return n, n


def sum_along(xp: Any, a: Any, axis: int, device: Any) -> Any:
    """Sums of a 2-D array along ``axis`` (0 or 1, or -2/-1) as a product with a vector of
    ones: the matrix-vector product streams the array once on every core, where NumPy's
    pairwise reduction along a long axis runs about five times slower (BatchNorm's statistics
    and the bias gradients of the image layers sum over Ho*Wo*N numbers per channel)."""
    along = axis % 2
    ones = xp.ones((a.shape[along],), dtype=a.dtype, device=device)
    return a @ ones if along == 1 else ones @ a
