"""The argument checks that layers, optimizers, ``fit``, recipes and the command line share, so
the same bad value gets the same message everywhere: ``lr must be a finite number > 0, got -1``.

Each check returns the value as a plain Python ``int`` or ``float`` and raises ValueError naming
``name`` otherwise. With ``name=""`` the message starts at "must be" (argparse adds the option).
:func:`ceil_div` is the one integer rounding up (batches per epoch) the library needs.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["finite_non_negative", "finite_positive", "is_int", "non_negative_int",
           "open_unit", "positive_int", "rate", "ceil_div"]


def _fail(name: str, rule: str, value: Any) -> ValueError:
    return ValueError(f"{name} must be {rule}, got {value!r}".lstrip())


def is_int(value: Any) -> bool:
    """True for a Python or NumPy integer, and False for a bool (``True`` is not a count)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def positive_int(name: str, value: Any) -> int:
    """An integer >= 1 (batch sizes, widths, kernel sizes, step counts)."""
    if not is_int(value) or value < 1:
        raise _fail(name, "a positive integer", value)
    return int(value)


def non_negative_int(name: str, value: Any) -> int:
    """An integer >= 0 (epochs, seeds, limits)."""
    if not is_int(value) or value < 0:
        raise _fail(name, "a non-negative integer", value)
    return int(value)


def _float(value: Any) -> float:
    if isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def finite_positive(name: str, value: Any) -> float:
    """A finite number > 0 (learning rates, epsilons)."""
    number = _float(value)
    if not (math.isfinite(number) and number > 0.0):
        raise _fail(name, "a finite number > 0", value)
    return number


def finite_non_negative(name: str, value: Any) -> float:
    """A finite number >= 0 (weight decay, L2)."""
    number = _float(value)
    if not (math.isfinite(number) and number >= 0.0):
        raise _fail(name, "a finite number >= 0", value)
    return number


def rate(name: str, value: Any) -> float:
    """A number in [0, 1) (dropout rates, momentum, Adam's betas)."""
    number = _float(value)
    if not 0.0 <= number < 1.0:
        raise _fail(name, "in [0, 1)", value)
    return number


def open_unit(name: str, value: Any) -> float:
    """A number in (0, 1) (RMSProp's rho, OneCycle's pct_start)."""
    number = _float(value)
    if not 0.0 < number < 1.0:
        raise _fail(name, "in (0, 1)", value)
    return number


def ceil_div(n: int, d: int) -> int:
    """``n / d`` rounded up, in integers (batches per epoch: ``ceil_div(60000, 128) == 469``)."""
    return -(-n // d)
