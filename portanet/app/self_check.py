"""``portanet check``: prove that this installation computes correctly on every backend here.

For each backend that can run here (NumPy, array-api-strict, PyTorch, CuPy on a usable GPU) it:

1. checks the gradients of a small model against central differences (float64 where the device
   has it);
2. trains one step with :func:`portanet.fit` and compares the weights with NumPy's step from the
   same initial weights;
3. saves the model from that backend and loads it on NumPy: the same weights, the same
   predictions;
4. times a tiny training run (and checks that it learns), reporting milliseconds per step.

It prints a table (backend, device, OK/FAIL with the reason, step time) and
:func:`check` returns a :class:`CheckReport`; ``portanet check`` exits 1 on any FAIL. Backends
that cannot run here are listed as SKIP with the reason (e.g. how to install CuPy); they do not
fail the check. It takes seconds on two CPU cores.
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from portanet.backend import Backend, BackendUnavailableError, get_backend
from portanet.backend.table import SEAMS

STEP_TOLERANCE = {"rtol": 2e-4, "atol": 2e-5}  # float32 rounding of one step, across libraries


@dataclass
class CheckRow:
    """One backend's outcome: ``status`` is ``"OK"``, ``"FAIL"`` or ``"SKIP"``."""

    backend: str
    device: str
    status: str
    reason: str = ""
    step_ms: float | None = None


@dataclass
class CheckReport:
    """All rows; ``ok`` is False when any backend failed."""

    rows: list[CheckRow] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(row.status == "FAIL" for row in self.rows)

    def table(self) -> str:
        """The rows as a text table."""
        lines = [f"{'backend':<18} {'device':<32} {'result':<6} {'step':>10}  reason",
                 "-" * 100]
        for r in self.rows:
            step = f"{r.step_ms:.3g} ms" if r.step_ms is not None else "-"
            lines.append(f"{r.backend:<18} {r.device[:32]:<32} {r.status:<6} {step:>10}  "
                         f"{r.reason}".rstrip())
        verdict = "all OK" if self.ok else "FAILED"
        lines.append(f"portanet check: {verdict} "
                     f"({sum(r.status == 'OK' for r in self.rows)} OK, "
                     f"{sum(r.status == 'FAIL' for r in self.rows)} failed, "
                     f"{sum(r.status == 'SKIP' for r in self.rows)} skipped)")
        return "\n".join(lines)


class CheckFailure(AssertionError):
    """A check's finding (as opposed to a crash inside it)."""


def candidates() -> list[Backend | CheckRow]:
    """A seeded float32 backend for each backend that can run here, a SKIP row for the rest."""
    out: list[Backend | CheckRow] = []
    for name in SEAMS:
        usable, why = SEAMS[name].available()
        if not usable:
            out.append(CheckRow(name, "-", "SKIP", why))
            continue
        try:
            out.append(get_backend(name, seed=0))
        except (BackendUnavailableError, ValueError) as exc:
            out.append(CheckRow(name, "-", "SKIP", str(exc)))
    return out


def check(backends: Sequence[str | Backend] | None = None, *,
          stream: TextIO | None | bool = True) -> CheckReport:
    """Run the checks on ``backends`` (names or Backend objects; default: every backend that
    can run here), print the table to ``stream`` (True: standard output; None: silent) and
    return the report."""
    if isinstance(stream, bool):
        stream = sys.stdout if stream else None
    todo: list[Backend | CheckRow] = []
    for b in backends if backends is not None else candidates():
        if isinstance(b, str):
            try:
                b = get_backend(b, seed=0)
            except (BackendUnavailableError, ValueError) as exc:
                todo.append(CheckRow(b, "-", "FAIL", str(exc)))
                continue
        todo.append(b)
    report = CheckReport()
    if stream is not None:
        names = ", ".join(b.name for b in todo if isinstance(b, Backend))
        print(f"checking {names}: gradients, one step against NumPy, save and load, a timed run",
              file=stream, flush=True)
    for b in todo:
        report.rows.append(b if isinstance(b, CheckRow) else check_backend(b))
    if stream is not None:
        print(report.table(), file=stream, flush=True)
    return report


def check_backend(backend: Backend) -> CheckRow:
    """All four checks on one backend; the first failure is the row's reason."""
    try:
        device = backend.device_name
    except Exception as exc:  # describing the device is itself a check
        return CheckRow(backend.name, "?", "FAIL", f"describing the device: {_line(exc)}")
    steps: list[tuple[str, Callable[[Backend], float | None]]] = [
        ("gradient check", _gradients), ("one step against NumPy", _step_against_numpy),
        ("save here, load on NumPy", _save_and_load), ("timed training", _timed_training)]
    step_ms = None
    for what, run in steps:
        try:
            step_ms = run(backend) or step_ms
        except Exception as exc:
            return CheckRow(backend.name, device, "FAIL", f"{what}: {_line(exc)}", step_ms)
    return CheckRow(backend.name, device, "OK", "", step_ms)


def _line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else ""
    return line if isinstance(exc, CheckFailure) else f"{type(exc).__name__}: {line}"


def _data(n: int, features: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, features)).astype(np.float32)
    return X, np.argmax(X @ rng.normal(size=(features, classes)), axis=1).astype(np.int64)


def _mlp(backend: Backend, sizes: tuple[int, ...], act: Any, dtype: str | None = None) -> Any:
    from portanet.layers import Dense
    from portanet.model import Sequential

    layers: list[Any] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=False)):
        layers.append(Dense(a, b))
        if i < len(sizes) - 2:
            layers.append(act())
    return Sequential(layers, backend=backend, seed=0, dtype=dtype)


def _gradients(backend: Backend) -> None:
    """Backpropagated gradients against central differences, a few entries per parameter."""
    from portanet import losses
    from portanet.layers import Tanh

    float64 = _has_float64(backend)
    model = _mlp(backend, (6, 5, 3), Tanh, "float64" if float64 else "float32")
    b = model.backend
    X, y = _data(8, 6, 3, seed=1)
    Xd, yd = b.asarray(X), b.asarray(y)

    def loss() -> float:
        value, _ = losses.softmax_cross_entropy(model.forward(Xd), yd)
        return float(value)

    with b.activate():
        _, dlogits = losses.softmax_cross_entropy(model.forward(Xd), yd)
        model.backward(dlogits)
        grads = {name: b.to_numpy(g) for name, _, g in model.named_parameters()}
        state = model.state_dict()
        eps, tol = (1e-6, 1e-5) if float64 else (1e-2, 3e-2)
        rng = np.random.default_rng(0)
        for name, host in state.items():
            for flat in rng.choice(host.size, size=min(4, host.size), replace=False):
                index = np.unravel_index(flat, host.shape)
                values = []
                for sign in (1.0, -1.0):
                    moved = {k: v.copy() for k, v in state.items()}
                    moved[name][index] += sign * eps
                    model.load_state_dict(moved)
                    values.append(loss())
                numeric = (values[0] - values[1]) / (2 * eps)
                analytic = float(grads[name][index])
                if abs(numeric - analytic) > tol * max(1.0, abs(numeric) + abs(analytic)):
                    raise CheckFailure(f"d loss / d {name}{list(index)} is {analytic:.6g} by "
                                       f"backprop but {numeric:.6g} by central differences")
        model.load_state_dict(state)


def _has_float64(backend: Backend) -> bool:
    try:
        backend.with_dtype("float64")
    except ValueError:
        return False
    return True


def _step_against_numpy(backend: Backend) -> None:
    """One full-batch SGD step through fit on this backend and on NumPy: same weights after."""
    from portanet import optim
    from portanet.layers import ReLU
    from portanet.train import fit

    X, y = _data(64, 10, 4, seed=2)
    after = []
    for b in (backend, get_backend("numpy", seed=0)):
        model = _mlp(b, (10, 16, 4), ReLU)
        fit(model, X, y, optimizer=optim.SGD(0.5), epochs=1, batch_size=None,
            shuffle=False, stop_on_interrupt=False)
        after.append(model.state_dict())
    for name, ref in after[1].items():
        got = after[0][name]
        if got.shape != ref.shape or not np.allclose(got, ref, **STEP_TOLERANCE):
            diff = float(np.max(np.abs(got - ref))) if got.shape == ref.shape else math.inf
            raise CheckFailure(f"after one step {name} differs from NumPy's by up to {diff:.3g}")


def _save_and_load(backend: Backend) -> None:
    """Save on this backend, load on NumPy: identical weights, matching predictions."""
    from portanet.inference import predict_proba
    from portanet.layers import ReLU
    from portanet.saving.npz import load, save

    model = _mlp(backend, (10, 16, 4), ReLU)
    X, _ = _data(32, 10, 4, seed=3)
    with tempfile.TemporaryDirectory(prefix="portanet-check-") as folder:
        path = save(model, Path(folder) / "model.npz")
        loaded = load(path, backend="numpy")
    for name, value in model.state_dict().items():
        if not np.array_equal(loaded.state_dict()[name], value):
            raise CheckFailure(f"{name} changed between saving and loading")
    here = backend.to_numpy(predict_proba(model, backend.asarray(X)))
    there = predict_proba(loaded, X)
    if not np.allclose(here, there, **STEP_TOLERANCE):
        raise CheckFailure("the model loaded on NumPy predicts differently from the saved one "
                           f"(up to {float(np.max(np.abs(here - there))):.3g})")


def _timed_training(backend: Backend) -> float:
    """Three epochs on a small separable problem; returns milliseconds per step (synchronised,
    including the once-per-epoch read of the figures). Fails when the model does not learn."""
    from portanet import optim
    from portanet.inference import evaluate
    from portanet.layers import ReLU
    from portanet.train import fit

    X, y = _data(1024, 32, 4, seed=4)
    model = _mlp(backend, (32, 64, 4), ReLU)
    Xd, yd = backend.asarray(X), backend.asarray(y)
    batch, epochs = 64, 3
    fit(model, Xd[:batch, ...], yd[:batch], optimizer=optim.SGD(0.1), epochs=1,
        batch_size=batch, stop_on_interrupt=False)  # warm-up: kernels compiled, caches full
    backend.synchronize()
    start = time.perf_counter()
    history = fit(model, Xd, yd, optimizer=optim.SGD(0.1, momentum=0.9), epochs=epochs,
                  batch_size=batch, stop_on_interrupt=False)
    backend.synchronize()
    seconds = time.perf_counter() - start
    accuracy = evaluate(model, Xd, yd)["accuracy"]
    if accuracy < 0.9:
        raise CheckFailure(f"training did not learn: accuracy {accuracy:.1%} after {epochs} "
                           f"epochs on separable data (NumPy reaches over 95%); "
                           f"losses {[round(v, 4) for v in history.loss]}")
    return 1000.0 * seconds / (epochs * math.ceil(X.shape[0] / batch))
