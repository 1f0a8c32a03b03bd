"""The public loaders: MNIST and Fashion-MNIST (or your own ``.npz``) as host NumPy arrays, and
:func:`to_device` to copy them to a backend ready for training.

>>> (x_train, y_train), (x_test, y_test) = load_mnist()      # doctest: +SKIP
>>> x_train.shape, x_train.dtype                             # doctest: +SKIP
((60000, 28, 28), dtype('uint8'))
"""

from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from portanet.backend import Backend, get_backend, host_array
from portanet.data import bounds, sources
from portanet.data.idx import IDXFormatError
from portanet.data.sources import DatasetUnavailableError
from portanet.data.specs import (
    IMAGE_SHAPE,
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    get_spec,
)

VALIDATION_SIZE = 10_000  # the last rows of the training set become the validation split
NPZ_ARRAYS = ("x_train", "y_train", "x_test", "y_test")

Split = tuple[np.ndarray, np.ndarray]


def load_mnist(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    validation: bool = False,
    progress: bool | None = None,
) -> tuple[Split, ...]:
    """Load MNIST as host NumPy arrays, verified byte for byte (see :mod:`portanet.data`).

    Args:
        data_dir: a folder with the IDX files or an ``.npz`` to try first (default: the
            ``PORTANET_DATA`` environment variable, if set).
        validation: split the last 10,000 training images off as a validation set.
        progress: show download progress on stderr (default: only when stderr is a terminal).

    Returns:
        ``((x_train, y_train), (x_test, y_test))``, or with ``validation=True``
        ``((x_train, y_train), (x_val, y_val), (x_test, y_test))``. Images are uint8 arrays of
        shape ``(N, 28, 28)``, labels uint8 arrays of shape ``(N,)``; N is 60,000 for training
        (50,000 + 10,000 with ``validation``) and 10,000 for test.

    Raises:
        DatasetUnavailableError: no source could provide verified files (the message says how
            to fix it).
    """
    return load_dataset("mnist", data_dir, validation=validation, progress=progress)


def load_fashion_mnist(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    validation: bool = False,
    progress: bool | None = None,
) -> tuple[Split, ...]:
    """Load Fashion-MNIST as host NumPy arrays; same arguments and result as :func:`load_mnist`.

    The ten classes are T-shirt/top, Trouser, Pullover, Dress, Coat, Sandal, Shirt, Sneaker, Bag
    and Ankle boot (``get_spec("fashion").classes``).
    """
    return load_dataset("fashion-mnist", data_dir, validation=validation, progress=progress)


def load_dataset(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    validation: bool = False,
    progress: bool | None = None,
) -> tuple[Split, ...]:
    """Load the data set ``name`` (a name or alias in :data:`~portanet.data.specs.SPECS`);
    see :func:`load_mnist`."""
    found = sources.find(get_spec(name), data_dir, progress=progress)
    arrays = {file: array for file, (_, array) in found.items()}
    train = _pair(arrays, TRAIN_IMAGES, TRAIN_LABELS)
    test = _pair(arrays, TEST_IMAGES, TEST_LABELS)
    if not validation:
        return train, test
    n = len(train[0])
    if n <= VALIDATION_SIZE:
        raise ValueError(
            f"{n} training images are too few to split off {VALIDATION_SIZE} for validation"
        )
    cut = n - VALIDATION_SIZE
    return (train[0][:cut], train[1][:cut]), (train[0][cut:], train[1][cut:]), test


def load_npz(path: str | os.PathLike[str]) -> tuple[Split, Split]:
    """Your own data: an ``.npz`` holding ``x_train, y_train, x_test, y_test``.

    Images are uint8 28x28 (or rows of 784), labels integers 0..K-1; nothing is verified beyond
    that, since the data is yours. Shapes and dtypes are checked from the arrays' headers, and
    what they declare bounded by the file's size and this machine's memory
    (:mod:`portanet.data.bounds`), before any array is read.

    Raises:
        DatasetUnavailableError: there is no file at ``path``.
        ValueError: the file is not a readable ``.npz``, lacks one of the four arrays, or
            declares arrays it cannot hold.
    """
    path = Path(path)
    not_npz = (f"{path} is not an .npz file of arrays (one written by numpy.savez with "
               f"{', '.join(NPZ_ARRAYS)})")
    try:
        archive = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DatasetUnavailableError(f"no dataset file at {path}") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        raise ValueError(not_npz) from None
    if not isinstance(archive, np.lib.npyio.NpzFile):  # one array, from numpy.save
        raise ValueError(f"{path} is a single array (an .npy file), not an .npz archive; write "
                         f"the four arrays with numpy.savez(path, "
                         f"{', '.join(f'{k}={k}' for k in NPZ_ARRAYS)})")
    with archive:
        try:
            headers = bounds.npy_headers(str(path), archive.zip, path.stat().st_size)
        except (OSError, EOFError, zipfile.BadZipFile):
            raise ValueError(not_npz) from None
        _check_npz_headers(path, headers)
        try:
            arrays = {key: archive[key] for key in NPZ_ARRAYS}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile):
            raise ValueError(not_npz) from None
    for key in ("y_train", "y_test"):
        y = arrays[key]
        if y.size and int(y.min()) < 0:
            raise ValueError(f"{path}: {key} has the negative label {int(y.min())}; labels "
                             f"run from 0 to K-1")
    return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])


def _check_npz_headers(path: Path, headers: dict[str, tuple[Any, tuple[int, ...], np.dtype]]
                       ) -> None:
    """The four arrays of a ``--dataset-file`` are there, with the shapes and dtypes a run
    takes, from their headers (before any array is read)."""
    missing = [key for key in NPZ_ARRAYS if key not in headers]
    if missing:
        raise ValueError(f"{path} lacks the array {missing[0]!r}; it needs "
                         f"{', '.join(NPZ_ARRAYS)}")
    for key in ("x_train", "x_test"):
        _, shape, dtype = headers[key]
        if dtype != np.uint8 or shape[1:] not in ((784,), IMAGE_SHAPE):
            raise ValueError(f"{path}: {key} must be uint8 images of shape (N, 28, 28) or "
                             f"(N, 784), got {dtype} of shape {shape}")
    for key, x in (("y_train", "x_train"), ("y_test", "x_test")):
        _, shape, dtype = headers[key]
        n = headers[x][1][0]
        if dtype.kind not in "iu" or shape != (n,):
            raise ValueError(f"{path}: {key} must be integer labels, one per image of {x} "
                             f"({n}), got {dtype} of shape {shape}")


MAX_CLASSES = 1000
"""The most classes portanet builds a classifier for (labels beyond are refused, not a hang)."""


def to_device(
    images: np.ndarray, labels: np.ndarray, backend: Backend | str, *, flatten: bool = True,
    shape: tuple[int, ...] | None = None,
) -> tuple[Any, Any]:
    """Copy uint8 images and integer labels to a backend, ready for training.

    Pixels are scaled to [0, 1] (divided by 255) on the host in the backend's float dtype, then
    copied once; labels become int64.

    Args:
        images: uint8 array of shape ``(N, 28, 28)`` or ``(N, 784)``.
        labels: integer array of shape ``(N,)``.
        backend: a :class:`~portanet.backend.Backend` or a backend name.
        flatten: give images shape ``(N, 784)``; otherwise ``(N, 28, 28)``.
        shape: the per-sample shape to give the images instead, e.g. ``(1, 28, 28)`` for a
            CNN (``model.input_shape``); it must hold 784 pixels.

    Returns:
        ``(x, y)`` arrays of the backend.

    Raises:
        TypeError: images are not uint8, or labels are not integers.
        ValueError: wrong shapes, or the numbers of images and labels differ.
    """
    images = host_array(images, "images")
    labels = host_array(labels, "labels")
    pixels = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]
    if images.dtype != np.uint8:
        raise TypeError(
            f"images must be uint8 pixel values 0..255 (as the loaders return them), "
            f"got {images.dtype}; to_device does the scaling to [0, 1] itself"
        )
    if not (images.ndim == 3 and images.shape[1:] == IMAGE_SHAPE) and not (
        images.ndim == 2 and images.shape[1] == pixels
    ):
        raise ValueError(f"images must have shape (N, 28, 28) or (N, 784), got {images.shape}")
    if labels.dtype.kind not in "iu":
        raise TypeError(f"labels must be integers, got {labels.dtype}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"labels must have shape ({images.shape[0]},) to match {images.shape[0]} images, "
            f"got {labels.shape}"
        )
    if shape is not None and math.prod(shape) != pixels:
        raise ValueError(f"shape {tuple(shape)} does not hold the {pixels} pixels of an image")
    backend = get_backend(backend)
    host = np.divide(images, 255, dtype=np.dtype(backend.dtype_name))
    n = images.shape[0]
    if shape is None:
        shape = (pixels,) if flatten else IMAGE_SHAPE
    host = host.reshape((n, *shape))
    return backend.asarray(host), backend.asarray(labels.astype(np.int64, copy=False))


def _pair(arrays: dict[str, np.ndarray], images_name: str, labels_name: str) -> Split:
    images, labels = arrays[images_name], arrays[labels_name]
    if images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE or labels.ndim != 1:
        raise IDXFormatError(
            f"{images_name} / {labels_name}: shapes {images.shape} / {labels.shape}, "
            f"expected (N, 28, 28) / (N,)"
        )
    if len(images) != len(labels):
        raise IDXFormatError(
            f"{images_name} has {len(images)} images but {labels_name} {len(labels)} labels"
        )
    return images, labels
