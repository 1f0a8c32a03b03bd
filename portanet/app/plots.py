"""PNG pictures of training: learning curves, confusion matrix, most confident mistakes.

matplotlib is an optional dependency (``pip install "portanet[plot]"``), imported only when
a plot is drawn. Figures are drawn with the Agg canvas directly, never through pyplot, so
nothing here touches matplotlib's global backend or opens windows. Every file is written
atomically: to a temporary file in the same folder, then renamed over the target.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from portanet.app.metrics import FULL_TABLE_CLASSES, top_confusions
from portanet.files import atomic_write

__all__ = [
    "plotting_available",
    "plot_learning_curves",
    "plot_confusion_matrix",
    "plot_misclassified",
]

_INSTALL_HINT = 'matplotlib is not installed: pip install "portanet[plot]"'
_DPI = 120


def plotting_available() -> tuple[bool, str]:
    """Return ``(True, "")`` if matplotlib can be imported, else ``(False, reason)``."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False, _INSTALL_HINT
    return True, ""


def _figure(width: float, height: float) -> Any:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc
    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically, creating the folder; return the path."""
    return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=_DPI, facecolor="white"))


def _series(history: Mapping[str, Sequence[float]], key: str) -> np.ndarray:
    values = history.get(key)
    if values is None:
        return np.zeros(0)
    return np.asarray(values, dtype=np.float64).ravel()


def plot_learning_curves(
    history: Mapping[str, Sequence[float]],
    path: str | os.PathLike[str],
    title: str = "Learning curves",
) -> Path:
    """Plot training (and validation) loss and accuracy per epoch, side by side.

    Args:
        history: lists of per-epoch values keyed ``loss``, ``accuracy``, ``val_loss``,
            ``val_accuracy``. Only ``loss`` is required; missing or empty series are skipped.
        path: PNG file to write (its folder is created if needed).
        title: figure title.

    Returns:
        ``path`` as a :class:`pathlib.Path`.
    """
    loss = _series(history, "loss")
    if loss.size == 0:
        raise ValueError("history has no 'loss' values to plot")
    acc = _series(history, "accuracy")
    val_acc = _series(history, "val_accuracy")
    panels = [("loss", loss, _series(history, "val_loss"))]
    if acc.size or val_acc.size:
        panels.append(("accuracy", acc, val_acc))

    fig = _figure(5.0 * len(panels) + 0.5, 4.0)
    from matplotlib.ticker import MaxNLocator

    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, train, val) in zip(axes, panels, strict=True):
        epochs = max(train.size, val.size)
        marker = "o" if epochs <= 30 else None
        if train.size:
            ax.plot(np.arange(1, train.size + 1), train, marker=marker, ms=4, label="training")
        if val.size:
            label = "validation"
            if name == "accuracy" and np.isfinite(val).any():
                best = int(np.nanargmax(val))
                label += f" (best {val[best]:.4f}, epoch {best + 1})"
            ax.plot(np.arange(1, val.size + 1), val, marker=marker, ms=4, label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.set_title(name)
        if epochs <= 12:
            ax.set_xticks(range(1, epochs + 1))
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))
        ax.set_xlim(0.5, epochs + 0.5)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best")
    fig.suptitle(title)
    return _save(fig, path)


def plot_confusion_matrix(
    matrix: Any,
    path: str | os.PathLike[str],
    class_names: Sequence[str] | None = None,
    title: str = "Confusion matrix",
) -> Path:
    """Draw a confusion matrix (rows true, columns predicted) as a heat map with counts; of
    more than :data:`portanet.app.metrics.FULL_TABLE_CLASSES` classes, the largest confusions as
    bars instead.

    Args:
        matrix: square array of counts, e.g. from :func:`portanet.app.metrics.confusion_matrix`.
        path: PNG file to write (its folder is created if needed).
        class_names: tick labels; by default the class indices.
        title: figure title.

    Returns:
        ``path`` as a :class:`pathlib.Path`.
    """
    cm = np.asarray(matrix)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] == 0:
        raise ValueError(f"matrix must be square (K, K), got shape {cm.shape}")
    k = cm.shape[0]
    names = [str(i) for i in range(k)] if class_names is None else [str(n) for n in class_names]
    if len(names) != k:
        raise ValueError(f"class_names has {len(names)} entries but the matrix is {k}x{k}")

    if not np.all(np.isfinite(cm)) or cm.min() < 0:
        raise ValueError("matrix must hold finite, non-negative counts")
    if k > FULL_TABLE_CLASSES:  # a heat-map of 1,000 x 1,000 cells is slow and unreadable
        return _plot_top_confusions(cm, path, names, title)

    side = min(14.0, max(4.5, 0.55 * k + 2.5))
    fig = _figure(side + 1.2, side)
    from matplotlib.colors import PowerNorm
    from matplotlib.ticker import FuncFormatter

    ax = fig.subplots()
    # A square-root-like colour scale: with a linear one the big diagonal washes out the
    # off-diagonal mistakes, which are what a reader is looking for.
    norm = PowerNorm(gamma=0.4, vmin=0, vmax=max(float(cm.max()), 1e-12))
    image = ax.imshow(cm, cmap="Blues", norm=norm, interpolation="nearest")
    is_int = np.issubdtype(cm.dtype, np.integer)
    label = "count" if is_int else ("fraction" if cm.max() <= 1 else "value")
    bar = fig.colorbar(image, ax=ax, shrink=0.8, label=label)
    bar.set_ticks(_power_ticks(norm))
    tick_format = "{:,.0f}" if is_int else "{:.3g}"
    bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: tick_format.format(v)))

    # Rotate the column labels only when they would not fit side by side (~12 chars/inch).
    long_names = max(len(s) for s in names) > 0.9 * 12 * side * 0.85 / k
    ax.set_xticks(range(k), names, rotation=45 if long_names else 0)
    if long_names:
        for tick in ax.get_xticklabels():
            tick.set_horizontalalignment("right")
            tick.set_rotation_mode("anchor")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)

    texts = [[str(int(v)) if is_int else f"{v:.2f}" for v in row] for row in cm]
    # Fit the longest number into a cell: a cell is about side * 72 * 0.85 / k points wide
    # and a digit about 0.6 em.
    widest = max(len(t) for row in texts for t in row)
    fontsize = float(np.clip(side * 72 * 0.85 / k / (0.6 * widest + 1.0), 5.0, 10.0))
    shades = np.asarray(norm(cm.astype(np.float64)))
    for i in range(k):
        for j in range(k):
            color = "white" if shades[i, j] > 0.6 else ("0.6" if cm[i, j] == 0 else "black")
            ax.text(j, i, texts[i][j], ha="center", va="center", fontsize=fontsize, color=color)
    return _save(fig, path)


def _plot_top_confusions(cm: np.ndarray, path: str | os.PathLike[str], names: Sequence[str],
                         title: str) -> Path:
    """Bars of the largest off-diagonal cells of ``cm``: what a heat-map of many classes
    would hide."""
    top = top_confusions(cm.astype(np.int64), FULL_TABLE_CLASSES)
    k = cm.shape[0]
    fig = _figure(7.0, 1.2 + 0.32 * max(len(top), 3))
    ax = fig.subplots()
    heading = f"{title}: the {len(top)} largest confusions of {k:,} classes"
    if not top:
        ax.set_axis_off()
        ax.text(0.5, 0.5, "No confusions: every image is right", ha="center", va="center")
    else:
        labels = [f"{names[i]} -> {names[j]}" for i, j, _ in top]
        ax.barh(range(len(top)), [count for _, _, count in top], color="tab:blue")
        ax.set_yticks(range(len(top)), labels)
        ax.invert_yaxis()
        ax.xaxis.get_major_locator().set_params(integer=True)  # counts, not fractions
        ax.set_xlabel("images (true -> predicted)")
    ax.set_title(heading)
    return _save(fig, path)


def _power_ticks(norm: Any) -> list[float]:
    """1-2-5 ticks from 0 to vmax, spread evenly along a non-linear colour bar."""
    top = float(norm.vmax)
    candidates = [m * 10.0**e for e in range(-3, 10) for m in (1, 2, 5)]
    ticks = [0.0]
    for c in candidates:
        if c <= top and float(norm(c)) - float(norm(ticks[-1])) >= 0.12:
            ticks.append(c)
    if float(norm(top)) - float(norm(ticks[-1])) >= 0.08:
        ticks.append(top)
    return ticks


def _as_images(images: Any, n: int) -> np.ndarray:
    arr = np.asarray(images)
    if arr.ndim == 2:
        side = math.isqrt(arr.shape[1])
        if side * side != arr.shape[1]:
            raise ValueError(
                f"flat images must have a square number of pixels (e.g. 784), got {arr.shape[1]}"
            )
        arr = arr.reshape(arr.shape[0], side, side)
    if arr.ndim != 3 or arr.shape[0] != n:
        raise ValueError(f"images must be (N, H, W) or (N, H*W) with N = {n}, got {arr.shape}")
    return arr


def plot_misclassified(
    images: Any,
    y_true: Any,
    y_pred: Any,
    confidence: Any,
    path: str | os.PathLike[str],
    n: int = 25,
    class_names: Sequence[str] | None = None,
) -> Path:
    """Show the ``n`` test images misclassified with the highest confidence.

    Args:
        images: ``(N, 28, 28)`` or ``(N, 784)`` array, uint8 (0..255) or float.
        y_true, y_pred: ``(N,)`` integer labels.
        confidence: ``(N,)`` probability of the predicted class, or ``(N, K)`` class
            probabilities (the predicted class's column is used).
        path: PNG file to write (its folder is created if needed).
        n: at most this many images are shown, most confident mistake first.
        class_names: names to show instead of class indices.

    If nothing was misclassified the figure says so.

    Returns:
        ``path`` as a :class:`pathlib.Path`.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    t = np.asarray(y_true).ravel()
    p = np.asarray(y_pred).ravel()
    total = t.shape[0]
    if p.shape[0] != total:
        raise ValueError(f"y_true and y_pred lengths differ: {total} and {p.shape[0]}")
    conf = _predicted_confidence(confidence, p)
    pics = _as_images(images, total)
    wrong = np.flatnonzero(t != p)
    order = wrong[np.argsort(-conf[wrong], kind="stable")][: max(0, n)]
    if order.size == 0:
        fig = _figure(5.0, 2.0)
        fig.text(0.5, 0.5, f"No misclassified images\n({total} of {total} correct)",
                 ha="center", va="center", fontsize=14)
        return _save(fig, path)

    def name(c: int) -> str:
        return str(c) if class_names is None else str(class_names[c])

    titles = [_mistake_title(name(t[i]), name(p[i]), conf[i]) for i in order]
    fig = _image_grid(pics[order], titles, _grey_range(pics, order))
    if order.size < wrong.size:
        heading = f"{order.size} most confident of {wrong.size} mistakes ({total} images)"
    else:
        heading = f"All {wrong.size} mistakes ({total} images), most confident first"
    fig.suptitle(heading, fontsize=11)
    return _save(fig, path)


def _predicted_confidence(confidence: Any, y_pred: np.ndarray) -> np.ndarray:
    """``confidence`` as the ``(N,)`` probabilities of the predicted classes ``y_pred``: given
    as such, or picked from ``(N, K)`` class probabilities."""
    total = y_pred.shape[0]
    conf = np.asarray(confidence, dtype=np.float64)
    if conf.ndim == 2 and conf.shape[0] == total:
        conf = conf[np.arange(total), y_pred]
    if conf.shape != (total,):
        raise ValueError(f"confidence must be (N,) or (N, K) with N = {total}, got {conf.shape}")
    return conf


def _grey_range(pics: np.ndarray, shown: np.ndarray) -> tuple[float, float]:
    """The values drawn black and white: 0..255 for uint8, 0..1 for images in that range, else
    (standardised inputs, say) the range of the ``shown`` images, one scale for all."""
    if pics.dtype == np.uint8:
        return 0.0, 255.0
    if pics.min() >= 0 and pics.max() <= 1:
        return 0.0, 1.0
    return float(pics[shown].min()), float(pics[shown].max())


def _mistake_title(true: str, predicted: str, confidence: float) -> str:
    """One picture's title: the true and predicted class and the confidence, on two lines
    when one would be too long."""
    label = f"true {true} / pred {predicted} ({confidence:.2f})"
    if len(label) > 24:
        label = f"true {true}\npred {predicted} ({confidence:.2f})"
    return label


def _image_grid(pics: np.ndarray, titles: Sequence[str], grey: tuple[float, float]) -> Any:
    """A figure of the images ``pics`` in grey (``grey``: the values drawn black and white), at
    least five to a row, each with its title."""
    count = len(pics)
    cols = min(count, max(5, math.ceil(math.sqrt(count))))
    rows = math.ceil(count / cols)
    fig = _figure(max(1.45 * cols + 0.3, 5.0), 1.6 * rows + 0.7)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for ax, pic, title in zip(axes.ravel(), pics, titles, strict=False):
        ax.imshow(pic, cmap="gray", vmin=grey[0], vmax=grey[1], interpolation="nearest")
        ax.set_title(title, fontsize=8)
    return fig
