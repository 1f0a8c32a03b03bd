"""Issue 32, part B: evaluate maps a built-in data set's labels by the model's class names (or
refuses), MPI ranks agree on the optimizer, and a file route bounds what it allocates before it
allocates (model files declaring huge layers, encrypted or deflate64 members, data files whose
headers declare 10**12 images)."""

from __future__ import annotations

import gzip
import io
import json
import re
import struct
import tracemalloc
import zipfile
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import portanet as pn
from portanet.app import cli, run_data
from portanet.data import bounds, idx, verify
from portanet.optim import SGD, Adam, OneCycle, linear_decay
from portanet.parallel import mpi as distributed
from tests.helpers import assert_load_refused_within, separable_data

# --- evaluate on a built-in data set: labels by the model's class names ------------------------


@pytest.fixture
def fake_mnist(monkeypatch: pytest.MonkeyPatch) -> tuple[np.ndarray, np.ndarray]:
    """``load_dataset`` answers a small MNIST-shaped set with labels 0..9, two of each."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (20, 28, 28)).astype(np.uint8)
    y = np.repeat(np.arange(10, dtype=np.uint8), 2)
    monkeypatch.setattr(run_data.data, "load_dataset", lambda name, data_dir=None: ((x, y), (x, y)))
    return x, y


def saved_model(path: Path, names: list[str], dataset: str = "mnist") -> Path:
    pn.save(pn.Sequential([pn.Dense(784, len(names))], backend="numpy"), str(path),
            class_names=names, dataset=dataset)
    return path


def test_a_model_of_labels_1_to_10_is_refused_on_mnist(
        fake_mnist: tuple, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = saved_model(tmp_path / "m.npz", [str(i) for i in range(1, 11)])
    assert cli.main(["evaluate", str(model), "--backend", "numpy"]) == 2
    captured = capsys.readouterr()
    line = captured.err.strip()
    assert "\n" not in line and "Traceback" not in line, line
    assert "MNIST's class '0' is not a class the model predicts (1, 2, 3, 4, 5, 6, 7, 8, 9, 10)" \
        in line and "--dataset-file" in line
    assert "test accuracy" not in captured.out


def test_a_built_in_data_set_is_mapped_by_the_models_names(fake_mnist: tuple) -> None:
    _, y = fake_mnist
    # the labels 1..10 model on MNIST's 1..9 only: each digit is the class of its name
    names = tuple(str(i) for i in range(1, 11))
    classes, (mapped,) = run_data.spec_classes(pn.data.get_spec("mnist"), y[y > 0],
                                               classes=names)
    assert classes == names and mapped.tolist() == (y[y > 0] - 1).tolist()
    # names in another order, through load_data
    backwards = [str(i) for i in range(9, -1, -1)]
    loaded = run_data.load_data("mnist", classes=backwards)
    assert loaded.class_names == tuple(backwards)
    assert loaded.test[1].tolist() == (9 - y).tolist()
    # the data set's own names (or none) keep the labels
    for same in (None, list(pn.data.get_spec("mnist").classes)):
        assert run_data.load_data("mnist", classes=same).test[1].tolist() == y.tolist()


def test_plain_numbers_on_a_named_data_set_keep_the_labels(fake_mnist: tuple) -> None:
    _, y = fake_mnist
    loaded = run_data.load_data("fashion-mnist", classes=[str(i) for i in range(10)])
    assert loaded.test[1].tolist() == y.tolist()
    assert loaded.class_names == pn.data.get_spec("fashion-mnist").classes
    with pytest.raises(ValueError, match="Fashion-MNIST's class 'T-shirt/top' is not a class"):
        run_data.load_data("fashion-mnist", classes=["cat", "dog"])


# --- MPI ranks agree on the training settings ---------------------------------------------------


def _two_ranks(**rank1: Any) -> distributed.Communicator:
    """A 2-rank world in one process whose rank 1 trains with the settings ``rank1`` (fit's
    keyword names: optimizer, l2, lr_schedule) and is otherwise this rank."""

    class TwoRanks(distributed.Local):
        size = 2

        def allgather(self, value: Any) -> list[Any]:
            return [value, {**value, "training": distributed.describe_training(**rank1)}]

    return TwoRanks()


def _halving(lr: float, epoch: int, epochs: int) -> float:
    return lr / 2**epoch


def _fit(comm: Any, **settings: Any) -> None:
    X, y = separable_data(n=32, features=6, classes=3)
    model = pn.Sequential([pn.Dense(6, 3)], backend="numpy", seed=0)
    pn.fit(model, X, y, epochs=1, batch_size=8, comm=comm, **settings)


@pytest.mark.parametrize(("mine", "theirs", "named"), [
    ({"optimizer": SGD(0.5)}, {"optimizer": SGD(0.001)}, "optimizer.lr 0.001  versus rank 0's  "
                                                         "optimizer.lr 0.5"),
    ({"optimizer": SGD(0.1)}, {"optimizer": Adam(0.1)}, "optimizer portanet.optim.Adam  versus"),
    ({"optimizer": SGD(0.1, momentum=0.9)}, {"optimizer": SGD(0.1, momentum=0.8)},
     "optimizer.momentum 0.8"),
    ({"optimizer": Adam(betas=(0.9, 0.99))}, {"optimizer": Adam()}, "optimizer.beta2 0.999"),
    ({"optimizer": Adam()}, {"optimizer": Adam(eps=1e-6)}, "optimizer.eps 1e-06"),
    ({"optimizer": SGD(0.1)}, {"optimizer": SGD(0.1, weight_decay=1e-4)},
     "optimizer.weight_decay 0.0001"),
    ({"optimizer": SGD(0.1), "l2": 1e-3}, {"optimizer": SGD(0.1)}, "l2 0.0  versus rank 0's  l2 "
                                                                    "0.001"),
    ({"optimizer": SGD(0.1), "lr_schedule": linear_decay(0.1)},
     {"optimizer": SGD(0.1), "lr_schedule": linear_decay(0.2)}, "linear_decay.<locals>."
                                                                 "schedule(final_lr=0.0, lr=0.2)"),
    ({"optimizer": OneCycle(Adam(), 0.01, 40)}, {"optimizer": OneCycle(Adam(), 0.01, 4)},
     "optimizer.total_steps 4  versus rank 0's  optimizer.total_steps 40"),
    ({"optimizer": OneCycle(Adam(), 0.01, 4)}, {"optimizer": OneCycle(SGD(), 0.01, 4)},
     "optimizer.optimizer portanet.optim.SGD"),
])
def test_ranks_with_other_training_settings_are_stopped_before_work(
        mine: dict[str, Any], theirs: dict[str, Any], named: str) -> None:
    with pytest.raises(distributed.RankMismatchError,
                       match="the training settings on rank 1 differ from rank 0's") as raised:
        _fit(_two_ranks(**theirs), **mine)
    assert named in str(raised.value) and "the same optimizer" in str(raised.value)


def test_ranks_with_the_same_settings_agree() -> None:
    def settings(lr: float) -> dict[str, Any]:
        return {"optimizer": OneCycle(Adam(), 0.01, 4), "l2": 1e-4,
                "lr_schedule": partial(_halving, lr)}

    assert distributed.describe_training(**settings(0.1)) == \
        distributed.describe_training(**settings(0.1))
    assert distributed.describe_training(**settings(0.1)) != \
        distributed.describe_training(**settings(0.2))
    comm = _two_ranks(optimizer=SGD(0.01))
    model = pn.Sequential([pn.Dense(6, 3)], backend="numpy", seed=0)
    X, y = separable_data(n=32, features=6, classes=3)
    assert comm.begin(model, y, 8, 1, (), optimizer=SGD(0.01)) == []  # rank 0: callbacks
    with pytest.raises(distributed.RankMismatchError,
                       match="optimizer portanet.optim.SGD  versus rank 0's  optimizer none"):
        comm.begin(model, y, 8, 1)  # an old caller, without the settings, is compared too


def test_fit_refuses_a_raw_mpi4py_communicator_before_work() -> None:
    Intracomm = type("Intracomm", (), {"__module__": "mpi4py.MPI"})  # noqa: N806
    with pytest.raises(TypeError, match=r"comm is mpi4py's Intracomm; .*"
                                        r"comm=portanet\.parallel\.mpi\.world\(\)"):
        _fit(Intracomm())
    with pytest.raises(TypeError, match="comm must be a portanet.parallel.mpi.Communicator"):
        _fit(object())


# --- files bound what they allocate before allocating ------------------------------------------

MB = 1 << 20


def _npy(shape: tuple[int, ...], dtype: str, data: bytes = b"") -> bytes:
    """An ``.npy`` member: a header declaring ``shape`` and ``dtype``, then ``data``."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": shape})
    return buffer.getvalue() + data


def _model_file(path: Path, out: int, data: bytes = b"\0" * 64) -> Path:
    """A model file whose metadata and headers consistently declare Dense(784, out), with
    ``data`` bytes of weights."""
    metadata = {"format": "portanet-model", "format_version": 2, "dtype": "float32",
                "input_shape": [784], "extra": {},
                "layers": [{"type": "Dense", "in_features": 784, "out_features": out}]}
    raw = np.frombuffer(json.dumps(metadata).encode(), np.uint8)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("__portanet__.npy", _npy(raw.shape, "u1", raw.tobytes()))
        archive.writestr("0.W.npy", _npy((784, out), "<f4", data))
        archive.writestr("0.b.npy", _npy((out,), "<f4", data))
    return path


def _patched(source: Path, target: Path, **fields: int) -> Path:
    """``source`` with every zip entry's header fields changed: ``flags`` (or-ed in),
    ``method``, ``size`` (the central directory's uncompressed size)."""
    data = bytearray(source.read_bytes())
    for signature, at in ((b"PK\x01\x02", {"flags": 8, "method": 10, "size": 24}),
                          (b"PK\x03\x04", {"flags": 6, "method": 8})):
        i = data.find(signature)
        while i >= 0:
            for field, offset in at.items():
                if field == "flags" and "flags" in fields:
                    old = struct.unpack_from("<H", data, i + offset)[0]
                    struct.pack_into("<H", data, i + offset, old | fields["flags"])
                elif field in fields:
                    struct.pack_into("<H" if field != "size" else "<I", data, i + offset,
                                     fields[field])
            i = data.find(signature, i + 4)
    target.write_bytes(bytes(data))
    return target


def test_a_model_declaring_a_petabyte_layer_is_refused_from_its_headers(tmp_path: Path) -> None:
    huge = _model_file(tmp_path / "huge.npz", 10**12)
    assert_load_refused_within(huge, r"0\.W\.npy declares shape \(784, 1000000000000\) float32 "
                                     r"\(2\.79 PiB\) but holds 64 bytes", MB)
    # a size field that claims the data is there: more than the stored bytes can be
    claims = _patched(_model_file(tmp_path / "m.npz", 10**6), tmp_path / "claims.npz",
                      size=0xFFFFFFF0)
    assert_load_refused_within(claims, r"\.npy claims 4 GiB from [\d,]+ bytes stored, more "
                                       r"than its compression can hold", MB)


def test_a_model_larger_than_the_memory_is_refused_before_reading(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.npz"
    pn.save(pn.Sequential([pn.Dense(784, 100)], backend="numpy"), str(path))
    monkeypatch.setattr(bounds, "physical_memory", lambda: 100_000)
    assert_load_refused_within(path, r"its weights would take 314,000 bytes, more than this "
                                     r"machine's 100,000 bytes of memory", MB)


@pytest.mark.parametrize(("fields", "message"), [
    ({"flags": 1}, r"0\.W\.npy is encrypted \(a password-protected archive\).* not a portanet "
                   r"model file"),
    ({"method": 9}, r"0\.W\.npy is compressed with deflate64 \(zip method 9\), which cannot be "
                    r"read here"),
    ({"method": 93}, r"compressed with zstandard"),
])
def test_encrypted_or_deflate64_members_are_one_line(
        fields: dict[str, int], message: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.npz"
    pn.save(pn.Sequential([pn.Dense(784, 10)], backend="numpy"), str(good))
    path = _patched(good, tmp_path / "odd.npz", **fields)
    assert_load_refused_within(path, message, MB)
    assert cli.main(["evaluate", str(path), "--backend", "numpy"]) == 2
    line = capsys.readouterr().err.strip()
    assert "\n" not in line and "Traceback" not in line and re.search(message, line), line


def _dataset(path: Path, x_train: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x_train.npy", x_train)
        archive.writestr("y_train.npy", _npy((2,), "u1", b"\0\1"))
        archive.writestr("x_test.npy", _npy((2, 28, 28), "u1", bytes(2 * 784)))
        archive.writestr("y_test.npy", _npy((2,), "u1", b"\0\1"))
    return path


def test_a_data_file_declaring_a_trillion_images_is_refused_from_its_headers(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _dataset(tmp_path / "d.npz", _npy((10**12, 28, 28), "u1", bytes(784)))
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"x_train\.npy declares shape \(1000000000000, 28, "
                                             r"28\) uint8 \(713 TiB\) but holds 784 bytes"):
            pn.data.load_npz(path)
        assert tracemalloc.get_traced_memory()[1] < MB
    finally:
        tracemalloc.stop()
    model = saved_model(tmp_path / "m.npz", [str(i) for i in range(10)])
    assert cli.main(["evaluate", str(model), "--dataset-file", str(path)]) == 2
    line = capsys.readouterr().err.strip()
    assert "\n" not in line and "713 TiB" in line, line
    # a data folder's mnist.npz: a copy that fails, with the reason, never an allocation
    spec = pn.data.get_spec("mnist")
    copies, _ = verify._scan_npz(spec, path, [pn.data.TRAIN_IMAGES])
    assert "declares shape (1000000000000, 28, 28)" in copies[0].problem
    assert copies[0].array is None


def test_a_gzipped_idx_file_is_bounded_by_its_compressed_size(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    header = struct.pack(">HBB3I", 0, 8, 3, 4_000_000_000, 28, 28)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(header + bytes(8 * MB)))  # 8 MiB of zeros in 8 KiB
    tracemalloc.start()
    try:
        with pytest.raises(pn.data.IDXFormatError,
                           match=r"declares shape \(4000000000, 28, 28\) \(3,136,000,000,016 "
                                 r"bytes\), more than [\d,]+ bytes of gzip data can hold"):
            idx.read_idx(path)
        assert tracemalloc.get_traced_memory()[1] < 2 * MB  # the 8 MiB never decompressed
    finally:
        tracemalloc.stop()
    small = tmp_path / "small.gz"
    idx.write_idx(small, np.arange(60, dtype=np.uint8).reshape(3, 4, 5), compress=True)
    assert idx.read_idx(small).shape == (3, 4, 5)
    monkeypatch.setattr(bounds, "physical_memory", lambda: 50)
    with pytest.raises(pn.data.IDXFormatError, match="its data would take 76 bytes, more than"):
        idx.read_idx(small)
