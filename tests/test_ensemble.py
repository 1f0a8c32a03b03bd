"""Ensembles: one model whose probabilities are the mean of its members', on every backend;
saved, loaded and exported like any model; refused by fit before any work."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import portanet as pn
from portanet.layers import Ensemble
from tests.helpers import assert_close


def members(backend: pn.Backend | str = "numpy", count: int = 3, dtype: str = "float32"
            ) -> list[pn.Sequential]:
    """Small CNNs with BatchNorm and Dropout, each its own seed (so their weights differ)."""
    return [pn.Sequential([pn.Conv2D(1, 4, 3), pn.BatchNorm(4), pn.MaxPool2D(2), pn.ReLU(),
                           pn.Flatten(), pn.Dense(36, 16), pn.Dropout(0.5), pn.ReLU(),
                           pn.Dense(16, 5)], backend=backend, seed=seed, dtype=dtype,
                          input_shape=(1, 8, 8)) for seed in range(count)]


def with_statistics(models: list[pn.Sequential]) -> list[pn.Sequential]:
    """The members with BatchNorm statistics of their own (not the initial 0 and 1)."""
    rng = np.random.default_rng(7)
    for model in models:
        state = model.state_dict()
        state["1.running_mean"] = rng.normal(0, 0.3, 4).astype(np.float32)
        state["1.running_var"] = rng.uniform(0.5, 2.0, 4).astype(np.float32)
        model.load_state_dict(state)
    return models


IMAGES = np.random.default_rng(0).random((6, 1, 8, 8)).astype(np.float32)


def test_probabilities_are_the_members_mean(backend: pn.Backend) -> None:
    models = with_statistics(members(backend))
    combined = pn.ensemble(models)
    expected = np.mean([np.asarray(backend.to_numpy(pn.predict_proba(m, backend.asarray(IMAGES))))
                        for m in models], axis=0)
    got = pn.predict_proba(combined, backend.asarray(IMAGES))
    assert_close(backend, got, expected, rtol=1e-5, atol=1e-6)
    assert isinstance(combined.layers[0], Ensemble) and combined.input_shape == (1, 8, 8)
    labels = backend.to_numpy(pn.predict(combined, backend.asarray(IMAGES)))
    np.testing.assert_array_equal(labels, expected.argmax(axis=1))


def test_scores_stay_finite_for_confident_members() -> None:
    models = members()
    for model in models:
        state = model.state_dict()
        state["8.W"] = state["8.W"] * 1e4  # softmax underflows to exact zeros
        model.load_state_dict(state)
    scores = pn.ensemble(models).forward(IMAGES)
    assert np.isfinite(scores).all()
    probabilities = np.mean([pn.predict_proba(m, IMAGES) for m in models], axis=0)
    np.testing.assert_allclose(pn.predict_proba(pn.ensemble(models), IMAGES), probabilities,
                               atol=1e-6)


def test_it_saves_and_loads_onto_any_backend(tmp_path: Path, backend: pn.Backend) -> None:
    models = with_statistics(members())
    expected = np.mean([pn.predict_proba(m, IMAGES) for m in models], axis=0)
    path = pn.save(pn.ensemble(models), tmp_path / "three.npz", note="kept")
    loaded = pn.load(path, backend=backend)
    assert_close(backend, pn.predict_proba(loaded, backend.asarray(IMAGES)), expected,
                 rtol=1e-5, atol=1e-6)
    assert pn.saving.npz.load_metadata(path)["extra"] == {"note": "kept"}


def test_a_damaged_member_is_refused_on_load(tmp_path: Path) -> None:
    path = pn.save(pn.ensemble(members(count=2)), tmp_path / "two.npz")
    arrays = dict(np.load(path))
    metadata = json.loads(arrays["__portanet__"].tobytes().decode("utf-8"))
    metadata["layers"][0]["members"][1][0]["type"] = "Conv9D"
    arrays["__portanet__"] = np.frombuffer(json.dumps(metadata).encode("utf-8"), np.uint8)
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match="member 1 layer 0 has the type 'Conv9D'"):
        pn.load(tmp_path / "bad.npz")


def test_a_members_negative_variance_is_refused(tmp_path: Path) -> None:
    models = members(count=2)
    path = pn.save(pn.ensemble(models), tmp_path / "two.npz")
    arrays = dict(np.load(path))
    arrays["0.1.1.running_var"] = -np.ones(4, np.float32)
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match="member 1"):
        pn.load(tmp_path / "bad.npz")


def test_fit_refuses_an_ensemble_before_any_work() -> None:
    combined = pn.ensemble(members(count=2))
    before = combined.state_dict()
    with pytest.raises(ValueError, match="combine them with portanet.ensemble"):
        pn.fit(combined, IMAGES, np.arange(6) % 5, epochs=1)
    after = combined.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_members_must_agree() -> None:
    with pytest.raises(ValueError, match="two or more"):
        pn.ensemble(members(count=1))
    other_classes = pn.Sequential([pn.Flatten(), pn.Dense(64, 4)], backend="numpy",
                                  input_shape=(1, 8, 8))
    with pytest.raises(ValueError, match="number of classes"):
        pn.ensemble([members()[0], other_classes])
    other_input = pn.Sequential([pn.Flatten(), pn.Dense(100, 5)], backend="numpy",
                                input_shape=(1, 10, 10))
    with pytest.raises(ValueError, match="input shape"):
        pn.ensemble([members()[0], other_input])
    with pytest.raises(ValueError, match="dtype"):
        pn.ensemble([members()[0], members(dtype="float64")[0]])
    with pytest.raises(ValueError, match="may not be ensembles"):
        pn.ensemble([pn.ensemble(members(count=2)), pn.ensemble(members(count=2))])


def test_it_exports_to_onnx(tmp_path: Path) -> None:
    pytest.importorskip("ndonnx", reason="ndonnx is not installed")
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    from portanet.saving.onnx_export import run_onnx

    models = with_statistics(members(count=2))
    combined = pn.ensemble(models)
    path = pn.export_onnx(combined, tmp_path / "two.onnx")  # verified against portanet
    got = run_onnx(path, IMAGES)["probabilities"]
    expected = np.mean([pn.predict_proba(m, IMAGES) for m in models], axis=0)
    np.testing.assert_allclose(got, expected, atol=1e-5)
