"""Checks of command-line values, as argparse ``type=`` functions and a memory estimate.

Each type function raises :class:`argparse.ArgumentTypeError`, so argparse's message names the
option (``argument --lr: must be a finite number > 0, got inf``) and exits with status 2. The
rules and their wording are :mod:`portanet.number_checks`, shared with the library.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Any

from portanet import data, number_checks
from portanet.app import recipes
from portanet.backend import BACKEND_NAMES
from portanet.file_checks import check_input_file, check_output_dir, check_run_files

OUTPUT_FILES = ("report.json", "learning_curves.png", "confusion_matrix.png", "misclassified.png")
"""The files ``--out`` may receive."""

__all__ = ["OUTPUT_FILES", "batch_size", "check_files", "check_memory", "count", "dropout",
           "files_read", "files_written", "finite_non_negative", "finite_positive", "hidden",
           "interrupted_path", "memory_bound", "path", "saved_dataset"]


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
    return _checked(number_checks.non_negative_int, text, int)


def positive_count(text: str) -> int:
    """A whole number >= 1 (``--ensemble``)."""
    return _checked(number_checks.positive_int, text, int)


def finite_positive(text: str) -> float:
    """A finite number > 0 (``--lr``)."""
    return _checked(number_checks.finite_positive, text, float)


def finite_non_negative(text: str) -> float:
    """A finite number >= 0 (``--weight-decay``)."""
    return _checked(number_checks.finite_non_negative, text, float)


def dropout(text: str) -> float:
    """A probability in [0, 1) (``--dropout``)."""
    return _checked(number_checks.rate, text, float)


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


def path(text: str) -> str:
    """A file or folder name that is not empty (``--save ''`` would otherwise mean "no save")."""
    if not text.strip():
        raise argparse.ArgumentTypeError("the path is empty; give a file or folder name")
    return text


def _named_inputs(args: argparse.Namespace) -> list[tuple[str, str]]:
    """The input files given by name: the model (``evaluate``), ``--dataset-file``."""
    named = (("the model", getattr(args, "model_path", None)),
             ("the dataset file (--dataset-file)", getattr(args, "dataset_file", None)))
    return [(label, given) for label, given in named if given is not None]


def files_read(args: argparse.Namespace) -> list[tuple[str, str | os.PathLike[str]]]:
    """Every file the command may read, each with a label for messages: the model it
    evaluates, and the ``--dataset-file`` or else every local copy the data search may read
    for any known data set (``--data-dir`` or ``PORTANET_DATA``, the cache, system folders)."""
    reads: list[tuple[str, str | os.PathLike[str]]] = list(_named_inputs(args))
    if getattr(args, "dataset_file", None) is not None:
        return reads
    data_dir = getattr(args, "data_dir", None)
    for name in data.dataset_names():
        spec = data.get_spec(name)
        if spec.name == name:  # each data set once, not once per alias
            reads += data.sources.paths_read(spec, data_dir)
    return reads


def interrupted_path(save: str | os.PathLike[str]) -> str:
    """Where an interrupted run saves when ``save`` exists: ``keep.npz`` -> ``keep.interrupted.npz``
    beside it, so the good model stays."""
    head, name = os.path.split(os.fspath(save))
    stem, dot, suffix = name.rpartition(".")
    return os.path.join(head, f"{stem}.interrupted.{suffix}" if dot and stem else
                        f"{name}.interrupted")


def files_written(args: argparse.Namespace) -> list[tuple[str, str]]:
    """Every file the command will write: ``--save`` (and, where a file is there already, its
    copy for an interrupted run), then each file ``--out`` receives."""
    save = getattr(args, "save", None)
    writes = [("--save", save)] if save is not None else []
    if save is not None and not getattr(args, "overwrite_interrupted", True) \
            and os.path.exists(save):
        writes.append(("--save's copy for an interrupted run", interrupted_path(save)))
    if getattr(args, "out", None) is not None:
        writes += [(f"--out's {name}", os.path.join(args.out, name)) for name in OUTPUT_FILES]
    return writes


def check_files(args: argparse.Namespace) -> None:
    """The one rule for a run's files, before any data is loaded or any epoch runs: every
    input given by name (model, ``--dataset-file``) is a regular file; ``--out`` is a folder
    that can be written; every file written can be written and is neither a file the run may
    read (:func:`files_read`) nor another file it writes."""
    for label, given in _named_inputs(args):
        check_input_file(given, what=label)
    if getattr(args, "out", None) is not None:
        check_output_dir(args.out, what="--out")
    check_run_files(files_written(args), files_read(args))


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


def backend_option(p: argparse.ArgumentParser) -> None:
    """Declare ``--backend`` on a subcommand's parser."""
    p.add_argument("--backend", choices=list(BACKEND_NAMES), default=None,
                   help="array backend (default: $PORTANET_BACKEND, else auto: CuPy on a "
                        "usable GPU, else NumPy)")
