"""What each data set is: its files, their checksums, its names and its class names.

This is the one table of data sets. Where the files may be found (folders, mirrors, the package
index) is :mod:`portanet.data.sources`; how they are read is :mod:`portanet.data.idx`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)

IMAGE_SHAPE = (28, 28)
"""Height and width of one stored image (a CNN takes it as recipes.CNN_INPUT_SHAPE, (1, 28, 28))."""


@dataclass(frozen=True)
class DatasetSpec:
    """What a data set's files must hash to, what it is called, and what its classes are.

    Attributes:
        name: canonical name, also the folder name in the cache and data folders (``"mnist"``).
        title: name for messages, e.g. ``"MNIST"``.
        sha256: canonical IDX file name (no ``.gz``) to the sha256 of its uncompressed bytes.
        classes: the name of each class, in label order.
        aliases: other names accepted for it (``"fashion"`` for ``"fashion-mnist"``).
        npz_names: ``.npz`` file names looked for in a data folder.
        install_hint: how to install the data from the operating system, if it ships it.
    """

    name: str
    title: str
    sha256: Mapping[str, str]
    classes: tuple[str, ...] = tuple(str(digit) for digit in range(10))
    aliases: tuple[str, ...] = ()
    npz_names: tuple[str, ...] = ()
    install_hint: str = ""


# Checksums from the project's verified table (shared/datasets.md).
SPECS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist",
        title="MNIST",
        sha256={
            TRAIN_IMAGES: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            TRAIN_LABELS: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            TEST_IMAGES: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            TEST_LABELS: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
        npz_names=("mnist.npz", "mndata.npz"),
    ),
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist",
        title="Fashion-MNIST",
        sha256={
            TRAIN_IMAGES: "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            TRAIN_LABELS: "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            TEST_IMAGES: "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            TEST_LABELS: "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                 "Sneaker", "Bag", "Ankle boot"),
        aliases=("fashion", "fashion_mnist"),
        npz_names=("fashion-mnist.npz",),
        install_hint="on Debian or Ubuntu, apt-get install dataset-fashion-mnist",
    ),
}


def dataset_names() -> list[str]:
    """Every name :func:`get_spec` accepts: canonical names and aliases."""
    return [name for spec in SPECS.values() for name in (spec.name, *spec.aliases)]


def get_spec(name: str) -> DatasetSpec:
    """The spec of a data set by its name or one of its aliases.

    Raises:
        ValueError: no data set has that name (the message lists the names).
    """
    for spec in SPECS.values():
        if name == spec.name or name in spec.aliases:
            return spec
    raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(dataset_names())}")
