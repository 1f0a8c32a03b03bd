"""The data a command works on: the host splits of a run (subset, ``--limit``, validation) and
the same splits on a model's device, in its per-sample shape."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from portanet import data
from portanet.model import Sequential

Split = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class HeldOut:
    """The test split as the report needs it: on the device for the model, on the host for
    pictures.

    Attributes:
        X: inputs, an array of the model's backend.
        y: integer labels, an array of the model's backend.
        images: the same images as host uint8 ``(N, 28, 28)`` (or ``(N, 784)``), for pictures.
        class_names: the name of each class, in label order.
    """

    X: Any
    y: Any
    images: np.ndarray
    class_names: Sequence[str]


@dataclass
class Splits:
    """The host splits a command works on.

    Attributes:
        name: what to call the data in messages and folder names: the data set or the file.
        dataset: canonical name of a known data set, ``None`` for the user's own ``.npz``.
        class_names: from the data set's spec, or ``"0" .. "K-1"`` from the labels of a file.
    """

    name: str
    dataset: str | None
    train: Split
    test: Split
    class_names: tuple[str, ...]
    validation: Split | None = None


def load_data(dataset: str, *, dataset_file: str | None = None, data_dir: str | None = None,
              limit: int = 0, train_subset: int | None = None, validation: int = 0) -> Splits:
    """The data ``dataset_file`` (the user's ``.npz``) or else ``dataset`` names, cut to
    ``train_subset`` and ``limit`` (0: all), with the last ``validation`` training images split
    off; ``data_dir`` is searched first for a known data set."""
    if dataset_file:
        (x, y), test = data.load_npz(dataset_file)
        loaded = Splits(dataset_file, None, (x, y), test, data.class_names(None, y, test[1]))
    else:
        spec = data.get_spec(dataset)
        (x, y), test = data.load_dataset(spec.name, data_dir)
        loaded = Splits(spec.name, spec.name, (x, y), test, spec.classes)
    for n in (train_subset, limit):
        x, y = (x[:n], y[:n]) if n else (x, y)
    if limit:
        loaded.test = (test[0][:limit], test[1][:limit])
    if validation:
        if validation >= len(x):
            raise ValueError(f"--validation {validation} leaves no training images "
                             f"(there are {len(x)})")
        loaded.validation = (x[-validation:], y[-validation:])
        x, y = x[:-validation], y[:-validation]
    loaded.train = (x, y)
    return loaded


def on_device(split: Split, model: Sequential) -> tuple[Any, Any]:
    """Host images and labels on the model's device, the images in the model's per-sample
    shape: (N, 784) for an MLP, (N, 1, 28, 28) for a CNN."""
    return data.to_device(*split, model.backend, shape=model.input_shape)


def held_out(loaded: Splits, model: Sequential) -> HeldOut:
    """The test split on the model's device, with its host images and class names for the
    report."""
    return HeldOut(*on_device(loaded.test, model), loaded.test[0], loaded.class_names)


def check_labels(loaded: Splits, model: Sequential) -> None:
    """Every label is a class the model predicts, checked before any work on the data."""
    k = model.num_outputs
    for what, (_, y) in (("training", loaded.train), ("test", loaded.test)):
        if k is not None and y.size and not 0 <= int(y.min()) <= int(y.max()) < k:
            raise ValueError(f"the {what} labels of {loaded.name} run from {int(y.min())} to "
                             f"{int(y.max())}, but the model predicts classes 0 to {k - 1}")
