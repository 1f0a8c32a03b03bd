"""Helpers the tests import: comparisons, small data sets, and lines for the run's summary.

Fixtures live in conftest.py (pytest finds them there); anything a test imports lives here.
"""

from __future__ import annotations

import math
import os
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import portanet
from portanet import losses

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


# --- the gradient checker: float64 central differences -----------------------------------------

EPS = 1e-6
RTOL = 1e-6
ATOL = 1e-8


def numerical_gradient(f: Callable[[np.ndarray], float], x: np.ndarray) -> np.ndarray:
    """Central differences of a scalar function of a host array (``x`` is restored)."""
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + EPS
        up = f(x)
        x[i] = old - EPS
        down = f(x)
        x[i] = old
        grad[i] = (up - down) / (2 * EPS)
    return grad


def assert_layer_gradients(layer: portanet.Layer, backend: portanet.Backend,
                           x_host: np.ndarray) -> None:
    """Backward against central differences, for the input and every parameter of a built
    ``layer``, with L = sum(forward(x) * R) for a fixed random R (so dL/dout = R). Buffers
    (running statistics) are held still while the differences are taken."""
    buffers = dict(layer.buffers)

    def out_of(x: np.ndarray) -> np.ndarray:
        result = backend.to_numpy(layer.forward(backend.asarray(x)))
        layer.buffers.update(buffers)
        return result

    out = layer.forward(backend.asarray(x_host))
    layer.buffers.update(buffers)
    r_host = np.random.default_rng(2).normal(size=tuple(out.shape))
    dx = layer.backward(backend.asarray(r_host))
    grads = {key: backend.to_numpy(g) for key, g in layer.grads.items()}
    expected_dx = numerical_gradient(lambda x: float(np.sum(out_of(x) * r_host)), x_host.copy())
    assert backend.owns(dx) and dx.dtype == backend.dtype
    np.testing.assert_allclose(backend.to_numpy(dx), expected_dx, rtol=RTOL, atol=ATOL)
    assert set(grads) == set(layer.params)
    for key in list(layer.params):
        p_host = backend.to_numpy(layer.params[key])

        def loss_of_p(p: np.ndarray, key: str = key) -> float:
            layer.params[key] = backend.asarray(p)
            return float(np.sum(out_of(x_host) * r_host))

        expected = numerical_gradient(loss_of_p, p_host.copy())
        layer.params[key] = backend.asarray(p_host)
        np.testing.assert_allclose(grads[key], expected, rtol=RTOL, atol=ATOL, err_msg=key)


def assert_model_gradients(model: portanet.Sequential, x: Any, labels: Any,
                           first: int | None = None) -> None:
    """The cross-entropy gradient of (the ``first``) parameters of ``model`` on device arrays
    ``x`` and ``labels``, backpropagated, against central differences."""
    backend = model.backend
    _, dlogits = losses.softmax_cross_entropy(model.forward(x), labels)
    model.backward(dlogits)
    for name, param, grad in list(model.named_parameters())[:first]:
        p_host = backend.to_numpy(param)
        layer, key = model.layers[int(name.split(".")[0])], name.split(".")[1]

        def loss_of(p: np.ndarray, layer: portanet.Layer = layer, key: str = key) -> float:
            layer.params[key] = backend.asarray(p)
            value = losses.softmax_cross_entropy(model.forward(x), labels)[0]
            return float(backend.to_numpy(value))

        expected = numerical_gradient(loss_of, p_host.copy())
        layer.params[key] = backend.asarray(p_host)
        np.testing.assert_allclose(backend.to_numpy(grad), expected, rtol=RTOL, atol=ATOL,
                                   err_msg=name)


# --- data --------------------------------------------------------------------------------------


def make_dataset(path: Path, n_train: int = 1200, n_test: int = 300, seed: int = 0) -> Path:
    """Ten noisy 28x28 prototypes, one per class, as uint8 images in an ``.npz`` the command
    line takes (``--dataset-file``): easy but not trivial."""
    rng = np.random.default_rng(seed)
    prototypes = rng.random((10, 28, 28)) < 0.25

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, 10, n)
        flips = rng.random((n, 28, 28)) < 0.08
        images = (prototypes[labels] ^ flips) * rng.integers(150, 256, (n, 1, 1))
        return images.astype(np.uint8), labels.astype(np.uint8)

    (x_train, y_train), (x_test, y_test) = draw(n_train), draw(n_test)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


def train_linear(dataset: Path | str, *extra: str) -> int:
    """``portanet train`` of the ``linear`` preset for one epoch on ``dataset``, quietly, on
    NumPy, with any ``extra`` arguments; its exit status."""
    from portanet.app import cli

    return cli.main(["train", "--dataset-file", str(dataset), "--model", "linear", "--backend",
                     "numpy", "--epochs", "1", "--validation", "0", "--quiet", *extra])


def distinct_input(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Well-separated values in [-2, 2], none near 0: no ReLU kinks, no max-pool near-ties."""
    n = int(np.prod(shape))
    values = (np.random.default_rng(seed).permutation(n) + 0.5) / n * 4.0 - 2.0
    return values.reshape(shape)


# --- pictures of digits ------------------------------------------------------------------------


Point = tuple[float, float]


def strokes(canvas: tuple[int, int], segments: list[tuple[Point, Point]],
            width: float) -> np.ndarray:
    """Anti-aliased pen strokes of ``width`` px along line segments: 1.0 ink on 0.0."""
    yy, xx = np.mgrid[: canvas[0], : canvas[1]].astype(np.float64)
    d = np.full(canvas, np.inf)
    for (y0, x0), (y1, x1) in segments:
        vy, vx = y1 - y0, x1 - x0
        t = np.clip(((yy - y0) * vy + (xx - x0) * vx) / (vy * vy + vx * vx), 0.0, 1.0)
        d = np.minimum(d, np.hypot(yy - (y0 + t * vy), xx - (x0 + t * vx)))
    return np.clip(width / 2 + 0.5 - d, 0.0, 1.0)


def seven(canvas: tuple[int, int] = (200, 160), top: int = 40, left: int = 40, size: int = 120,
          width: float = 9) -> np.ndarray:
    """A handwritten-looking 7: a top bar and a long diagonal."""
    corner = (top, left + 0.7 * size)
    return strokes(canvas, [((top, left), corner), (corner, (top + size, left + 0.25 * size))],
                   width)


def shifted_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Mean |a - b| after the best shift of b by at most one pixel (centring rounds)."""
    return min(np.abs(a - np.roll(b, (dy, dx), axis=(0, 1))).mean()
               for dy in (-1, 0, 1) for dx in (-1, 0, 1))


# --- model files -------------------------------------------------------------------------------


def assert_load_refused_within(path: Path, match: str, max_bytes: int) -> None:
    """Loading ``path`` raises a ValueError matching ``match`` having allocated (tracemalloc's
    peak) under ``max_bytes``: a file that declares huge arrays is refused from its headers."""
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=match):
            portanet.load(path, backend="numpy")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < max_bytes, f"{peak:,} bytes allocated before the refusal"


REPORT_LINES: list[str] = []
"""Facts a test found about this machine, printed at the end of the run (e.g. the data route)."""


def as_nobody(action: Callable[[], object]) -> str:
    """``action()`` run in a forked child as the user 'nobody' (root ignores permission bits):
    ``ok: result`` or ``refused: message``."""
    import pwd

    if os.geteuid() != 0:
        pytest.skip("needs root to act as another user")
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody' to test permissions with while running as root")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        status = 0
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            try:
                result = f"ok: {action()}"
            except (OSError, ValueError) as exc:
                result = f"refused: {exc}"
            os.write(write_end, result.encode())
        except BaseException:
            status = 1
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        text = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    assert status == 0, "the child running as nobody failed"
    return text
