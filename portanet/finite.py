"""Finiteness checks: which named arrays hold NaN or infinite values.

One home for the question every boundary asks (training inputs, a model's weights after a
step or before a save, the arrays of a file being loaded): each array is reduced to one flag
on its device and the flags are read back to the host together, once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np


def finite_flags(xp: Any, arrays: list[Any]) -> Any:
    """A device array of booleans, shape (len(arrays),): whether each array is all finite."""
    return xp.stack([xp.all(xp.isfinite(a)) for a in arrays])


def not_finite(arrays: Mapping[str, Any], xp: Any = np,
               to_numpy: Callable[[Any], np.ndarray] = np.asarray) -> list[str]:
    """The names of ``arrays`` that hold NaN or infinite values, in their order.

    ``xp`` is the arrays' namespace and ``to_numpy`` reads a device array to the host (the
    defaults suit host NumPy arrays); one read for all of them.
    """
    if not arrays:
        return []
    flags = to_numpy(finite_flags(xp, list(arrays.values())))
    return [name for name, ok in zip(arrays, flags, strict=True) if not ok]


def all_finite(xp: Any, array: Any) -> Any:
    """A device boolean scalar: whether ``array`` holds only finite values."""
    return xp.all(xp.isfinite(array))


def listed(names: list[str]) -> str:
    """``names`` (the first four, then a count) and the verb: "W0 is", "W0, b0 are"."""
    shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
    return f"{shown} {'is' if len(names) == 1 else 'are'}"


def weights_not_finite(model: Any) -> list[str]:
    """The names of a model's parameters and buffers (``"0.W"``, ``"3.running_mean"``) that
    hold NaN or infinite values."""
    arrays = {name: p for name, p, _ in model.named_parameters()}
    arrays.update(model.named_buffers())
    return not_finite(arrays, model.xp, model.backend.to_numpy)
