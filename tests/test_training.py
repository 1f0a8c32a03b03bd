"""fit / evaluate / predict: learning, parity across backends, and bad input."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

import portanet as pn
from portanet import optim
from tests.helpers import separable_data, tolerance


def mlp(backend: pn.Backend | str, seed: int = 0, features: int = 20, classes: int = 4,
        hidden: int = 32, dropout: float = 0.0) -> pn.Sequential:
    layers = [pn.Dense(features, hidden), pn.ReLU()]
    if dropout:
        layers.append(pn.Dropout(dropout))
    return pn.Sequential(layers + [pn.Dense(hidden, classes)], backend=backend, seed=seed)


def test_smoke_training_reaches_near_perfect_accuracy(backend: pn.Backend) -> None:
    X, y = separable_data()
    model = mlp(backend)
    history = pn.fit(model, X, y, optimizer=optim.Adam(0.01), epochs=15, batch_size=32)
    assert history.epochs == 15
    assert history.loss[-1] < history.loss[0]
    assert pn.evaluate(model, X, y)["accuracy"] >= 0.97
    for _, param, _ in model.named_parameters():
        assert param.dtype == backend.dtype and backend.owns(param)


@pytest.mark.parametrize("batch_size", [None, 1])
def test_full_batch_and_per_sample(backend: pn.Backend, batch_size: int | None) -> None:
    X, y = separable_data(n=300)
    model = mlp(backend)
    opt = optim.SGD(0.5 if batch_size is None else 0.01)
    epochs = 100 if batch_size is None else 5
    history = pn.fit(model, X, y, optimizer=opt, epochs=epochs, batch_size=batch_size)
    assert history.accuracy[-1] >= 0.9
    assert history.samples_per_second[-1] > 0


def test_full_batch_is_plain_gradient_descent(backend: pn.Backend) -> None:
    """batch_size=None: one step per epoch on the whole set, the same as a manual step."""
    X, y = separable_data(n=50)
    fitted, manual = mlp(backend, seed=3), mlp(backend, seed=3)
    pn.fit(fitted, X, y, optimizer=optim.SGD(0.1), epochs=1, batch_size=None)
    value, dlogits = pn.losses.softmax_cross_entropy(manual.forward(backend.asarray(X)),
                                                      backend.asarray(y))
    manual.backward(dlogits)
    optim.SGD(0.1).step(manual)
    expected = manual.state_dict()
    for name, value in fitted.state_dict().items():
        np.testing.assert_allclose(value, expected[name], err_msg=name,
                                   **tolerance(backend.dtype_name, "matmul", size=50))


def test_same_seed_same_initial_weights_on_every_backend(backend: pn.Backend) -> None:
    reference = mlp("numpy", seed=7).state_dict()
    other = mlp(backend, seed=7).state_dict()
    for name in reference:
        np.testing.assert_array_equal(other[name], reference[name])


def test_one_training_step_agrees_across_backends(backend: pn.Backend) -> None:
    X, y = separable_data(n=64)
    results = []
    for b in ("numpy", backend):
        model = mlp(b, seed=5)
        pn.fit(model, X, y, optimizer=optim.SGD(0.1, momentum=0.9), epochs=1, batch_size=64,
               shuffle=False)
        results.append(model.state_dict())
    for name in results[0]:
        np.testing.assert_allclose(results[1][name], results[0][name], rtol=1e-4, atol=1e-5)


def test_validation_history_and_schedule(backend: pn.Backend) -> None:
    X, y = separable_data()
    model = mlp(backend, dropout=0.2)
    history = pn.fit(
        model, X[:500], y[:500], optimizer=optim.SGD(0.1, momentum=0.9), epochs=6,
        batch_size=50, validation_data=(X[500:], y[500:]),
        lr_schedule=optim.linear_decay(0.1, 0.0),
    )
    assert len(history.val_accuracy) == len(history.val_loss) == 6
    assert history.lr == pytest.approx([0.1 * (6 - e) / 6 for e in range(6)])
    assert history.val_accuracy[-1] > 0.7  # chance is 0.25; 100 held-out samples
    assert set(history.as_dict()) >= {"loss", "accuracy", "val_loss", "val_accuracy", "seconds"}


def test_predict_and_predict_proba(backend: pn.Backend) -> None:
    X, y = separable_data()
    model = mlp(backend)
    pn.fit(model, X, y, optimizer=optim.Adam(0.01), epochs=10)
    proba = pn.predict_proba(model, X)
    labels = pn.predict(model, X)
    # output lives where the input lived: host NumPy in, host NumPy out
    assert isinstance(proba, np.ndarray) and isinstance(labels, np.ndarray)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(labels, proba.argmax(axis=1))
    on_device = pn.predict(model, backend.asarray(X))
    assert backend.owns(on_device)
    assert np.mean(labels == y) == pn.evaluate(model, X, y)["accuracy"]


def test_inference_takes_the_backends_batch_unless_told(backend: pn.Backend,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """evaluate and predict step through ``backend.inference_batch`` images at a time (256 on a
    CPU, 2,048 on a GPU), or ``batch_size`` when given; the result does not depend on it."""
    X, y = separable_data(n=600)
    model = mlp(backend)
    expected = pn.evaluate(model, X, y, batch_size=600)
    sizes: list[int] = []
    forward = model.forward_unchecked
    monkeypatch.setattr(model, "forward_unchecked",
                        lambda x: sizes.append(int(x.shape[0])) or forward(x))
    got = pn.evaluate(model, X, y)
    step = backend.inference_batch
    assert step in (256, 2048) and sizes == [min(step, 600 - lo) for lo in range(0, 600, step)]
    assert got["accuracy"] == expected["accuracy"]
    assert got["loss"] == pytest.approx(expected["loss"], rel=1e-5)
    sizes.clear()
    pn.predict(model, X, batch_size=250)
    assert sizes == [250, 250, 100]


def test_dropout_is_off_in_evaluation(backend: pn.Backend) -> None:
    """In evaluation a model with Dropout predicts exactly what the same weights without it do;
    in training mode the layer does drop."""
    X, y = separable_data(n=40)
    with_dropout, without = mlp(backend, dropout=0.5), mlp(backend)
    pn.fit(with_dropout, X, y, optimizer=optim.SGD(0.1), epochs=1, batch_size=10)
    without.load_state_dict({name.replace("3.", "2."): value
                             for name, value in with_dropout.state_dict().items()})
    np.testing.assert_allclose(pn.predict_proba(with_dropout, X), pn.predict_proba(without, X),
                               rtol=1e-6, atol=1e-7)
    with_dropout.train()
    dropped = backend.to_numpy(with_dropout.layers[2].forward(backend.asarray(X)))
    assert 0.3 < np.mean(dropped == 0) < 0.7


def test_interrupt_stops_after_the_current_step(backend: pn.Backend) -> None:
    X, y = separable_data(n=200)
    model = mlp(backend)

    class InterruptAtStep3(pn.Callback):
        def on_batch_end(self, batch, running):
            if batch == 3:
                os.kill(os.getpid(), signal.SIGINT)

    before = signal.getsignal(signal.SIGINT)  # SIG_IGN when the test run started in background
    history = pn.fit(model, X, y, epochs=5, batch_size=10, callbacks=[InterruptAtStep3()])
    assert history.interrupted and history.epochs == 1
    assert signal.getsignal(signal.SIGINT) is before  # fit puts back what it found


def test_running_figures_reach_callbacks(backend: pn.Backend) -> None:
    X, y = separable_data(n=100)
    seen = []

    class Record(pn.Callback):
        def on_batch_end(self, batch, running):
            seen.append(running())

    history = pn.fit(mlp(backend), X, y, epochs=1, batch_size=25, callbacks=[Record()])
    assert len(seen) == 4
    assert seen[-1] == pytest.approx((history.loss[0], history.accuracy[0]))


def test_non_contiguous_and_read_only_inputs(backend: pn.Backend) -> None:
    """Column-major, strided and read-only host arrays, and a transposed view on the device,
    train and predict exactly like the plain C-ordered copy."""
    X, y = separable_data(n=64)
    frozen_X, frozen_y = X.copy(), y.copy()
    frozen_X.flags.writeable = frozen_y.flags.writeable = False
    variants = {"fortran": (np.asfortranarray(X), y),
                "strided": (np.repeat(X, 2, axis=0)[::2], y),
                "read-only": (frozen_X, frozen_y)}
    reference = mlp(backend, seed=1)
    fit_args = {"epochs": 2, "batch_size": 16, "shuffle": False}
    pn.fit(reference, X, y, optimizer=optim.SGD(0.1, momentum=0.9), **fit_args)
    for name, (X_variant, y_variant) in variants.items():
        assert not (X_variant.flags.c_contiguous and X_variant.flags.writeable), name
        model = mlp(backend, seed=1)
        pn.fit(model, X_variant, y_variant, optimizer=optim.SGD(0.1, momentum=0.9), **fit_args)
        for key, value in model.state_dict().items():
            np.testing.assert_allclose(value, reference.state_dict()[key], err_msg=f"{name} {key}",
                                       **tolerance(backend.dtype_name, "training", size=16))
        np.testing.assert_array_equal(pn.predict(model, X_variant), pn.predict(reference, X))
        assert pn.evaluate(model, X_variant, y_variant) == pytest.approx(
            pn.evaluate(reference, X, y))
    on_device = backend.xp.permute_dims(backend.asarray(np.ascontiguousarray(X.T)), (1, 0))
    np.testing.assert_array_equal(backend.to_numpy(pn.predict(reference, on_device)),
                                  pn.predict(reference, X))


# --- bad input: each a clear error naming the problem ---------------------------------------


def test_wrong_feature_count(backend: pn.Backend) -> None:
    X, y = separable_data()
    with pytest.raises(ValueError, match=r"expects 20 features"):
        pn.fit(mlp(backend), X[:, :19], y)


def test_images_without_flatten(backend: pn.Backend) -> None:
    model = pn.Sequential([pn.Dense(784, 10)], backend=backend)
    with pytest.raises(ValueError, match="Flatten"):
        pn.predict(model, np.zeros((2, 28, 28), dtype=np.float32))


@pytest.mark.parametrize("bad", [[0, 1, 4], [-1, 0, 1]], ids=["too-large", "negative"])
def test_labels_out_of_range(backend: pn.Backend, bad: list[int]) -> None:
    X, _ = separable_data(n=3)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 4\)"):
        pn.fit(mlp(backend), X, np.array(bad))


def test_float_labels_and_length_mismatch(backend: pn.Backend) -> None:
    X, y = separable_data(n=10)
    with pytest.raises(ValueError, match="integer class indices"):
        pn.fit(mlp(backend), X, y.astype(np.float32))
    with pytest.raises(ValueError, match=r"shape \(10,\)"):
        pn.fit(mlp(backend), X, y[:9])


def test_nan_inputs(backend: pn.Backend) -> None:
    X, y = separable_data(n=10)
    X[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        pn.fit(mlp(backend), X, y)


def test_integer_pixels_are_refused_with_the_fix(backend: pn.Backend) -> None:
    X, y = separable_data(n=10)
    with pytest.raises(ValueError, match=r"dtype uint8.*/ 255"):
        pn.fit(mlp(backend), (X * 10).astype(np.uint8), y)


def test_arrays_from_another_backend_are_refused() -> None:
    pytest.importorskip("array_api_strict")
    strict = pn.get_backend("array_api_strict")
    X, y = separable_data(n=10)
    model = mlp("numpy")
    with pytest.raises(ValueError, match="never copies between backends"):
        model.forward(strict.asarray(X))
    with pytest.raises(ValueError, match="never copies between backends"):
        pn.fit(model, strict.asarray(X), y)


def test_model_ending_in_softmax_with_a_logits_loss(backend: pn.Backend) -> None:
    model = pn.Sequential([pn.Dense(20, 4), pn.Softmax()], backend=backend)
    X, y = separable_data(n=10)
    with pytest.raises(ValueError, match="remove the last Softmax"):
        pn.fit(model, X, y)
    proba = pn.predict_proba(model, X)  # a Softmax ending is fine for prediction
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("kwargs", [{"batch_size": 0}, {"batch_size": 2.5}, {"epochs": -1},
                                    {"loss": "hinge"}])
def test_bad_fit_arguments(backend: pn.Backend, kwargs: dict) -> None:
    X, y = separable_data(n=10)
    with pytest.raises(ValueError):
        pn.fit(mlp(backend), X, y, **kwargs)


def test_layer_arguments_are_checked(backend: pn.Backend) -> None:
    with pytest.raises(ValueError, match="positive integer"):
        pn.Dense(0, 3)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        pn.Dropout(1.0)
    with pytest.raises(ValueError, match="unknown initializer"):
        pn.Dense(3, 3, weight_init="magic")
    with pytest.raises(TypeError, match="not a portanet Layer"):
        pn.Sequential([pn.Dense(3, 3), "relu"], backend=backend)
    layer = pn.Dense(3, 3)
    pn.Sequential([layer], backend=backend)
    with pytest.raises(ValueError, match="already belongs"):
        pn.Sequential([layer], backend=backend)


def test_initializers_have_the_documented_statistics() -> None:
    rng = np.random.default_rng(0)
    he = pn.init.he()(rng, (1000, 500))
    assert he.std() == pytest.approx(np.sqrt(2 / 1000), rel=0.02)
    glorot = pn.init.glorot()(rng, (300, 100))
    assert np.abs(glorot).max() <= np.sqrt(6 / 400)
    u = pn.init.uniform(-0.5, 0.5)(rng, (100, 10))
    assert u.min() >= -0.5 and u.max() < 0.5
    assert not pn.init.zeros()(rng, (3, 2)).any()
    with pytest.raises(ValueError):
        pn.init.uniform(1.0, 0.0)
