"""The data-parallel engine (portanet.parallel.engine) on threads: K workers give the whole
batch's gradients (BatchNorm's statistics too), train like one worker, draw their own Dropout
masks, run the optimizer's pieces at once, and never hang on a failure. The MPI side:
tests/test_distributed.py."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

import portanet as pn
from portanet import losses, optim
from portanet.parallel import engine as engine_module
from portanet.parallel.engine import Engine, Meeting, shares, threads_that_pay
from portanet.parallel.mpi import Local
from tests.helpers import assert_close, tolerance


def small_cnn(backend: pn.Backend | str, *extra: Any, seed: int = 0) -> pn.Sequential:
    return pn.Sequential([pn.Conv2D(1, 3, 3), pn.MaxPool2D(2), pn.ReLU(), *extra, pn.Flatten(),
                          pn.Dense(27, 3)], backend=backend, seed=seed)


def bn_cnn(backend: pn.Backend | str, seed: int = 0) -> pn.Sequential:
    """BatchNorm after the convolution and before the last layer."""
    return pn.Sequential([pn.Conv2D(1, 3, 3), pn.BatchNorm(3), pn.MaxPool2D(2), pn.ReLU(),
                          pn.Flatten(), pn.Dense(27, 5), pn.BatchNorm(5), pn.Dense(5, 3)],
                         backend=backend, seed=seed)


def mlp(backend: pn.Backend | str, seed: int = 0) -> pn.Sequential:
    return pn.Sequential([pn.Flatten(), pn.Dense(64, 16), pn.ReLU(), pn.Dense(16, 3)],
                         backend=backend, seed=seed)


def cnn_fast(backend: pn.Backend | str, seed: int = 0) -> pn.Sequential:
    """The ``cnn-fast`` preset's network (28x28 images)."""
    from portanet.app.recipes import PRESETS

    backend = pn.get_backend(backend, seed=seed) if isinstance(backend, str) else backend
    return PRESETS["cnn-fast"].build(backend, seed=seed)


MODELS = {"mlp": mlp, "cnn": small_cnn, "batchnorm-cnn": bn_cnn, "cnn-fast": cnn_fast}


def images(n: int = 69, seed: int = 0, side: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 1, side, side)).astype(np.float32), rng.integers(0, 3, n)


def test_shares_are_contiguous_and_differ_by_one_row_at_most() -> None:
    assert shares(10, 4) == [slice(0, 2), slice(2, 5), slice(5, 7), slice(7, 10)]
    assert shares(3, 1) == [slice(0, 3)]


@pytest.mark.parametrize("threads", [2, 3, 4])
@pytest.mark.parametrize("make", [small_cnn, bn_cnn], ids=["plain", "batchnorm"])
def test_workers_give_the_whole_batchs_gradients(backend: pn.Backend, make: Any,
                                                 threads: int) -> None:
    """An odd batch in shares of different sizes, each weighted by its rows; BatchNorm's
    statistics and backward sums are the whole batch's and its running statistics move once."""
    x, y = images()
    whole, parallel = make(backend), make(backend)
    xb, tb = backend.asarray(x), backend.asarray(np.eye(3, dtype=np.float32)[y])
    loss = losses.as_loss(losses.softmax_cross_entropy)
    logits = whole.forward_unchecked(xb)
    whole.backward(loss.gradient(logits, tb), need_input_grad=False)
    with Engine(parallel, threads) as engine:
        got = engine.forward_backward(loss, xb, tb)
    assert_close(backend, got, backend.to_numpy(logits), rtol=1e-4, atol=1e-5)
    for mine, theirs in zip(parallel.layers, whole.layers, strict=True):
        for key, g in theirs.grads.items():
            assert_close(backend, mine.grads[key], backend.to_numpy(g), rtol=1e-3, atol=1e-5)
        for key, b in theirs.buffers.items():
            assert_close(backend, mine.buffers[key], backend.to_numpy(b), rtol=1e-5, atol=1e-6)


def test_batchnorm_parts_agree_on_badly_scaled_and_uneven_parts(backend: pn.Backend) -> None:
    """Values far from zero (mean 1000, spread 1), three parts of different sizes and means:
    the merged statistics are the whole batch's in float32, one exchange each way per part
    (a merge through sums of squares, E[x^2] - mean^2, loses every digit here)."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(0)
    n = 70
    x = 1000.0 + rng.normal(size=(n, 3, 4, 4))
    x[30:] += 3.0
    d = rng.normal(size=x.shape)
    layers = [pn.BatchNorm(3) for _ in range(4)]
    for layer in layers:
        layer.build(backend, np.random.default_rng(1))
        layer.params["gamma"] = backend.asarray(np.array([1.0, -2.0, 0.5]))
    whole, parts = layers[0], layers[1:]
    out = backend.to_numpy(whole.forward(backend.asarray(x)))
    dx = backend.to_numpy(whole.backward(backend.asarray(d)))
    meeting, calls = Meeting(Local(), backend), []
    meeting.open(3)
    for t, layer in enumerate(parts):
        gather = meeting.gather(t)
        layer.gather = lambda sums, rows, gather=gather: calls.append(rows) or gather(sums, rows)
        layer.updates_running = t == 0
    rows = [slice(0, 11), slice(11, 30), slice(30, n)]

    def part(t: int) -> tuple:
        o = parts[t].forward(backend.asarray(x[rows[t]]))
        return backend.to_numpy(o), backend.to_numpy(parts[t].backward(backend.asarray(d[rows[t]])))

    with ThreadPoolExecutor(2) as pool:
        others = [pool.submit(part, t) for t in (1, 2)]
        results = [part(0)] + [f.result() for f in others]
    assert len(calls) == 6  # one exchange each way, per part
    np.testing.assert_allclose(np.concatenate([r[0] for r in results]), out, rtol=1e-4, atol=2e-3)
    np.testing.assert_allclose(np.concatenate([r[1] for r in results]), dx, rtol=1e-3, atol=2e-3)
    for key in ("gamma", "beta"):
        g = sum(backend.to_numpy(p.grads[key]) for p in parts)
        np.testing.assert_allclose(g, backend.to_numpy(whole.grads[key]), rtol=1e-3, atol=1e-2)
    for key in ("running_mean", "running_var"):
        np.testing.assert_allclose(backend.to_numpy(parts[0].buffers[key]),
                                   backend.to_numpy(whole.buffers[key]), rtol=1e-5, atol=1e-4)


def trained(make: Any, threads: int, backend: str = "numpy", **kw: Any) -> dict[str, np.ndarray]:
    x, y = images(203, side=28 if make is cnn_fast else 8)  # the last batch: 53 rows, uneven
    model = make(backend)
    pn.fit(model, x, y, optimizer=kw.pop("optimizer", optim.SGD(0.1, momentum=0.9)), epochs=2,
           batch_size=50, threads=threads, **kw)
    return model.state_dict()


@pytest.mark.parametrize("threads", [2, 3, 4])
@pytest.mark.parametrize("name", MODELS)
def test_k_threads_train_the_weights_of_one(name: str, threads: int) -> None:
    """Several steps, uneven shares: the weights of one worker within float32 rounding."""
    one, many = trained(MODELS[name], 1), trained(MODELS[name], threads)
    tol = tolerance("float32", "matmul", size=64)
    for key in one:
        np.testing.assert_allclose(many[key], one[key], **tol, err_msg=key)


def test_the_flat_update_runs_in_pieces_on_the_threads() -> None:
    """After the first step (which creates Adam's state whole), each step's update runs as three
    parts of the flat arrays: one on the calling thread, two on the pool. Which pool thread
    takes which part is the pool's choice, so only that they ran off the caller is asserted."""
    calls: list[tuple[str, int]] = []
    update = optim.Adam.update

    def recording(self: optim.Adam, state: Any, p: Any, *args: object) -> object:
        calls.append((threading.current_thread().name, int(p.shape[0])))
        return update(self, state, p, *args)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(optim.Adam, "update", recording)
        trained(small_cnn, 3, optimizer=optim.Adam(0.01))
    whole = calls[0][1]
    steps = [calls[k:k + 3] for k in range(1, len(calls), 3)]
    assert len(steps) >= 3 and all(len(step) == 3 for step in steps)
    for step in steps:  # a step's parts end before the next step begins
        assert sum(size for _, size in step) == whole
        assert {size for _, size in step} <= {whole // 3, whole // 3 + 1}
        names = [name for name, _ in step]
        assert names.count(threading.current_thread().name) == 1
        assert sum(name.startswith("portanet-worker") for name in names) == 2


def test_an_optimizer_that_overrides_step_trains_on_threads() -> None:
    """The optimizer knows nothing of threads: a subclass's own ``step`` runs, as one piece."""
    class Counting(optim.Adam):
        def __init__(self) -> None:
            super().__init__(0.01)
            self.calls = 0

        def step(self, model: pn.Sequential, l2: float = 0.0) -> None:
            self.calls += 1
            super().step(model, l2)

    for opt in (Counting(), optim.OneCycle(inner := Counting(), 0.01, 20)):
        trained(small_cnn, 2, optimizer=opt)
        assert (opt if isinstance(opt, Counting) else inner).calls == 10


def test_each_worker_draws_its_own_dropout_masks() -> None:
    model = small_cnn("numpy", pn.Dropout(0.5))
    with Engine(model, 3) as engine:
        masks = [net.layers[3] for net in engine.replicas]
        assert len({id(layer.backend) for layer in masks}) == 3
        assert all(layer.params is masks[0].params for layer in masks)
        x, y = images(90)
        model.train()
        engine.forward_backward(losses.as_loss(losses.softmax_cross_entropy),
                                model.backend.asarray(x), np.eye(3, dtype=np.float32)[y])
        drawn = [layer._mask for layer in masks]
        assert not np.array_equal(drawn[0], drawn[1]) and not np.array_equal(drawn[1], drawn[2])
        kept = [float(np.mean(mask != 0)) for mask in drawn]  # 810 draws each, p = 0.5
        assert all(0.42 < share < 0.58 for share in kept), kept  # equal in distribution


def test_dropout_runs_repeat_for_a_seed_and_a_number_of_workers() -> None:
    def run(threads: int) -> dict[str, np.ndarray]:
        return trained(lambda b: small_cnn(b, pn.Dropout(0.5), seed=3), threads)

    first, again, other = run(3), run(3), run(2)
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert not all(np.array_equal(first[k], other[k]) for k in first)


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "2"])
def test_threads_must_be_a_positive_int(bad: Any) -> None:
    x, y = images()
    with pytest.raises(ValueError, match="threads must be a positive int"):
        pn.fit(small_cnn("numpy"), x, y, threads=bad)


def test_more_threads_than_rows_or_cores_still_train() -> None:
    x, y = images(10)
    model = small_cnn("numpy")
    pn.fit(model, x, y, optimizer=optim.SGD(0.1), batch_size=5, threads=8)
    assert pn.evaluate(model, x, y)["samples"] == 10


def test_threads_pay_where_they_help(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_module, "usable_cores", lambda: 4)
    monkeypatch.setattr(engine_module, "blas_controller", lambda: object())
    cnn = small_cnn("numpy")
    assert threads_that_pay(cnn, 256, 1) == 4
    assert threads_that_pay(cnn, 96, 1) == 3  # 32 rows a thread at least
    assert threads_that_pay(cnn, 63, 1) == 1
    assert threads_that_pay(cnn, 256, 2) == 1  # under MPI: one thread a rank unless asked
    assert threads_that_pay(small_cnn("array_api_strict"), 256, 1) == 1  # no such capability
    mlp_model = pn.Sequential([pn.Dense(4, 3)], backend="numpy")
    assert threads_that_pay(mlp_model, 256, 1) == 1  # BLAS uses the cores already
    monkeypatch.setattr(engine_module, "usable_cores", lambda: 1)
    assert threads_that_pay(cnn, 256, 1) == 1
    monkeypatch.setattr(engine_module, "usable_cores", lambda: 2)
    monkeypatch.setattr(engine_module, "blas_controller", lambda: None)
    assert threads_that_pay(cnn, 256, 1) == 1  # no threadpoolctl: BLAS threads would fight


@pytest.mark.parametrize("failing", [0, 1, 2])
@pytest.mark.parametrize("make", [small_cnn, bn_cnn], ids=["plain", "batchnorm"])
def test_a_failure_in_any_thread_is_raised_not_hung(failing: int, make: Any) -> None:
    """With BatchNorm the healthy workers wait for the others' sums; the failure must free
    them, the error raised must be the failure (not the broken meeting), and the engine must
    work again afterwards."""
    model = make("numpy")
    x, y = images()
    t = np.eye(3, dtype=np.float32)[y]
    loss = losses.as_loss(losses.softmax_cross_entropy)
    with Engine(model, 3) as engine:
        expected = engine.forward_backward(loss, x, t)
        layer = engine.replicas[failing].layers[-1]

        def broken(x: Any) -> Any:
            raise RuntimeError(f"worker {failing} failed")

        layer.forward = broken
        with pytest.raises(RuntimeError, match=f"worker {failing} failed"):
            engine.forward_backward(loss, x, t)
        del layer.forward
        np.testing.assert_allclose(engine.forward_backward(loss, x, t), expected, rtol=1e-6)


def test_inference_on_threads_gives_the_models_outputs(backend: pn.Backend) -> None:
    """Evaluation mode: BatchNorm normalises each sample alone, nothing to exchange."""
    model = small_cnn(backend, pn.BatchNorm(3), pn.Dropout(0.5))
    x, y = images()
    pn.fit(model, x, y, optimizer=optim.SGD(0.1), epochs=1, batch_size=64, threads=1)
    model.eval()
    xb = backend.asarray(x)
    expected = backend.to_numpy(model.forward_unchecked(xb))
    with Engine(model, 3, training=False) as engine:
        assert_close(backend, engine.forward(xb), expected, rtol=1e-5, atol=1e-6)


def test_evaluate_and_predict_use_the_threads_that_pay(monkeypatch: pytest.MonkeyPatch) -> None:
    model = small_cnn("numpy", pn.BatchNorm(3))
    x, y = images(300)
    pn.fit(model, x, y, optimizer=optim.SGD(0.1), epochs=1, batch_size=64)
    plain = pn.evaluate(model, x, y), pn.predict_proba(model, x)
    calls: list[int] = []
    forward = Engine.forward
    monkeypatch.setattr(engine_module, "threads_that_pay", lambda *a, **k: 2)
    monkeypatch.setattr(Engine, "forward",
                        lambda self, xb: calls.append(int(xb.shape[0])) or forward(self, xb))
    split = pn.evaluate(model, x, y), pn.predict_proba(model, x)
    assert calls == [256, 44, 256, 44]
    assert split[0]["accuracy"] == plain[0]["accuracy"]
    assert split[0]["loss"] == pytest.approx(plain[0]["loss"], rel=1e-5)
    np.testing.assert_allclose(split[1], plain[1], rtol=1e-5, atol=1e-6)


def test_threads_under_an_mpi_below_serialized_are_refused() -> None:
    class FakeMPI:
        THREAD_SERIALIZED = 2

        @staticmethod
        def Query_thread() -> int:  # noqa: N802 (mpi4py's name)
            return 1  # MPI_THREAD_FUNNELED

    class Funneled(Local):
        size, MPI = 2, FakeMPI

    with pytest.raises(ValueError, match="MPI_THREAD_SERIALIZED"):
        Engine(small_cnn("numpy"), 2, Funneled())
    Engine(small_cnn("numpy"), 1, Funneled())  # one thread calls MPI from one thread only
