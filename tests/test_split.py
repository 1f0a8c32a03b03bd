"""Split-batch steps (portanet.parallel.threads): two half-batches on two threads give the whole
batch's
gradients (BatchNorm's statistics too), train like one thread, refuse MPI, and never hang on
a failure."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import portanet as pn
from portanet import losses, optim
from portanet.parallel.mpi import Local
from portanet.parallel.threads import MIN_ROWS, SplitStep, split_pays
from tests.helpers import assert_close


def small_cnn(backend: pn.Backend | str, *extra: Any, seed: int = 0) -> pn.Sequential:
    return pn.Sequential([pn.Conv2D(1, 3, 3), pn.MaxPool2D(2), pn.ReLU(), *extra, pn.Flatten(),
                          pn.Dense(27, 3)], backend=backend, seed=seed)


def bn_layers(batchnorm: bool, features: int) -> list[pn.Layer]:
    return [pn.BatchNorm(features)] if batchnorm else []


def images(n: int = MIN_ROWS + 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 1, 8, 8)).astype(np.float32), rng.integers(0, 3, n)


@pytest.mark.parametrize("batchnorm", [False, True], ids=["plain", "batchnorm"])
def test_two_halves_give_the_whole_batchs_gradients(backend: pn.Backend,
                                                    batchnorm: bool) -> None:
    """BatchNorm after the convolution and before the last layer: its statistics and the sums
    of its backward pass are the whole batch's, and the running statistics move once."""
    x, y = images()  # an odd batch: halves of 34 and 35 rows, weighted by their rows
    whole, split = (pn.Sequential([pn.Conv2D(1, 3, 3), *bn_layers(batchnorm, 3), pn.MaxPool2D(2),
                                   pn.ReLU(), pn.Flatten(), pn.Dense(27, 5),
                                   *bn_layers(batchnorm, 5), pn.Dense(5, 3)],
                                  backend=backend, seed=0) for _ in range(2))
    xb, tb = backend.asarray(x), backend.asarray(np.eye(3, dtype=np.float32)[y])
    loss = losses.as_loss(losses.softmax_cross_entropy)
    logits = whole.forward_unchecked(xb)
    whole.backward(loss.gradient(logits, tb), need_input_grad=False)
    with SplitStep(split) as step:
        got = step.forward_backward(loss, xb, tb)
    assert_close(backend, got, backend.to_numpy(logits), rtol=1e-4, atol=1e-5)
    for mine, theirs in zip(split.layers, whole.layers, strict=True):
        for key, g in theirs.grads.items():
            assert_close(backend, mine.grads[key], backend.to_numpy(g), rtol=1e-3, atol=1e-5)
        for key, b in theirs.buffers.items():
            assert_close(backend, mine.buffers[key], backend.to_numpy(b), rtol=1e-5, atol=1e-6)


def test_batchnorm_halves_agree_on_badly_scaled_and_uneven_halves(backend: pn.Backend) -> None:
    """Values far from zero (mean 1000, spread 1) and halves of different means: the merged
    statistics are the whole batch's in float32, so the outputs, gradients and running
    statistics of the split layer match the whole layer's (a merge through sums of squares,
    E[x^2] - mean^2, loses every digit here)."""
    rng = np.random.default_rng(0)
    n = 69
    x = 1000.0 + rng.normal(size=(n, 3, 4, 4))
    x[n // 2:] += 3.0  # the second half sits higher
    d = rng.normal(size=x.shape)
    whole, first, second = (pn.BatchNorm(3) for _ in range(3))
    for layer in (whole, first, second):
        layer.build(backend, np.random.default_rng(1))
        layer.params["gamma"] = backend.asarray(np.array([1.0, -2.0, 0.5]))
    out = backend.to_numpy(whole.forward(backend.asarray(x)))
    dx = backend.to_numpy(whole.backward(backend.asarray(d)))
    from concurrent.futures import ThreadPoolExecutor

    from portanet.parallel.threads import _Exchange

    exchange, calls = _Exchange(), []
    for slot, layer in enumerate((first, second)):
        gather = exchange.half(slot)
        layer.gather = lambda sums, rows, gather=gather: calls.append(rows) or gather(sums, rows)
    second.updates_running = False
    rows = (slice(0, n // 2), slice(n // 2, n))

    def half(k: int) -> tuple:
        layer = (first, second)[k]
        o = layer.forward(backend.asarray(x[rows[k]]))
        return backend.to_numpy(o), backend.to_numpy(layer.backward(backend.asarray(d[rows[k]])))

    with ThreadPoolExecutor(1) as pool:
        other = pool.submit(half, 1)
        parts = [half(0), other.result()]
    assert len(calls) == 4  # one exchange each way, per half
    np.testing.assert_allclose(np.concatenate([p[0] for p in parts]), out, rtol=1e-4, atol=2e-3)
    np.testing.assert_allclose(np.concatenate([p[1] for p in parts]), dx, rtol=1e-3, atol=2e-3)
    for key in ("gamma", "beta"):
        g = backend.to_numpy(first.grads[key]) + backend.to_numpy(second.grads[key])
        np.testing.assert_allclose(g, backend.to_numpy(whole.grads[key]), rtol=1e-3, atol=1e-2)
    for key in ("running_mean", "running_var"):
        np.testing.assert_allclose(backend.to_numpy(first.buffers[key]),
                                   backend.to_numpy(whole.buffers[key]), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("batchnorm", [False, True], ids=["plain", "batchnorm"])
def test_threads_train_like_one_thread(backend: pn.Backend, batchnorm: bool) -> None:
    x, y = images(200)
    trained = []
    for threads in (1, 2):
        model = small_cnn(backend, *bn_layers(batchnorm, 3), seed=1)
        history = pn.fit(model, x, y, optimizer=optim.SGD(0.1, momentum=0.9), epochs=2,
                         batch_size=100, threads=threads)
        trained.append((model.state_dict(), history))
    (one, h1), (two, h2) = trained
    for name in one:
        np.testing.assert_allclose(two[name], one[name], rtol=1e-4, atol=1e-5, err_msg=name)
    np.testing.assert_allclose(h2.loss, h1.loss, rtol=1e-5)


def test_dropout_in_the_second_half_draws_its_own_masks() -> None:
    model = small_cnn("numpy", pn.Dropout(0.5))
    with SplitStep(model) as step:
        mine, twin = model.layers[3], step.replica.layers[3]
        assert twin.backend is not mine.backend and twin.params is mine.params
        x, y = images(2 * MIN_ROWS)  # two halves of the same size
        loss = losses.as_loss(losses.softmax_cross_entropy)
        model.train()
        step.forward_backward(loss, model.backend.asarray(x), np.eye(3, dtype=np.float32)[y])
        assert mine._mask.shape == twin._mask.shape
        assert not np.array_equal(mine._mask, twin._mask)


def test_mpi_is_refused() -> None:
    x, y = images()

    class TwoRanks(Local):
        size = 2

    with pytest.raises(ValueError, match="under MPI each rank runs one thread"):
        pn.fit(small_cnn("numpy"), x, y, batch_size=MIN_ROWS, threads=2, comm=TwoRanks())


@pytest.mark.parametrize("bad", [0, 3, True, 1.5, "2"])
def test_threads_other_than_one_or_two_are_refused(bad: Any) -> None:
    x, y = images()
    with pytest.raises(ValueError, match="threads must be 1, 2 or None"):
        pn.fit(small_cnn("numpy"), x, y, threads=bad)


def test_split_pays_only_where_it_helps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("portanet.parallel.threads.os.cpu_count", lambda: 2)
    # threadpoolctl installed or not
    monkeypatch.setattr("portanet.parallel.threads._blas_controller", lambda: object())
    cnn = small_cnn("numpy")
    assert split_pays(cnn, 256, 1)
    assert not split_pays(cnn, MIN_ROWS - 1, 1)  # small batches: the threads cost more
    assert not split_pays(cnn, 256, 2)  # under MPI
    assert not split_pays(small_cnn("array_api_strict"), 256, 1)  # no such capability
    mlp = pn.Sequential([pn.Dense(4, 3)], backend="numpy")
    assert not split_pays(mlp, 256, 1)  # matrix products only: BLAS uses the cores already
    assert split_pays(small_cnn("numpy", pn.BatchNorm(3)), 256, 1)
    monkeypatch.setattr("portanet.parallel.threads.os.cpu_count", lambda: 1)
    assert not split_pays(cnn, 256, 1)
    monkeypatch.setattr("portanet.parallel.threads.os.cpu_count", lambda: 2)
    monkeypatch.setattr("portanet.parallel.threads._blas_controller", lambda: None)
    assert not split_pays(cnn, 256, 1)  # threadpoolctl missing: BLAS threads would fight


@pytest.mark.parametrize("failing", ["first", "second"])
@pytest.mark.parametrize("batchnorm", [False, True], ids=["plain", "batchnorm"])
def test_a_failure_in_either_half_is_raised_not_hung(failing: str, batchnorm: bool) -> None:
    """With BatchNorm the healthy half waits for the other's sums; the failure must free it,
    the error raised must be the failure (not the broken meeting), and the step must work
    again afterwards."""
    model = small_cnn("numpy", *bn_layers(batchnorm, 3))
    x, y = images()
    t = np.eye(3, dtype=np.float32)[y]
    loss = losses.as_loss(losses.softmax_cross_entropy)
    with SplitStep(model) as step:
        expected = step.forward_backward(loss, x, t)
        net = model if failing == "first" else step.replica
        layer = net.layers[-1]

        def broken(x: Any) -> Any:
            raise RuntimeError(f"the {failing} half failed")

        layer.forward = broken
        with pytest.raises(RuntimeError, match=f"the {failing} half failed"):
            step.forward_backward(loss, x, t)
        del layer.forward
        np.testing.assert_allclose(step.forward_backward(loss, x, t), expected, rtol=1e-6)


@pytest.mark.parametrize("failing", [0, 1])
def test_halves_raise_a_failure_of_either_and_run_again(failing: int) -> None:
    """The optimizer's two halves (SplitStep.halves): both run, on two threads; a failure in
    either is raised once both have finished, and the next call works."""
    import threading

    ran: dict[int, str] = {}

    def work(k: int) -> None:
        ran[k] = threading.current_thread().name
        if k == failing and "fail" in ran.values():
            raise RuntimeError(f"half {k} failed")

    with SplitStep(small_cnn("numpy")) as step:
        step.halves(work)
        assert ran[0] == threading.current_thread().name and ran[1].startswith("portanet-half")
        ran["x"] = "fail"  # type: ignore[index]
        with pytest.raises(RuntimeError, match=f"half {failing} failed"):
            step.halves(work)
        assert set(ran) == {0, 1, "x"}
        del ran["x"]  # type: ignore[arg-type]
        step.halves(work)


def test_inference_halves_give_the_models_outputs(backend: pn.Backend) -> None:
    """Evaluation mode splits BatchNorm models too: it normalises each sample alone."""
    model = small_cnn(backend, pn.BatchNorm(3), pn.Dropout(0.5))
    x, y = images()
    pn.fit(model, x, y, optimizer=optim.SGD(0.1), epochs=1, batch_size=MIN_ROWS, threads=1)
    model.eval()
    xb = backend.asarray(x)
    expected = backend.to_numpy(model.forward_unchecked(xb))
    with SplitStep(model) as step:
        assert_close(backend, step.forward(xb), expected, rtol=1e-5, atol=1e-6)


def test_evaluate_and_predict_split_where_it_pays(monkeypatch: pytest.MonkeyPatch) -> None:
    model = small_cnn("numpy", pn.BatchNorm(3))
    x, y = images(300)
    pn.fit(model, x, y, optimizer=optim.SGD(0.1), epochs=1, batch_size=MIN_ROWS)
    plain = pn.evaluate(model, x, y), pn.predict_proba(model, x)
    calls: list[int] = []
    forward = SplitStep.forward
    monkeypatch.setattr("portanet.parallel.threads.split_pays", lambda *a, **k: True)
    monkeypatch.setattr(SplitStep, "forward",
                        lambda self, xb: calls.append(int(xb.shape[0])) or forward(self, xb))
    split = pn.evaluate(model, x, y), pn.predict_proba(model, x)
    assert calls == [256, 256]  # the last batch of 44 rows is too small to split
    assert split[0]["accuracy"] == plain[0]["accuracy"]
    assert split[0]["loss"] == pytest.approx(plain[0]["loss"], rel=1e-5)
    np.testing.assert_allclose(split[1], plain[1], rtol=1e-5, atol=1e-6)
