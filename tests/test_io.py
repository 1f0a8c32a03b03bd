"""Save on one backend, load on another; bad files give clear errors; writes are atomic."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import portanet as pn
from portanet import files as _files
from portanet.saving import npz as io
from tests.helpers import separable_data


def trained_model(backend: pn.Backend | str) -> pn.Sequential:
    X, y = separable_data()
    model = pn.Sequential([pn.Dense(20, 16), pn.Tanh(), pn.Dropout(0.1), pn.Dense(16, 4)],
                          backend=backend, seed=0)
    pn.fit(model, X, y, optimizer=pn.optim.Adam(0.01), epochs=3)
    return model


def test_save_on_one_backend_load_on_another(backend: pn.Backend, tmp_path: Path) -> None:
    X, _ = separable_data()
    model = trained_model(backend)
    path = pn.save(model, tmp_path / "model.npz", note="test run")
    for target in ("numpy", backend):
        loaded = pn.load(path, backend=target)
        assert [type(layer) for layer in loaded.layers] == [type(layer) for layer in model.layers]
        np.testing.assert_array_equal(pn.predict(loaded, X), pn.predict(model, X))
        np.testing.assert_allclose(pn.predict_proba(loaded, X), pn.predict_proba(model, X),
                                   rtol=1e-5, atol=1e-6)
    assert io.load_metadata(path)["extra"] == {"note": "test run"}


def test_load_in_float64(backend: pn.Backend, tmp_path: Path) -> None:
    path = pn.save(trained_model(backend), tmp_path / "m.npz")
    loaded = pn.load(path, backend="numpy", dtype="float64")
    assert all(p.dtype == np.float64 for _, p, _ in loaded.named_parameters())


def test_file_is_plain_npz_without_pickles(backend: pn.Backend, tmp_path: Path) -> None:
    model = trained_model(backend)
    path = pn.save(model, tmp_path / "m.npz")
    with np.load(path, allow_pickle=False) as data:
        assert set(data.files) == {"0.W", "0.b", "3.W", "3.b", io.METADATA_KEY}
        metadata = json.loads(data[io.METADATA_KEY].tobytes())
    assert metadata["layers"][0] == {"type": "Dense", "in_features": 20, "out_features": 16}
    with np.load(path, allow_pickle=False) as data:  # every parameter, value for value
        for name, value in model.state_dict().items():
            np.testing.assert_array_equal(data[name], value, err_msg=name)


def test_mismatched_state_is_named(backend: pn.Backend, tmp_path: Path) -> None:
    model = pn.Sequential([pn.Dense(20, 8), pn.ReLU(), pn.Dense(8, 4)], backend=backend)
    state = model.state_dict()
    before = model.state_dict()
    bad = dict(state, **{"2.W": np.zeros((8, 5))})
    bad.pop("2.b")
    with pytest.raises(ValueError, match=r"missing 2\.b.*2\.W: expected \(8, 4\), got \(8, 5\)"):
        model.load_state_dict(bad)
    for name, value in model.state_dict().items():  # nothing changed half-way
        np.testing.assert_array_equal(value, before[name])


def test_corrupt_and_foreign_files(backend: pn.Backend, tmp_path: Path) -> None:
    good = pn.save(trained_model(backend), tmp_path / "m.npz")
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ValueError, match="not a readable portanet model"):
        pn.load(truncated)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, W=np.zeros(3))
    with pytest.raises(ValueError, match="not a portanet model"):
        pn.load(foreign)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        pn.load(tmp_path / "missing.npz")


def test_newer_format_is_refused(backend: pn.Backend, tmp_path: Path) -> None:
    model = pn.Sequential([pn.Dense(2, 2)], backend=backend)
    arrays = model.state_dict()
    meta = {"format": io.FORMAT, "format_version": io.FORMAT_VERSION + 1, "dtype": "float32",
            "layers": [{"type": "Dense", "in_features": 2, "out_features": 2}]}
    arrays[io.METADATA_KEY] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(tmp_path / "new.npz", **arrays)
    with pytest.raises(ValueError, match="upgrade portanet"):
        pn.load(tmp_path / "new.npz")


def test_failed_save_leaves_the_old_file_intact(backend: pn.Backend, tmp_path: Path) -> None:
    path = pn.save(trained_model(backend), tmp_path / "m.npz")
    original = path.read_bytes()

    def fail(_file: object) -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        _files.atomic_write(path, fail)
    assert path.read_bytes() == original
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]  # no temporary left behind


def test_format_1_file_still_loads() -> None:
    """tests/data/model_format1.npz was saved by portanet 0.1.0 (main at 97e4ea7, before the
    layer contract): Flatten, Dense(12, 5), ReLU, Dropout(0.25), Dense(5, 3), seed 3."""
    path = Path(__file__).parent / "data" / "model_format1.npz"
    assert io.load_metadata(path)["format_version"] == 1
    model = pn.load(path, backend="numpy")
    assert [type(layer).__name__ for layer in model.layers] == [
        "Flatten", "Dense", "ReLU", "Dropout", "Dense"]
    assert model.num_outputs == 3 and model.input_shape is None
    x = np.random.default_rng(0).normal(size=(4, 3, 4)).astype(np.float32)
    expected = [[0.3626078, 0.3874545, 0.2499377], [0.9364709, 0.01623798, 0.04729098],
                [0.415775, 0.26243204, 0.3217929], [0.24793263, 0.5281256, 0.22394176]]
    np.testing.assert_allclose(pn.predict_proba(model, x), expected, rtol=1e-5)


def test_unknown_layer_type_is_a_clear_error(tmp_path: Path) -> None:
    path = pn.save(pn.Sequential([pn.Dense(3, 2)], backend="numpy", seed=0), tmp_path / "m.npz")
    with np.load(path) as data:
        arrays = dict(data)
    meta = json.loads(arrays["__portanet__"].tobytes())
    meta["layers"][0]["type"] = "Conv3D"
    arrays["__portanet__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=r"unknown type 'Conv3D'.*Dense"):
        pn.load(tmp_path / "bad.npz")


def test_input_shape_is_saved(tmp_path: Path) -> None:
    model = pn.Sequential([pn.Conv2D(1, 2, 3), pn.Flatten(), pn.Dense(8, 2)], backend="numpy",
                          seed=0, input_shape=(1, 4, 4))
    path = pn.save(model, tmp_path / "cnn.npz")
    assert io.load_metadata(path)["input_shape"] == [1, 4, 4]
    loaded = pn.load(path, backend="numpy")
    assert loaded.input_shape == (1, 4, 4) and loaded.num_outputs == 2
