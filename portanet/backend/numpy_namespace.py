"""The namespace the NumPy backend computes with: array-api-compat's, with direct reductions.

``np.sum``, ``np.max``, ``np.reshape`` and ``np.take`` pass through Python wrappers costing a few
microseconds a call: nothing at batch 256, but a large share of a per-sample SGD step.
Calling the ufunc's ``reduce`` gives the same results (same dtype rules, NaN handling and
keepdims) without the wrapper. ``tests/test_backend.py`` checks the two agree.
"""

import array_api_compat.numpy as base_namespace
import numpy as np
from array_api_compat.numpy import *  # noqa: F403 (re-export the whole namespace)
from array_api_compat.numpy import __array_api_version__, __array_namespace_info__  # noqa: F401


def sum(x, /, *, axis=None, dtype=None, keepdims=False):  # noqa: A001 (the standard's name)
    """``xp.sum`` through ``np.add.reduce``."""
    return np.add.reduce(x, axis=axis, dtype=dtype, keepdims=keepdims)


def max(x, /, *, axis=None, keepdims=False):  # noqa: A001 (the standard's name)
    """``xp.max`` through ``np.maximum.reduce``."""
    return np.maximum.reduce(x, axis=axis, keepdims=keepdims)


def reshape(x, /, shape, *, copy=None):
    """``xp.reshape`` through the array method when no copy is demanded either way."""
    if copy is None:
        return np.ndarray.reshape(x, shape)
    return base_namespace.reshape(x, shape, copy=copy)


def take(x, indices, /, *, axis=None):
    """``xp.take`` through the array method (fit gathers every batch with it)."""
    return np.ndarray.take(x, indices, axis=axis)


__all__ = [*base_namespace.__all__, "base_namespace"]
