"""The data a command works on: the host splits of a run (subset, ``--limit``, validation) and
the same splits on a model's device, in its per-sample shape."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

import numpy as np

from portanet import data
from portanet.model import Sequential
from portanet.report import HeldOut

Split = tuple[np.ndarray, np.ndarray]


@dataclass
class Data:
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


def load_data(args: argparse.Namespace, dataset: str, *, train_subset: int | None = None,
              validation: int = 0) -> Data:
    """The data ``--dataset-file`` or ``dataset`` names, cut to ``train_subset`` and ``--limit``,
    with the last ``validation`` training images split off."""
    if args.dataset_file:
        (x, y), test = data.load_npz(args.dataset_file)
        loaded = Data(args.dataset_file, None, (x, y), test, data.class_names(None, y, test[1]))
    else:
        spec = data.get_spec(dataset)
        (x, y), test = data.load_dataset(spec.name, args.data_dir)
        loaded = Data(spec.name, spec.name, (x, y), test, spec.classes)
    for n in (train_subset, args.limit):
        x, y = (x[:n], y[:n]) if n else (x, y)
    if args.limit:
        loaded.test = (test[0][:args.limit], test[1][:args.limit])
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


def held_out(loaded: Data, model: Sequential) -> HeldOut:
    """The test split on the model's device, with its host images and class names for the
    report."""
    return HeldOut(*on_device(loaded.test, model), loaded.test[0], loaded.class_names)
