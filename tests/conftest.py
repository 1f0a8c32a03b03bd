"""Shared fixtures: every math test runs on each available backend (helpers: tests/helpers.py).

Backends: numpy; array_api_strict on its default device and on its float32-only device
``no_float64`` (so a float64 leak fails); cupy when a CUDA device is usable (marked ``gpu``);
torch when PyTorch is installed. Unavailable ones are skipped with the reason.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

import portanet
from portanet.backend import cuda_status
from tests.helpers import REPORT_LINES

_CUDA_OK, _CUDA_WHY = cuda_status()
_STRICT_OK = importlib.util.find_spec("array_api_strict") is not None
_TORCH_OK = importlib.util.find_spec("torch") is not None

BACKEND_PARAMS = [
    pytest.param(("numpy", None), id="numpy"),
    pytest.param(
        ("array_api_strict", None), id="strict",
        marks=pytest.mark.skipif(not _STRICT_OK, reason="array-api-strict is not installed"),
    ),
    pytest.param(
        ("array_api_strict", "no_float64"), id="strict-no-float64",
        marks=pytest.mark.skipif(not _STRICT_OK, reason="array-api-strict is not installed"),
    ),
    pytest.param(
        ("cupy", None), id="cupy",
        marks=[pytest.mark.gpu, pytest.mark.skipif(not _CUDA_OK, reason=_CUDA_WHY)],
    ),
    pytest.param(
        ("torch", None), id="torch",
        marks=pytest.mark.skipif(not _TORCH_OK, reason="PyTorch is not installed"),
    ),
]


@pytest.fixture(params=BACKEND_PARAMS)
def backend_spec(request: pytest.FixtureRequest) -> tuple[str, Any]:
    """``(name, device)`` of one backend."""
    return request.param


@pytest.fixture
def backend(backend_spec: tuple[str, Any]) -> portanet.Backend:
    """A float32 backend, seeded."""
    name, device = backend_spec
    return portanet.get_backend(name, "float32", seed=0, device=device)


@pytest.fixture
def backend64(backend_spec: tuple[str, Any]) -> portanet.Backend:
    """A float64 backend for numerical gradient checks (skipped where the device has none)."""
    name, device = backend_spec
    if device == "no_float64":
        pytest.skip("this device has no float64; gradients are checked on the others")
    return portanet.get_backend(name, "float64", seed=0, device=device)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for line in REPORT_LINES:
        terminalreporter.write_line(f"portanet: {line}")
