"""Save on one backend, load on another; bad files give clear errors; writes are atomic."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import portanet as pn
from portanet import _files, io
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
    with pytest.raises(FileNotFoundError, match="no model file"):
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
