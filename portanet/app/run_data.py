"""The data a command works on: the host splits of a run (subset, ``--limit``, validation) and
the same splits on a model's device, in its per-sample shape."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from portanet import data
from portanet.app.arg_types import saved_dataset
from portanet.model import Sequential, class_names_for

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
        class_names: from the data set's spec, or the labels of a file (or its model's).
        note: what to tell the user about the labels (renumbered classes), or ``None``.
    """

    name: str
    dataset: str | None
    train: Split
    test: Split
    class_names: tuple[str, ...]
    validation: Split | None = None
    note: str | None = None


def load_data(dataset: str, *, dataset_file: str | None = None, data_dir: str | None = None,
              limit: int = 0, train_subset: int | None = None, validation: int = 0,
              classes: Sequence[str] | None = None) -> Splits:
    """The data ``dataset_file`` (the user's ``.npz``) or else ``dataset`` names, cut to
    ``train_subset`` and ``limit`` (0: all), with the last ``validation`` training images split
    off; ``data_dir`` is searched first for a known data set.

    A file's classes are the labels that occur in it (:func:`label_classes`), or, given the
    ``classes`` a saved model names, those: each label is then the class of that name.

    Raises:
        ValueError: a split is empty, or the labels do not fit (see :func:`label_classes`).
    """
    if dataset_file:
        (x, y), test = data.load_npz(dataset_file)
        for what, images in (("training", x), ("test", test[0])):
            if not len(images):
                raise ValueError(f"{dataset_file}: the {what} split holds no images; a run "
                                 f"needs at least one training and one test image")
        names, (y, test_y), note = label_classes(dataset_file, y, test[1], classes=classes)
        test = (test[0], test_y)
        loaded = Splits(dataset_file, None, (x, y), test, names, note=note)
    else:
        spec = data.get_spec(dataset)
        (x, y), test = data.load_dataset(spec.name, data_dir)
        names, (y, test_y) = spec_classes(spec, y, test[1], classes=classes)
        test = (test[0], test_y)
        loaded = Splits(spec.name, spec.name, (x, y), test, names)
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


def label_classes(where: str, *labels: np.ndarray, classes: Sequence[str] | None = None
                  ) -> tuple[tuple[str, ...], list[np.ndarray], str | None]:
    """The classes of a file's ``labels``: their names, the labels as class indices, and a
    note to print when labels and indices differ.

    Without ``classes`` the classes are the label values that occur, in order, at most
    :data:`portanet.data.MAX_CLASSES` of them and at least two; labels 0..K-1 keep their
    numbers, others (1..10, 990..999) become classes 0..K-1 named by their labels. With the
    ``classes`` a model was saved with, names that are whole numbers are label values (each
    label becomes the class of its name); other names leave the labels as class numbers.

    Raises:
        ValueError: more than MAX_CLASSES labels, a single one, or a label that is not one of
            ``classes``. Decided from the distinct values (``numpy.unique``), never from the
            largest label, so a label of 10**9 costs nothing.
    """
    if classes is not None and all(str(c).isdigit() for c in classes):
        return tuple(classes), [_by_name(f"the {what} labels of {where}", y, classes)
                                for what, y in zip(("training", "test"), labels, strict=False)
                                ], None
    if classes is not None:
        return tuple(classes), list(labels), None
    values = np.unique(np.concatenate([np.unique(y) for y in labels]))
    if values.size > data.MAX_CLASSES:
        raise ValueError(f"{where}: the labels take {values.size:,} different values; portanet "
                         f"builds classifiers of at most {data.MAX_CLASSES:,} classes: merge "
                         f"classes, or check that the labels are class numbers")
    if values.size < 2:
        raise ValueError(f"{where}: every label is {int(values[0])}; a classifier needs at "
                         f"least two classes")
    names = tuple(str(int(v)) for v in values)
    if int(values[-1]) == values.size - 1:
        return names, list(labels), None
    shown = ", ".join(names) if len(names) <= 6 else f"{names[0]}, {names[1]}, ..., {names[-1]}"
    note = (f"the labels are not 0..K-1: the {len(names)} that occur ({shown}) are classes "
            f"0..{len(names) - 1}, named by their labels")
    return names, [np.searchsorted(values, y).astype(np.int64) for y in labels], note


def spec_classes(spec: data.DatasetSpec, *labels: np.ndarray,
                 classes: Sequence[str] | None = None
                 ) -> tuple[tuple[str, ...], list[np.ndarray]]:
    """The class names and labels of a known data set's ``labels`` for a model saved with
    ``classes``: the data set's own without ``classes``, else each label becomes the model's
    class of the same name (MNIST's "3" is the model's class named "3", wherever it stands). A
    model whose classes are plain numbers 0..K-1 and share no name with the data set's (a
    model of a file of Fashion-MNIST labels) takes the labels as class numbers.

    Raises:
        ValueError: a class of the data set that occurs in ``labels`` is not one the model
            predicts (a model of labels 1..10 on MNIST's 0): the line says which, and how to
            evaluate the model on its own data.
    """
    if classes is None or tuple(map(str, classes)) == spec.classes:
        return spec.classes, list(labels)
    classes = tuple(map(str, classes))
    plain = classes == tuple(str(i) for i in range(len(classes)))
    if plain and not set(classes) & set(spec.classes):
        return spec.classes, list(labels)
    index = np.asarray([classes.index(c) if c in classes else -1 for c in spec.classes])
    mapped = [index[y] for y in labels]
    for y, to in zip(labels, mapped, strict=True):
        if (to < 0).any():
            missing = spec.classes[int(y[to < 0][0])]
            raise ValueError(
                f"{spec.title}'s class {missing!r} is not a class the model predicts "
                f"({_shown(classes)}): the model was trained on other labels; evaluate it on "
                f"its own data with --dataset-file FILE.npz, or on a data set of those classes")
    return classes, [y.astype(np.int64) for y in mapped]


def _shown(classes: Sequence[str]) -> str:
    """Class names for a message: all of them up to 12, else the first two and the last."""
    return ", ".join(classes) if len(classes) <= 12 else \
        f"{classes[0]}, {classes[1]}, ..., {classes[-1]}"


def _by_name(where: str, y: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """Labels as the indices of the classes named by their values; ``where`` names them."""
    values = np.asarray([int(c) for c in classes], dtype=np.int64)
    order = np.argsort(values)
    at = np.clip(np.searchsorted(values, y, sorter=order), 0, len(values) - 1)
    index = order[at]
    unknown = values[index] != y
    if unknown.any():
        raise ValueError(f"{where} include {int(y[unknown][0])}, which is not a class the model "
                         f"predicts ({_shown(classes)})")
    return index.astype(np.int64)


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


def saved_labels(model: Sequential, model_path: str, extra: dict[str, Any]) -> list[str]:
    """The name of each class a saved model predicts: the class names in its metadata, else
    those of the data set it names, numbered beyond the named ones (``portanet predict`` and
    ``portanet draw`` answer with these)."""
    named = extra.get("class_names")
    if not named:
        dataset = saved_dataset(model_path, extra)
        named = data.get_spec(dataset).classes if dataset else ()
    return class_names_for(model, list(named))
