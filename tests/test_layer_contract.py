"""The layer contract, checked for every layer type on every backend.

For each example in tests/layer_examples.py: output_shape agrees with forward; float64
central-difference gradients of the input and every parameter (training and evaluation mode);
config round trip; save/load round trip with buffers; training vs evaluation behaviour.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import portanet as pn
from portanet.layers import LAYER_TYPES
from tests.helpers import assert_layer_gradients, assert_model_gradients, distinct_input, tolerance
from tests.layer_examples import EXAMPLES, Example

BATCH = 3
IDS = [e.id for e in EXAMPLES]


def built(example: Example, backend: pn.Backend) -> pn.Layer:
    layer = example.make()
    layer.build(backend, np.random.default_rng(1))
    # Non-trivial parameters and buffers, so the checks see every term.
    rng = np.random.default_rng(5)
    for key, value in layer.params.items():
        layer.load_param(key, backend.to_numpy(value) + rng.normal(size=tuple(value.shape)) * 0.3)
    for key, value in layer.buffers.items():
        layer.load_buffer(key, np.abs(backend.to_numpy(value) + rng.normal(size=value.shape)))
    return layer


def test_every_layer_type_has_an_example() -> None:
    """A new portanet layer gets the contract test by adding an entry to layer_examples.py."""
    covered = {type(e.make()).__name__ for e in EXAMPLES}
    ours = {name for name, cls in LAYER_TYPES.items() if cls.__module__.startswith("portanet.")}
    assert ours - covered == set(), f"layer types without an example: {sorted(ours - covered)}"


@pytest.mark.parametrize("example", EXAMPLES, ids=IDS)
def test_state_shapes_match_what_build_creates(example: Example) -> None:
    """``state_shapes()`` (what a model file is checked against before loading) names every
    parameter and buffer that ``build`` creates, with its shape."""
    layer = example.make()
    layer.build(pn.get_backend("numpy"), np.random.default_rng(0))
    created = {key: tuple(v.shape) for key, v in {**layer.params, **layer.buffers}.items()}
    assert layer.state_shapes() == created


@pytest.mark.parametrize("example", EXAMPLES, ids=IDS)
def test_output_shape_matches_forward(example: Example, backend: pn.Backend) -> None:
    """Every backend, float32 (including array-api-strict's device without float64)."""
    layer = built(example, backend)
    expected = layer.output_shape(example.input_shape)
    for training in (True, False):
        layer.training = training
        x = backend.asarray(distinct_input((BATCH, *example.input_shape)))
        out = layer.forward(x)
        assert backend.owns(out) and out.dtype == backend.dtype
        assert tuple(out.shape) == (BATCH, *expected)
        if not example.trained:
            with pytest.raises(TypeError, match="not trained"):
                layer.backward(backend.asarray(np.ones((BATCH, *expected))))
            continue
        dx = layer.backward(backend.asarray(np.ones((BATCH, *expected))))
        assert tuple(dx.shape) == tuple(x.shape) and dx.dtype == backend.dtype
        for key, grad in layer.grads.items():
            assert tuple(grad.shape) == tuple(layer.params[key].shape), key


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("example", EXAMPLES, ids=IDS)
def test_backward_matches_central_differences(example: Example, training: bool,
                                               backend64: pn.Backend) -> None:
    """Central differences in float64 for the input and every parameter: L = sum(out * R)."""
    if training and example.stochastic:
        pytest.skip("a stochastic forward pass has no finite differences; see test_train_vs_eval")
    if not example.trained:
        pytest.skip("not trained: its backward refuses (test_output_shape_matches_forward)")
    layer = built(example, backend64)
    layer.training = training
    assert_layer_gradients(layer, backend64, distinct_input((BATCH, *example.input_shape)))


def test_a_whole_model_backpropagates_the_loss_gradient(backend64: pn.Backend) -> None:
    """The chain: Flatten, Dense, Tanh, Dense, Sigmoid, Dense, cross-entropy."""
    model = pn.Sequential(
        [pn.Flatten(), pn.Dense(6, 5), pn.Tanh(), pn.Dense(5, 4), pn.Sigmoid(), pn.Dense(4, 3)],
        backend=backend64, seed=0,
    )
    x = backend64.asarray(np.random.default_rng(0).normal(size=(4, 2, 3)))
    assert_model_gradients(model, x, backend64.asarray(np.array([0, 1, 2, 1])))


def test_dropout_backward_uses_the_forward_mask(backend: pn.Backend) -> None:
    layer = pn.Dropout(0.5)
    layer.build(backend, np.random.default_rng(1))
    x = backend.asarray(np.ones((200, 50)))
    out = backend.to_numpy(layer.forward(x))
    assert set(np.unique(out)) <= {0.0, 2.0}  # inverted dropout: kept values scaled by 1/(1-p)
    assert 0.4 < np.mean(out == 0.0) < 0.6
    dout = np.random.default_rng(0).normal(size=(200, 50))
    dx = backend.to_numpy(layer.backward(backend.asarray(dout)))
    np.testing.assert_allclose(dx, dout * out, rtol=1e-5, atol=1e-6)
    layer.training = False
    np.testing.assert_array_equal(backend.to_numpy(layer.forward(x)), np.ones((200, 50)))


@pytest.mark.parametrize("example", EXAMPLES, ids=IDS)
def test_config_round_trip(example: Example) -> None:
    layer = example.make()
    config = json.loads(json.dumps(layer.config()))  # JSON-able, as a model file stores it
    again = LAYER_TYPES[type(layer).__name__](**config)
    assert type(again) is type(layer) and again.config() == layer.config()
    assert again.output_shape(example.input_shape) == layer.output_shape(example.input_shape)


@pytest.mark.parametrize("example", EXAMPLES, ids=IDS)
def test_save_load_round_trip(example: Example, backend: pn.Backend, tmp_path: Path) -> None:
    """Parameters and buffers (after a training step moved them) survive save and load."""
    model = pn.Sequential([example.make()], backend=backend, seed=0,
                          input_shape=example.input_shape)
    x = distinct_input((BATCH, *example.input_shape))
    model.train()
    model.forward(backend.asarray(x))  # moves BatchNorm's running statistics
    path = pn.save(model, tmp_path / "model.npz")
    for target in (backend, "numpy"):
        loaded = pn.load(path, backend=target)
        assert loaded.input_shape == tuple(example.input_shape)
        state, again = model.state_dict(), loaded.state_dict()
        assert sorted(state) == sorted(again)
        for name in state:
            np.testing.assert_allclose(again[name], state[name], rtol=1e-6, err_msg=name)
        model.eval()
        np.testing.assert_allclose(
            loaded.backend.to_numpy(loaded.forward(loaded.backend.asarray(x))),
            backend.to_numpy(model.forward(backend.asarray(x))),
            **tolerance("float32", "matmul", size=int(np.prod(x.shape[1:]))))


@pytest.mark.parametrize("example", EXAMPLES, ids=IDS)
def test_train_vs_eval(example: Example, backend: pn.Backend) -> None:
    """Evaluation is deterministic and leaves buffers alone; training differs from it only
    for the layers that say so; buffers are never parameters."""
    layer = built(example, backend)
    x = backend.asarray(distinct_input((BATCH + 5, *example.input_shape)))
    layer.training = False
    before = {k: backend.to_numpy(v) for k, v in layer.buffers.items()}
    first = backend.to_numpy(layer.forward(x))
    np.testing.assert_array_equal(backend.to_numpy(layer.forward(x)), first)
    for key, value in layer.buffers.items():
        np.testing.assert_array_equal(backend.to_numpy(value), before[key])
    layer.training = True
    trained = backend.to_numpy(layer.forward(x))
    if example.differs_in_eval:
        assert not np.allclose(trained, first)
    else:
        np.testing.assert_allclose(trained, first, rtol=1e-6, atol=1e-7)
    assert not set(layer.buffers) & set(layer.params)
    model = pn.Sequential([example.make()], backend=backend, input_shape=example.input_shape)
    slots = {name for name, *_ in model.parameter_slots()}
    assert all(name not in slots for name, _ in model.named_buffers())
