"""Helpers the tests import: comparisons, small data sets, and lines for the run's summary.

Fixtures live in conftest.py (pytest finds them there); anything a test imports lives here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import portanet


def assert_close(backend: portanet.Backend, actual: Any, expected: Any, **tol: float) -> None:
    """Check that ``actual`` is an array of ``backend`` in its dtype, then compare values.

    Tolerances default to the dtype's: a silently-NumPy or silently-float64 result fails.
    """
    assert backend.owns(actual), f"result is a {type(actual)}, not a {backend.name} array"
    assert actual.dtype == backend.dtype, f"dtype {actual.dtype}, expected {backend.dtype}"
    if backend.dtype_name == "float32":
        tol = {"rtol": 1e-5, "atol": 1e-6} | tol
    else:
        tol = {"rtol": 1e-10, "atol": 1e-12} | tol
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
