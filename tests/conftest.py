"""Shared fixtures: every math test runs on each available backend (helpers: tests/helpers.py).

Backends: every row of :data:`portanet.backend.table.SEAMS` (numpy, cupy, array_api_strict, torch),
plus array_api_strict's float32-only device ``no_float64`` (so a float64 leak fails); cupy is
marked ``gpu``. Those that cannot run here are skipped with the reason.
"""

from __future__ import annotations

from typing import Any

import pytest

import portanet
from portanet.backend import SEAMS, cuda_status
from tests.helpers import REPORT_LINES

EXTRA_DEVICES = {"array_api_strict": ("no_float64",)}
"""Devices tested besides a backend's default: array-api-strict's float32-only device."""


def _backend_params() -> list[Any]:
    """One parameter per row of the seam table and per extra device; those that cannot run
    here are skipped with the reason, and those probed for a CUDA device are marked ``gpu``."""
    params = []
    for name, seam in SEAMS.items():
        usable, why = seam.available()
        marks = [pytest.mark.skipif(not usable, reason=why)]
        if seam.probe is cuda_status:
            marks.append(pytest.mark.gpu)
        short = name.removeprefix("array_api_")
        for device in (None, *EXTRA_DEVICES.get(name, ())):
            ident = short if device is None else f"{short}-{device.replace('_', '-')}"
            params.append(pytest.param((name, device), id=ident, marks=marks))
    return params


BACKEND_PARAMS = _backend_params()


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
