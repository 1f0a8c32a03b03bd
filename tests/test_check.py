"""``portanet check`` passes on the backends here and fails, with exit status 1, on a broken one.

The faults are injected into a real backend (its namespace or its host conversion), as a
miscompiled kernel or a broken driver would be, not simulated in the report.
"""

from __future__ import annotations

import dataclasses
import importlib
import types
from typing import Any

import numpy as np
import pytest

import portanet as pn
from portanet.app import cli

check_module = importlib.import_module("portanet.app.self_check")  # portanet.check: the function


def broken_namespace(**overrides: Any) -> types.ModuleType:
    """The NumPy backend's namespace with some functions replaced."""
    from portanet.backend import numpy_namespace as _numpy_namespace
    module = types.ModuleType("broken_numpy_namespace")
    module.__dict__.update(vars(_numpy_namespace))
    module.__dict__.update(overrides)
    return module


def wrong_sum(x: Any, /, *, axis: Any = None, dtype: Any = None, keepdims: bool = False) -> Any:
    """A reduction that is 1% off, like a kernel with a bad accumulator."""
    return np.add.reduce(x, axis=axis, dtype=dtype, keepdims=keepdims) * np.float32(1.01)


def test_check_passes_on_every_backend_here(capsys: pytest.CaptureFixture[str]) -> None:
    report = pn.check()
    out = capsys.readouterr().out
    assert report.ok, report.table()
    names = {row.backend: row for row in report.rows}
    assert names["numpy"].status == "OK" and names["numpy"].step_ms > 0
    assert set(names) == {"numpy", "array_api_strict", "torch", "cupy"}
    for row in report.rows:
        assert row.status in ("OK", "SKIP")
        assert (row.status == "SKIP") == bool(row.reason)
        assert row.backend in out
    assert "all OK" in out


def test_a_wrong_reduction_fails_the_gradient_check() -> None:
    broken = dataclasses.replace(pn.get_backend("numpy", seed=0),
                                 xp=broken_namespace(sum=wrong_sum))
    report = pn.check([broken], stream=None)
    (row,) = report.rows
    assert not report.ok and row.status == "FAIL"
    assert row.reason.startswith("gradient check: d loss / d ") and ".b" in row.reason


def test_a_wrong_host_copy_fails_save_and_load() -> None:
    good = pn.get_backend("numpy", seed=0)
    seam = dataclasses.replace(good.seam, to_host=lambda a: np.array(a, copy=True)[::-1].copy())

    class Corrupting(type(good)):
        @property
        def seam(self) -> Any:
            return seam

    broken = Corrupting(**{f.name: getattr(good, f.name) for f in dataclasses.fields(good)})
    report = pn.check([broken], stream=None)
    assert report.rows[0].status == "FAIL", report.table()


def test_a_model_that_does_not_learn_fails_the_timed_run(monkeypatch: pytest.MonkeyPatch) -> None:
    class Frozen(pn.optim.SGD):
        def step(self, model: Any, l2: float = 0.0) -> None:  # never moves the weights
            pass

    real_sgd = pn.optim.SGD
    monkeypatch.setattr(pn.optim, "SGD", lambda lr, **kw: Frozen(lr, **kw) if kw else
                        real_sgd(lr))
    row = pn.check(["numpy"], stream=None).rows[0]
    assert row.status == "FAIL" and row.reason.startswith("timed training: training did not "
                                                          "learn")


def test_the_command_exits_1_on_a_failure(monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    broken = dataclasses.replace(pn.get_backend("numpy", seed=0),
                                 xp=broken_namespace(sum=wrong_sum))
    monkeypatch.setattr(check_module, "candidates", lambda: [broken])
    assert cli.main(["check"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "FAILED" in out


def test_the_command_exits_0_and_skips_what_cannot_run(monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(check_module, "candidates", lambda: [
        pn.get_backend("numpy", seed=0),
        check_module.CheckRow("cupy", "-", "SKIP", "CuPy is not installed")])
    assert cli.main(["check"]) == 0
    out = capsys.readouterr().out
    assert "SKIP" in out and "CuPy is not installed" in out and "1 OK" in out


def test_an_unavailable_backend_asked_for_by_name_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pn.backend, "cuda_status", lambda refresh=False: (False, "no GPU"))
    from portanet.backend import table as seams
    monkeypatch.setattr(seams, "cuda_status", lambda refresh=False: (False, "no GPU"))
    assert cli.main(["check", "--backend", "cupy"]) == 1


def test_a_wrong_activation_fails_the_step_against_numpy() -> None:
    def leaky(x: Any, y: Any) -> Any:  # ReLU's forward lets 1% of negative inputs through
        return np.where(x > 0, x, 0.01 * x)

    broken = dataclasses.replace(pn.get_backend("numpy", seed=0),
                                 xp=broken_namespace(maximum=leaky))
    row = pn.check([broken], stream=None).rows[0]
    assert row.status == "FAIL" and row.reason.startswith("one step against NumPy: after one "
                                                          "step"), row.reason
