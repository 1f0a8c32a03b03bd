"""Weight initializers.

Each initializer draws on the HOST (a NumPy generator) in float64; the layer then casts to the
backend dtype and copies to the device. So the same seed gives the same initial weights on every
backend, which is what makes cross-backend parity tests possible.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

Initializer = Callable[[np.random.Generator, tuple[int, ...]], np.ndarray]
"""``init(rng, shape) -> host float64 array``; fan-in is ``shape[0]``, fan-out ``shape[-1]``."""


def he() -> Initializer:
    """He (Kaiming) normal: std = sqrt(2 / fan_in), the usual choice before ReLU."""

    def draw(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        return rng.normal(0.0, math.sqrt(2.0 / shape[0]), size=shape)

    return draw


def glorot() -> Initializer:
    """Glorot (Xavier) uniform: U(-a, a) with a = sqrt(6 / (fan_in + fan_out))."""

    def draw(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        limit = math.sqrt(6.0 / (shape[0] + shape[-1]))
        return rng.uniform(-limit, limit, size=shape)

    return draw


def normal(std: float = 0.01, mean: float = 0.0) -> Initializer:
    """Normal(mean, std), e.g. the ``0.01 * randn`` of many from-scratch programs."""

    def draw(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        return rng.normal(float(mean), float(std), size=shape)

    return draw


def uniform(low: float = -0.05, high: float = 0.05) -> Initializer:
    """Uniform(low, high), e.g. ``uniform(-0.5, 0.5)`` of the 784-10-10 reference."""
    if not low < high:
        raise ValueError(f"uniform initializer needs low < high, got low={low}, high={high}")

    def draw(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        return rng.uniform(float(low), float(high), size=shape)

    return draw


def zeros() -> Initializer:
    """All zeros (biases, or the one-layer reference that starts from zero)."""

    def draw(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        return np.zeros(shape)

    return draw


_BY_NAME: dict[str, Callable[[], Initializer]] = {
    "he": he,
    "kaiming": he,
    "glorot": glorot,
    "xavier": glorot,
    "zeros": zeros,
    "normal": normal,
    "uniform": uniform,
}


def get_initializer(init: str | Initializer) -> Initializer:
    """An initializer as given, or from its text form: the one grammar for initializers.

    The text is a name, optionally followed by ``:`` and the factory's arguments separated by
    commas: ``"he"``, ``"glorot"``, ``"zeros"``, ``"normal"``, ``"normal:0.01"`` (std),
    ``"normal:0.01,0.5"`` (std, mean), ``"uniform:-0.5,0.5"`` (low, high); ``"kaiming"`` and
    ``"xavier"`` are other names for ``"he"`` and ``"glorot"``. Recipes, ``Dense`` and the
    command line all read initializers through here.

    Raises:
        ValueError: an unknown name, an argument that is not a number, or the wrong number of
            arguments (the message lists the forms).
    """
    if callable(init):
        return init
    name, _, args = str(init).partition(":")
    forms = "he, glorot, zeros, normal[:STD[,MEAN]] or uniform[:LOW,HIGH]"
    if name not in _BY_NAME:
        raise ValueError(
            f"unknown initializer {init!r}; use {forms} (also kaiming, xavier), "
            f"or pass e.g. portanet.init.uniform(-0.5, 0.5)"
        )
    try:
        values = [float(a) for a in args.split(",")] if args else []
    except ValueError:
        raise ValueError(f"bad initializer {init!r}: its arguments must be numbers") from None
    try:
        return _BY_NAME[name](*values)
    except TypeError:
        raise ValueError(f"bad initializer {init!r}: wrong number of arguments; use {forms}"
                         ) from None
