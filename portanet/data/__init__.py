"""MNIST and Fashion-MNIST as host NumPy arrays, verified byte for byte before use.

>>> from portanet import data
>>> (x_train, y_train), (x_test, y_test) = data.load_mnist()      # doctest: +SKIP
>>> X, y = data.to_device(x_train, y_train, "numpy")              # doctest: +SKIP

One concern per module:

- :mod:`~portanet.data.specs`: the table of data sets (files, checksums, names, class names);
- :mod:`~portanet.data.loaders`: the public loaders, your own ``.npz``, :func:`to_device`;
- :mod:`~portanet.data.sources`: where copies may be (folders, cache, mirrors, package index) and
  the search that finds verified ones;
- :mod:`~portanet.data.download`: verified HTTP downloads and the package-index route;
- :mod:`~portanet.data.idx`: the IDX file format.

``portanet.datasets``, its older name, still works until 0.3 (with a DeprecationWarning).
"""

from portanet.data.idx import IDXFormatError
from portanet.data.loaders import (
    MAX_CLASSES,
    load_dataset,
    load_fashion_mnist,
    load_mnist,
    load_npz,
    to_device,
)
from portanet.data.sources import DATA_ENV, DatasetUnavailableError, cache_dir
from portanet.data.specs import (
    FILES,
    SPECS,
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    DatasetSpec,
    dataset_names,
    get_spec,
)

__all__ = [
    "DATA_ENV",
    "FILES",
    "MAX_CLASSES",
    "SPECS",
    "TEST_IMAGES",
    "TEST_LABELS",
    "TRAIN_IMAGES",
    "TRAIN_LABELS",
    "DatasetSpec",
    "DatasetUnavailableError",
    "IDXFormatError",
    "cache_dir",
    "dataset_names",
    "get_spec",
    "load_dataset",
    "load_fashion_mnist",
    "load_mnist",
    "load_npz",
    "to_device",
]
