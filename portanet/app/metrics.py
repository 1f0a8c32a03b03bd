"""Classification metrics on host NumPy arrays: confusion matrix and a per-class report.

Conventions (the same as scikit-learn's ``zero_division=0``):

* precision of a class that was never predicted is 0.0;
* recall of a class that never occurs in ``y_true`` (support 0) is 0.0;
* F1 is ``2 * TP / (2 * TP + FP + FN)``, which equals the harmonic mean of precision and
  recall whenever that is defined, and is 0.0 when ``TP + FP + FN == 0``.

Macro averages weigh every class equally (including classes with support 0); weighted
averages weigh each class by its support.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from portanet.backend import host_array

__all__ = ["FULL_TABLE_CLASSES", "confusion_matrix", "classification_report", "format_report",
           "top_confusions"]

FULL_TABLE_CLASSES = 20
"""Up to this many classes, reports and pictures show every class and the whole confusion
matrix; beyond, the classes with the lowest F1 and the largest confusions (``report.json``
keeps everything), so a report of 1,000 classes stays quick and readable."""


def _as_labels(name: str, labels: Any) -> np.ndarray:
    """Check that ``labels`` is a 1-D array of integer class labels and return it as int64."""
    arr = host_array(labels, name)  # a device array gets portanet's error, not a raw TypeError
    if arr.ndim != 1:
        hint = (
            " If these are scores or one-hot rows, take the class with argmax(axis=1)."
            if arr.ndim == 2
            else " Flatten it with .ravel()."
        )
        raise ValueError(
            f"{name} must be a 1-D array of class labels, got shape {arr.shape}.{hint}"
        )
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        if arr.size == 0 and arr.dtype == np.float64:
            # np.asarray([]) is float64; an empty list is a harmless empty label array.
            return arr.astype(np.int64)
        hint = (
            " If they are whole numbers stored as floats, cast with .astype(int);"
            " if they are scores, take argmax(axis=1)."
            if np.issubdtype(arr.dtype, np.floating)
            else ""
        )
        raise TypeError(f"{name} must hold integer class labels, got dtype {arr.dtype}.{hint}")
    return arr.astype(np.int64, copy=False)


def _check_pair(
    y_true: Any, y_pred: Any, num_classes: int | None
) -> tuple[np.ndarray, np.ndarray, int]:
    t = _as_labels("y_true", y_true)
    p = _as_labels("y_pred", y_pred)
    if t.shape[0] != p.shape[0]:
        raise ValueError(
            f"y_true and y_pred must have the same length, got {t.shape[0]} and {p.shape[0]}:"
            " pass one prediction per example."
        )
    if num_classes is None:
        if t.size == 0:
            raise ValueError(
                "cannot infer the number of classes from empty labels: pass num_classes."
            )
        num_classes = int(max(t.max(), p.max())) + 1
    elif isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise TypeError(f"num_classes must be an int, got {type(num_classes).__name__}")
    num_classes = int(num_classes)
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    for name, arr in (("y_true", t), ("y_pred", p)):
        if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
            bad = arr[(arr < 0) | (arr >= num_classes)]
            raise ValueError(
                f"{name} has labels outside 0..{num_classes - 1} (e.g. {int(bad[0])},"
                f" {bad.size} in all): labels must be class indices 0..num_classes-1;"
                " pass a larger num_classes or remap the labels."
            )
    return t, p, num_classes


def confusion_matrix(y_true: Any, y_pred: Any, num_classes: int | None = None) -> np.ndarray:
    """Count how often each true class was predicted as each class.

    Args:
        y_true: 1-D integer array of true class indices.
        y_pred: 1-D integer array of predicted class indices, the same length.
        num_classes: number of classes ``K``; by default one more than the largest label seen.

    Returns:
        int64 array of shape ``(K, K)``: entry ``[i, j]`` counts examples of true class ``i``
        predicted as class ``j`` (rows are true classes, columns predicted classes).

    Raises:
        ValueError: labels are not 1-D, lengths differ, or labels are outside ``0..K-1``.
        TypeError: labels are not integers (e.g. float scores).
    """
    t, p, k = _check_pair(y_true, y_pred, num_classes)
    counts = np.bincount(t * k + p, minlength=k * k)
    return counts.reshape(k, k).astype(np.int64, copy=False)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den elementwise, with 0.0 where den == 0."""
    out = np.zeros(num.shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def classification_report(
    y_true: Any,
    y_pred: Any,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Accuracy, confusion matrix and per-class precision / recall / F1 / support.

    Precision of a never-predicted class and recall of a class with no support are
    defined as 0.0 (scikit-learn's ``zero_division=0``); see the module docstring.

    Returns:
        A JSON-serialisable dict (plain Python ints, floats, strings and lists)::

            {
              "num_classes": K, "num_samples": N, "accuracy": float,
              "class_names": [str, ...],
              "confusion_matrix": [[int, ...], ...],   # rows true, columns predicted
              "per_class": [{"class": str, "precision": float, "recall": float,
                             "f1": float, "support": int}, ...],
              "macro_avg": {"precision", "recall", "f1", "support"},
              "weighted_avg": {"precision", "recall", "f1", "support"},
            }

    Raises:
        ValueError / TypeError: as :func:`confusion_matrix`; also for no samples or a
        ``class_names`` of the wrong length.
    """
    t, p, k = _check_pair(y_true, y_pred, num_classes)
    if t.size == 0:
        raise ValueError("cannot report on zero samples: y_true and y_pred are empty.")
    if class_names is None:
        names = [str(i) for i in range(k)]
    else:
        names = [str(n) for n in class_names]
        if len(names) != k:
            raise ValueError(f"class_names has {len(names)} entries but there are {k} classes.")

    cm = confusion_matrix(t, p, k)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision = _ratio(tp, predicted.astype(np.float64))
    recall = _ratio(tp, support.astype(np.float64))
    f1 = _ratio(2 * tp, (support + predicted).astype(np.float64))
    n = int(support.sum())
    weights = support / n

    def avg(w: np.ndarray) -> dict[str, float | int]:
        return {
            "precision": float(np.sum(w * precision)),
            "recall": float(np.sum(w * recall)),
            "f1": float(np.sum(w * f1)),
            "support": n,
        }

    return {
        "num_classes": k,
        "num_samples": n,
        "accuracy": float(tp.sum() / n),
        "class_names": names,
        "confusion_matrix": cm.tolist(),
        "per_class": [
            {
                "class": names[i],
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i in range(k)
        ],
        "macro_avg": avg(np.full(k, 1.0 / k)),
        "weighted_avg": avg(weights),
    }


def top_confusions(matrix: Any, n: int = FULL_TABLE_CLASSES) -> list[tuple[int, int, int]]:
    """The ``n`` largest off-diagonal counts of a confusion matrix, largest first, as
    ``(true class, predicted class, count)``; zero counts are left out."""
    cm = np.asarray(matrix)
    off = cm.astype(np.int64, copy=True)
    np.fill_diagonal(off, 0)
    flat = off.ravel()
    n = min(n, int(np.count_nonzero(flat)))
    best = np.argsort(-flat, kind="stable")[:n]  # largest first, ties in matrix order
    k = cm.shape[1]
    return [(int(i // k), int(i % k), int(flat[i])) for i in best]


def format_report(report: dict[str, Any], digits: int = 4) -> str:
    """Render a :func:`classification_report` dict as an aligned plain-text table.

    The per-class table (precision, recall, f1, support) is followed by accuracy, macro and
    weighted averages, then the confusion matrix with true classes as rows and predicted
    classes as columns. Long class names are replaced by their indices in the matrix's
    column headers (rows keep ``index name``) so the matrix stays narrow. Beyond
    :data:`FULL_TABLE_CLASSES` classes the table holds the classes with the lowest F1 and the
    matrix gives way to the largest confusions.
    """
    try:
        rows = report["per_class"]
        cm = report["confusion_matrix"]
        names = [r["class"] for r in rows]
    except (KeyError, TypeError) as exc:
        raise ValueError(
            "format_report expects the dict returned by classification_report"
        ) from exc
    many = len(rows) > FULL_TABLE_CLASSES
    out = []
    if many:
        order = sorted(range(len(rows)), key=lambda i: (rows[i]["f1"], i))
        rows = [rows[i] for i in order[:FULL_TABLE_CLASSES]]
        out.append(f"the {len(rows)} classes with the lowest F1 of {len(names):,} (report.json "
                   f"has every class)")
    out += _score_table(report, rows, names, digits)
    out.append("")
    out += _largest_confusions(cm, names) if many else _confusion_table(cm, names)
    return "\n".join(out)


def _score_table(report: dict[str, Any], rows: Sequence[dict[str, Any]], names: Sequence[str],
                 digits: int) -> list[str]:
    """The lines of precision, recall, F1 and support: a heading, one line per class of
    ``rows``, a blank, then accuracy and the macro and weighted averages. The label column is
    as wide as the longest of all class ``names``."""
    avg_labels = ("macro avg", "weighted avg")
    label_w = max([len(n) for n in names] + [len(s) for s in avg_labels] + [len("accuracy")])
    num_w = max(digits + 2, len("precision"))
    sup_w = max(len("support"), len(str(report["num_samples"])))

    def line(label: str, cells: Sequence[str], support: int) -> str:
        body = " ".join(c.rjust(num_w) for c in cells)
        return f"{label.rjust(label_w)}  {body}  {str(support).rjust(sup_w)}"

    def scores(r: dict[str, Any]) -> list[str]:
        return [f"{r[key]:.{digits}f}" for key in ("precision", "recall", "f1")]

    out = [f"{'':{label_w}}  " + " ".join(h.rjust(num_w) for h in ("precision", "recall", "f1"))
           + f"  {'support'.rjust(sup_w)}"]
    out += [line(r["class"], scores(r), r["support"]) for r in rows]
    out.append("")
    out.append(line("accuracy", ["", "", f"{report['accuracy']:.{digits}f}"],
                    report["num_samples"]))
    for label, key in zip(avg_labels, ("macro_avg", "weighted_avg"), strict=True):
        out.append(line(label, scores(report[key]), report[key]["support"]))
    return out


def _largest_confusions(cm: Any, names: Sequence[str]) -> list[str]:
    """The lines naming the largest off-diagonal counts of ``cm`` (for many classes)."""
    return [f"largest confusions of {len(names):,} classes (report.json has the matrix)",
            *([f"  true {names[i]} predicted as {names[j]}: {count:,}"
               for i, j, count in top_confusions(cm)] or ["  none: every image is right"])]


def _confusion_table(cm: Any, names: Sequence[str]) -> list[str]:
    """The lines of the whole confusion matrix ``cm``, true classes as rows. Columns are headed
    by the class names when they are short, else by the class indices (the rows then show
    ``index name``)."""
    out = ["confusion matrix (rows: true class, columns: predicted class)"]
    count_w = max(len(str(v)) for row in cm for v in row)
    short = max(len(n) for n in names) <= max(count_w, 5)
    col_heads = names if short else [str(i) for i in range(len(names))]
    row_heads = names if short else [f"{i} {n}" for i, n in enumerate(names)]
    cell_w = max(count_w, max(len(h) for h in col_heads))
    head_w = max(len(h) for h in row_heads)
    out.append(" " * head_w + " |" + "".join(" " + h.rjust(cell_w) for h in col_heads))
    out.append("-" * head_w + "-+" + "-" * ((cell_w + 1) * len(col_heads)))
    for head, row in zip(row_heads, cm, strict=True):
        head = head.rjust(head_w) if short else head.ljust(head_w)
        out.append(head + " |" + "".join(" " + str(v).rjust(cell_w) for v in row))
    return out
