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
    specs = [[{"type": type(layer).__name__, **layer.config()} for layer in m.layers]
             for m in members(count=2)]
    wrapped = pn.Sequential([Ensemble(specs), pn.Softmax()], backend="numpy",
                            input_shape=(1, 8, 8))
    with pytest.raises(ValueError, match="may not hold ensembles"):
        pn.ensemble([wrapped, members()[0]])


@pytest.mark.parametrize("shift", [0, 1])
def test_it_exports_to_onnx(tmp_path: Path, shift: int) -> None:
    pytest.importorskip("ndonnx", reason="ndonnx is not installed")
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    from portanet.saving.onnx_export import run_onnx

    models = with_statistics(members(count=2))
    combined = pn.ensemble(models, shift=shift)
    path = pn.export_onnx(combined, tmp_path / "two.onnx")  # verified against portanet
    got = run_onnx(path, IMAGES)["probabilities"]
    views = moved_by_hand(IMAGES, shift) if shift else [IMAGES]
    expected = np.mean([pn.predict_proba(m, v) for m in models for v in views], axis=0)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def moved_by_hand(images: np.ndarray, s: int) -> list[np.ndarray]:
    """The image and its copies moved by ``s`` pixels down, up, right and left, zeros in."""
    h, w = images.shape[2:]
    padded = np.pad(images, ((0, 0), (0, 0), (s, s), (s, s)))
    return [padded[:, :, s + dy:s + dy + h, s + dx:s + dx + w]
            for dy, dx in ((0, 0), (-s, 0), (s, 0), (0, -s), (0, s))]


def test_moved_by_hand_moves_a_pixel() -> None:
    image = np.zeros((1, 1, 5, 5), np.float32)
    image[0, 0, 2, 2] = 1.0
    spots = [tuple(int(i) for i in np.argwhere(v[0, 0])[0]) for v in moved_by_hand(image, 1)]
    assert spots == [(2, 2), (3, 2), (1, 2), (2, 3), (2, 1)]


@pytest.mark.parametrize("count", [1, 2])
def test_shifted_views_average_the_moved_images(backend: pn.Backend, count: int) -> None:
    models = with_statistics(members(backend, count=count))
    combined = pn.ensemble(models, shift=2)
    expected = np.mean([backend.to_numpy(pn.predict_proba(m, backend.asarray(v)))
                        for m in models for v in moved_by_hand(IMAGES, 2)], axis=0)
    got = pn.predict_proba(combined, backend.asarray(IMAGES))
    assert_close(backend, got, expected, rtol=1e-5, atol=1e-6)
    assert combined.layers[0].shift == 2 and "shifted by 2" in repr(combined.layers[0])


def test_a_shift_is_checked() -> None:
    for bad in (-1, True, 1.0, "1"):
        with pytest.raises(ValueError, match="shift must be an int >= 0"):
            pn.ensemble(members(count=2), shift=bad)
    with pytest.raises(ValueError, match=r"at least 9 pixels high and wide.*\(1, 8, 8\)"):
        pn.ensemble(members(count=1), shift=4)
    flat = pn.Sequential([pn.Dense(64, 5)], backend="numpy", input_shape=(64,))
    with pytest.raises(ValueError, match="reads images"):
        pn.ensemble([flat], shift=1)


def test_a_shift_is_saved_and_older_files_have_none(tmp_path: Path) -> None:
    models = with_statistics(members(count=2))
    path = pn.save(pn.ensemble(models, shift=1), tmp_path / "two.npz")
    assert pn.load(path).layers[0].shift == 1
    arrays = dict(np.load(path))
    metadata = json.loads(arrays["__portanet__"].tobytes().decode("utf-8"))
    del metadata["layers"][0]["shift"]  # as files written before shifts were saved
    arrays["__portanet__"] = np.frombuffer(json.dumps(metadata).encode("utf-8"), np.uint8)
    np.savez(tmp_path / "older.npz", **arrays)
    older = pn.load(tmp_path / "older.npz")
    assert older.layers[0].shift == 0
    expected = np.mean([pn.predict_proba(m, IMAGES) for m in models], axis=0)
    np.testing.assert_allclose(pn.predict_proba(older, IMAGES), expected, atol=1e-6)


def test_an_ensemble_gives_back_its_members() -> None:
    models = with_statistics(members(count=3))
    two = pn.ensemble(models[:2], shift=1)
    back = pn.ensemble_members(two)
    for got, model in zip(back, models[:2], strict=True):
        np.testing.assert_allclose(pn.predict_proba(got, IMAGES), pn.predict_proba(model, IMAGES),
                                   atol=1e-6)
    three = pn.ensemble([two, models[2]])  # the members of ``two``, without its shift
    assert len(three.layers[0].members) == 3 and three.layers[0].shift == 0
    expected = np.mean([pn.predict_proba(m, IMAGES) for m in models], axis=0)
    np.testing.assert_allclose(pn.predict_proba(three, IMAGES), expected, atol=1e-6)
    assert pn.ensemble_members(models[0]) == [models[0]]
