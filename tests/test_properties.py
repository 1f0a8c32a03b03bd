"""Properties of the losses that must hold for any logits (hypothesis draws them), on each
backend: float64 ones where the device has float64, float32 against a float64 NumPy reference."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import portanet as pn
from portanet import losses

batches = st.integers(1, 6).flatmap(
    lambda n: st.tuples(
        arrays(np.float64, (n, 4), elements=st.floats(-60, 60, allow_nan=False)),
        arrays(np.int64, (n,), elements=st.integers(0, 3)),
    )
)


# The backend fixtures are stateless for these tests (no random draws), so sharing one across
# hypothesis' examples is safe.
SETTINGS = {"deadline": None, "suppress_health_check": [HealthCheck.function_scoped_fixture]}


@settings(max_examples=60, **SETTINGS)
@given(batch=batches, shift=st.floats(-1e3, 1e3))
def test_cross_entropy_invariants(backend64: pn.Backend, batch: tuple[np.ndarray, np.ndarray],
                                  shift: float) -> None:
    b = backend64
    logits, labels = batch
    y = b.asarray(labels)
    loss, dlogits = losses.softmax_cross_entropy(b.asarray(logits), y)
    loss, dlogits = float(b.to_numpy(loss)), b.to_numpy(dlogits)
    assert loss >= 0.0 and np.isfinite(loss)
    np.testing.assert_allclose(dlogits.sum(axis=1), 0.0, atol=1e-12)  # softmax minus one-hot
    assert np.all(np.abs(dlogits) <= 1.0 / len(labels) + 1e-12)
    shifted, _ = losses.softmax_cross_entropy(b.asarray(logits + shift), y)
    np.testing.assert_allclose(float(b.to_numpy(shifted)), loss, rtol=1e-9, atol=1e-9)


@settings(max_examples=60, **SETTINGS)
@given(batch=batches)
def test_squared_error_bounds(backend64: pn.Backend, batch: tuple[np.ndarray, np.ndarray]
                              ) -> None:
    b = backend64
    logits, labels = batch
    loss, dlogits = losses.softmax_squared_error(b.asarray(logits), b.asarray(labels))
    loss = float(b.to_numpy(loss))
    assert 0.0 <= loss <= 2.0  # |onehot - p|^2 per sample is at most 2
    np.testing.assert_allclose(b.to_numpy(dlogits).sum(axis=1), 0.0, atol=1e-12)


@settings(max_examples=25, **SETTINGS)
@given(batch=batches)
def test_float32_backends_agree_with_float64(backend: pn.Backend,
                                             batch: tuple[np.ndarray, np.ndarray]) -> None:
    """The same loss in float32 (each backend, array-api-strict's float32-only device too) stays
    close to float64 NumPy."""
    b = backend
    exact = pn.get_backend("numpy", "float64")
    logits, labels = batch
    low, dlow = losses.softmax_cross_entropy(b.asarray(logits), b.asarray(labels))
    high, dhigh = losses.softmax_cross_entropy(exact.asarray(logits), exact.asarray(labels))
    assert low.dtype == b.dtype
    np.testing.assert_allclose(b.to_numpy(low), exact.to_numpy(high), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(b.to_numpy(dlow), exact.to_numpy(dhigh), atol=1e-5)
