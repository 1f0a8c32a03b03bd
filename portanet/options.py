"""Checks of command-line values, as argparse ``type=`` functions and a memory estimate.

Each type function raises :class:`argparse.ArgumentTypeError`, so argparse's message names the
option (``argument --lr: must be a finite number > 0, got inf``) and exits with status 2. The
rules and their wording are :mod:`portanet._checks`, shared with the library.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Any

from portanet import _checks, data, recipes
from portanet._files import check_input_file, check_output_dir, check_output_path

OUTPUT_FILES = ("report.json", "learning_curves.png", "confusion_matrix.png", "misclassified.png")
"""The files ``--out`` may receive."""

__all__ = ["OUTPUT_FILES", "batch_size", "check_inputs", "check_memory", "count", "dropout",
           "finite_non_negative", "finite_positive", "hidden", "memory_bound", "saved_dataset"]


def _number(text: str, kind: type) -> float:
    try:
        return kind(text)
    except ValueError:
        noun = "a whole number" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"must be {noun}, got {text!r}") from None


def _checked(check: Any, text: str, kind: type) -> Any:
    try:
        return check("", _number(text, kind))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def count(text: str) -> int:
    """A whole number >= 0 (``--limit``, ``--validation``, ``--epochs``, ``--seed``)."""
    return _checked(_checks.non_negative_int, text, int)


def finite_positive(text: str) -> float:
    """A finite number > 0 (``--lr``)."""
    return _checked(_checks.finite_positive, text, float)


def finite_non_negative(text: str) -> float:
    """A finite number >= 0 (``--weight-decay``)."""
    return _checked(_checks.finite_non_negative, text, float)


def dropout(text: str) -> float:
    """A probability in [0, 1) (``--dropout``)."""
    return _checked(_checks.rate, text, float)


def batch_size(text: str) -> int | None:
    """A batch size >= 1, or ``None`` (full batch) from ``"full"``."""
    try:
        return recipes.parse_batch_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def hidden(text: str) -> tuple[int, ...]:
    """Hidden layer widths from ``"512,256"``: at least one, each >= 1."""
    try:
        widths = recipes.parse_hidden(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not widths:
        raise argparse.ArgumentTypeError(
            "give at least one hidden layer width, e.g. 512,256 (leave --hidden out for the "
            "preset's layers)")
    if any(w < 1 for w in widths):
        raise argparse.ArgumentTypeError(f"hidden layer widths must be >= 1, got {text!r}")
    return widths


def memory_bound() -> int:
    """Bytes of physical memory, or 2**40 where the system does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return 2**40


def check_memory(widths: Sequence[int], itemsize: int, bound: int | None = None) -> int:
    """Refuse a fully connected stack ``widths`` (inputs, hidden..., classes) whose weights,
    their gradients and the optimizer's state (about 4 copies) would not fit in memory.

    Returns the estimated bytes. Raises ValueError naming the size.
    """
    params = sum((a + 1) * b for a, b in zip(widths[:-1], widths[1:], strict=False))
    needed = 4 * params * itemsize
    bound = memory_bound() if bound is None else bound
    if needed > bound:
        raise ValueError(
            f"a network {'-'.join(map(str, widths))} has {params:,} parameters: about "
            f"{needed / 2**30:,.1f} GiB with gradients and optimizer state, more than this "
            f"machine's {bound / 2**30:,.1f} GiB of memory; choose smaller --hidden widths")
    return needed


# --- checks before any work -------------------------------------------------------------


def check_inputs(args: argparse.Namespace, inputs: dict[str, str | None]) -> None:
    """Before any data is loaded or any epoch runs: every input is a regular file, and
    ``--save`` and ``--out`` can be written without touching an input."""
    for label, path in inputs.items():
        if path:
            check_input_file(path, what=label)
    if save := getattr(args, "save", None):
        check_output_path(save, inputs, what="--save")
    if getattr(args, "out", None) is not None:
        check_output_dir(args.out, OUTPUT_FILES, {**inputs, "--save": save}, what="--out")


def saved_dataset(path: str, extra: dict[str, Any]) -> str | None:
    """The canonical name of the data set a model's metadata names, or ``None``."""
    name = extra.get("dataset")
    if name is None:
        return None
    try:
        return data.get_spec(str(name)).name
    except ValueError:
        raise ValueError(f"{path}: its metadata names the data set {name!r}, which portanet "
                         f"does not know; pass --dataset or --dataset-file") from None
