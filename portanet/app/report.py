"""The report of a trained model: test metrics, ``report.json`` and the pictures.

:func:`make_report` scores a model on a test set (accuracy, confusion matrix, per-class
precision, recall and F1); :func:`write_report` saves it as ``report.json`` with the run's
configuration, environment, timings and history, plus learning curves, the confusion heat-map
and the most confident mistakes as PNGs when Matplotlib is installed. ``portanet train`` and
``portanet evaluate`` use both.
"""

from __future__ import annotations

import json
import math
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from portanet.app import metrics
from portanet.app.run_data import HeldOut
from portanet.files import DiskFullError, atomic_write
from portanet.inference import predict, predict_proba
from portanet.model import Sequential, class_names_for
from portanet.train import History
from portanet.version import __version__


def make_report(model: Sequential, held_out: HeldOut) -> dict[str, Any]:
    """The model's :func:`~portanet.app.metrics.classification_report` on ``held_out``
    (JSON-able)."""
    names = class_names_for(model, held_out.class_names)
    predicted = model.backend.to_numpy(predict(model, held_out.X))
    labels = model.backend.to_numpy(held_out.y)
    return metrics.classification_report(labels, predicted, num_classes=len(names),
                                         class_names=names)


def default_out_dir(dataset: str, name: str) -> Path:
    """``runs/YYYYmmdd-HHMMSS-DATASET-NAME`` (local time)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{stamp}-{Path(dataset).stem}-{name}"


def environment(model: Sequential) -> dict[str, Any]:
    """Versions, platform, backend, device and dtype: what a result depends on."""
    import array_api_compat

    env = {"portanet": __version__, "python": platform.python_version(),
           "numpy": np.__version__, "array_api_compat": array_api_compat.__version__,
           "platform": platform.platform(), "backend": model.backend.name,
           "device": model.backend.device_name, "dtype": model.backend.dtype_name}
    seam = model.backend.seam
    if seam.module not in env:  # the array library's own version (cupy, torch, ...)
        env[seam.module] = seam.version()
    return env


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, infinity) replaced by ``None`` (null)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_report(
    out: Path,
    model: Sequential,
    report: dict[str, Any],
    held_out: HeldOut,
    *,
    config: dict[str, Any],
    timings: dict[str, Any],
    history: History | None = None,
) -> tuple[list[Path], str | None]:
    """Write ``report.json`` and, with Matplotlib installed, the PNG pictures into ``out``.

    Returns:
        The paths written, and why there are no pictures (``None`` when there are).

    Raises:
        DiskFullError: the disk filled; the files written before it stay, listed in its
            ``kept``.
    """
    document = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": config, "environment": environment(model), "timings": timings,
        "history": history.as_dict() if history else None, "report": report,
    }
    text = json.dumps(_finite(document), indent=2, allow_nan=False)  # always valid JSON
    written: list[Path] = []
    try:
        return _write(out, text, model, report, held_out, history, written)
    except DiskFullError as exc:  # what was written stays; the message lists it
        exc.kept.extend(written)
        raise


def _write(out: Path, text: str, model: Sequential, report: dict[str, Any], held_out: HeldOut,
           history: History | None, written: list[Path]) -> tuple[list[Path], str | None]:
    """:func:`write_report`'s files, each appended to ``written`` once it is complete."""
    atomic_write(out / "report.json", lambda f: f.write(text.encode("utf-8")))
    written.append(out / "report.json")
    from portanet.app import plots
    available, why = plots.plotting_available()
    if not available:
        return written, why
    names = report["class_names"]
    if history is not None and history.epochs:
        written.append(plots.plot_learning_curves(history.as_dict(), out / "learning_curves.png"))
    written.append(plots.plot_confusion_matrix(np.asarray(report["confusion_matrix"]),
                                               out / "confusion_matrix.png", class_names=names))
    proba = model.backend.to_numpy(predict_proba(model, held_out.X))
    labels = model.backend.to_numpy(held_out.y)
    written.append(plots.plot_misclassified(held_out.images, labels, proba.argmax(axis=1), proba,
                                            out / "misclassified.png", class_names=names))
    return written, None


def print_report(report: dict[str, Any], trailer: str) -> None:
    """The metrics table, then one line with the test accuracy and ``trailer``."""
    print()
    print(metrics.format_report(report))
    print(f"\ntest accuracy {report['accuracy']:.2%} on {report['num_samples']:,} images"
          f"{trailer}")


def print_written(written: list[Path], no_pictures: str | None) -> None:
    """What :func:`write_report` wrote, or why it wrote no pictures."""
    if no_pictures:
        print(f"report written to {written[0]}; no pictures: {no_pictures}")
    else:
        print("written: " + ", ".join(str(p) for p in written))
