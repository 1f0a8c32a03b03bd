"""Helpers the tests import: comparisons, small data sets, and lines for the run's summary.

Fixtures live in conftest.py (pytest finds them there); anything a test imports lives here.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

import portanet

# Rounding allowed per op, in units of the dtype's machine epsilon, before the growth with the
# length of a sum. Sums and matrix products round once per term and CuPy/cuBLAS add in another
# order than NumPy/OpenBLAS, so their error grows like sqrt(terms) (the usual random-walk bound, as
# array-api-tests' reductions allow for); "training" is a few steps of such ops, amplified.
ULPS = {"elementwise": 64, "reduction": 64, "matmul": 64, "training": 256}


def tolerance(dtype: str, op: str = "elementwise", size: int = 1) -> dict[str, float]:
    """``rtol`` and ``atol`` for comparing results in ``dtype`` ("float32"/"float64") from an
    ``op`` of ULPS, where ``size`` is the length of the sums it makes (e.g. a matmul's inner
    dimension). ``atol`` (for values near zero) is an eighth of ``rtol`` at magnitude one, far
    above the subnormals CuPy flushes to zero (its kernels compile with -ftz=true)."""
    eps = float(np.finfo(dtype).eps)
    growth = math.sqrt(max(size, 1)) if op != "elementwise" else 1.0
    rtol = ULPS[op] * eps * growth
    return {"rtol": rtol, "atol": rtol / 8}


def assert_close(backend: portanet.Backend, actual: Any, expected: Any, op: str = "elementwise",
                 size: int = 1, **tol: float) -> None:
    """Check that ``actual`` is an array of ``backend`` in its dtype, then compare values.

    Tolerances default to the dtype's and the op's (:func:`tolerance`): a silently-NumPy or
    silently-float64 result fails.
    """
    assert backend.owns(actual), f"result is a {type(actual)}, not a {backend.name} array"
    assert actual.dtype == backend.dtype, f"dtype {actual.dtype}, expected {backend.dtype}"
    tol = tolerance(backend.dtype_name, op, size) | tol
    expected = expected if isinstance(expected, np.ndarray) else np.asarray(expected)
    np.testing.assert_allclose(backend.to_numpy(actual), expected, **tol)


def separable_data(
    n: int = 600, features: int = 20, classes: int = 4, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Host float32 inputs and int64 labels from a random linear teacher: learnable to ~100%."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, features)).astype(np.float32)
    teacher = rng.normal(size=(features, classes))
    return X, np.argmax(X @ teacher, axis=1).astype(np.int64)


REPORT_LINES: list[str] = []
"""Facts a test found about this machine, printed at the end of the run (e.g. the data route)."""
