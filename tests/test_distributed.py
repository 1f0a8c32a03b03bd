"""Data-parallel training over MPI: K ranks equal one process (portanet.parallel.mpi).

The ``mpi`` tests launch ``mpiexec -n K`` on tests/mpi_worker.py and compare what each rank
wrote with a 1-process run of the same worker in this process. They are skipped, with the
reason, where mpi4py or mpiexec is missing (``pip install ".[mpi]"``; the test extra has both).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import portanet
from portanet.app import mpi_launch
from portanet.parallel import mpi as distributed
from tests import mpi_worker
from tests.helpers import tolerance

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "mpi_worker.py"
_MPIEXEC = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) \
    or shutil.which("mpiexec")
_WHY = ("mpi4py is not installed (pip install '.[mpi]')"
        if importlib.util.find_spec("mpi4py") is None
        else None if _MPIEXEC else "no mpiexec on PATH or next to Python")
TIMEOUT = 90  # seconds; a hang fails the test instead of blocking the suite


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK")}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    return env


def launch(ranks: int, options: dict[str, Any], out: Path, *,
           script: Sequence[str] | None = None,
           env: dict[str, str | None] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the worker under ``mpiexec -n ranks``; fail the test if it hangs. ``env`` adds
    (a value) or removes (None) environment variables."""
    command = [_MPIEXEC, "-n", str(ranks), sys.executable]
    command += list(script) if script else [str(WORKER), json.dumps({**options, "out": str(out)})]
    full_env = _env()
    for key, value in (env or {}).items():
        full_env.pop(key, None)
        if value is not None:
            full_env[key] = value
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=full_env, cwd=out, start_new_session=True) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # mpiexec and every rank it started
            stdout, stderr = proc.communicate()
            pytest.fail(f"mpiexec -n {ranks} hung for {TIMEOUT}s:\n{stdout}\n{stderr}")
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


def results(out: Path, ranks: int) -> list[tuple[dict[str, np.ndarray], dict[str, Any]]]:
    loaded = []
    for r in range(ranks):
        with np.load(out / f"rank{r}.npz") as f:
            arrays = dict(f)
        loaded.append((arrays, json.loads((out / f"rank{r}.json").read_text())))
    return loaded


def assert_ranks_equal_one_process(out: Path, ranks: int, options: dict[str, Any]) -> None:
    done = results(out, ranks)
    for r in range(1, ranks):  # bitwise: every rank applied the same averaged gradient
        for key, value in done[0][0].items():
            if key.startswith("w."):
                np.testing.assert_array_equal(done[r][0][key], value, err_msg=f"rank {r} {key}")
    model, history = mpi_worker.run({**options, "comm": False, "threads": 1})
    # A few steps of float32 training, the gradient summed in another order: matmul-sized error.
    steps = tolerance("float32", "matmul", size=mpi_worker.DEFAULTS["hidden"] * 8)
    for name, value in model.state_dict().items():
        np.testing.assert_allclose(done[0][0][f"w.{name}"], value, **steps,
                                   err_msg=f"{ranks} ranks against 1 process: {name}")
    figures = done[0][1]["history"]
    np.testing.assert_allclose(figures["loss"], history.loss,
                               rtol=tolerance("float32", "reduction", size=100)["rtol"])
    np.testing.assert_allclose(figures["accuracy"], history.accuracy)


@pytest.mark.mpi
@pytest.mark.skipif(_WHY is not None, reason=_WHY or "")
@pytest.mark.parametrize(("ranks", "options"), [
    pytest.param(2, {"l2": 1e-3}, id="2-ranks-momentum-l2"),
    pytest.param(3, {"samples": 100, "batch": 24, "optimizer": "adam"}, id="3-ranks-uneven"),
    pytest.param(2, {"backend": "array_api_strict", "epochs": 1}, id="2-ranks-host-staged"),
    pytest.param(2, {"model": "bn-cnn", "samples": 100}, id="2-ranks-batchnorm"),
    pytest.param(3, {"model": "bn-cnn", "samples": 100, "batch": 25}, id="3-ranks-batchnorm"),
    pytest.param(2, {"model": "bn-cnn", "threads": 2, "samples": 101},
                 id="2-ranks-x-2-threads-batchnorm"),
    pytest.param(2, {"model": "cnn", "threads": 2, "samples": 100}, id="2-ranks-x-2-threads-cnn"),
    pytest.param(2, {"threads": 3, "batch": 30}, id="2-ranks-x-3-threads-mlp"),
    pytest.param(3, {"model": "cnn-fast", "samples": 100, "epochs": 1},
                 id="3-ranks-cnn-fast"),
    pytest.param(2, {"model": "cnn-fast", "threads": 2, "samples": 100, "epochs": 1},
                 id="2-ranks-x-2-threads-cnn-fast"),
])
def test_ranks_train_like_one_process(ranks: int, options: dict[str, Any],
                                      tmp_path: Path) -> None:
    done = launch(ranks, options, tmp_path)
    assert done.returncode == 0, done.stderr
    assert_ranks_equal_one_process(tmp_path, ranks, options)


@pytest.mark.mpi
@pytest.mark.skipif(_WHY is not None, reason=_WHY or "")
def test_dropout_masks_per_rank_shuffles_shared(tmp_path: Path) -> None:
    options = {"dropout": 0.5, "samples": 96, "batch": 24}
    assert launch(3, options, tmp_path).returncode == 0
    done = results(tmp_path, 3)
    masks = [arrays["mask"] for arrays, _ in done]
    assert masks[0].shape == masks[1].shape == (8, 16)
    assert not np.array_equal(masks[0], masks[1]) and not np.array_equal(masks[1], masks[2])
    for r in (1, 2):  # same weights everywhere
        for key in done[0][0]:
            if key.startswith("w."):
                np.testing.assert_array_equal(done[r][0][key], done[0][0][key])
    # Masks never touch the model's generator: it drew exactly the shuffles of one process.
    model, _ = mpi_worker.run({**options, "dropout": 0.0, "comm": False})
    expected = model.backend.rng.bit_generator.state
    assert all(json.loads(info["rng"]) == expected for _, info in done)
    # Reproducible: the same seed and world size give the same weights.
    again = tmp_path / "again"
    again.mkdir()
    assert launch(3, options, again).returncode == 0
    for key, value in results(again, 3)[0][0].items():
        np.testing.assert_array_equal(value, done[0][0][key])


@pytest.mark.mpi
@pytest.mark.skipif(_WHY is not None, reason=_WHY or "")
def test_shifts_per_rank_keep_the_shuffles_in_step(tmp_path: Path) -> None:
    """Random shifts on shards of different sizes (batches of 25 over 2 ranks: 12 and 13
    rows) draw from each rank's own generator: every rank still draws the shuffles one process
    draws, so each epoch's shards cover the data once, and the weights stay the same."""
    options = {"shift": 1, "samples": 100, "batch": 25, "epochs": 3}
    assert launch(2, options, tmp_path).returncode == 0
    done = results(tmp_path, 2)
    for key in done[0][0]:
        if key.startswith("w."):
            np.testing.assert_array_equal(done[1][0][key], done[0][0][key])
    model, _ = mpi_worker.run({**options, "shift": 0, "comm": False})
    expected = model.backend.rng.bit_generator.state  # the shuffles alone, as one process
    assert [json.loads(info["rng"]) for _, info in done] == [expected, expected]


@pytest.mark.mpi
@pytest.mark.skipif(_WHY is not None, reason=_WHY or "")
def test_a_failing_rank_stops_every_rank(tmp_path: Path) -> None:
    done = launch(2, {"raise_on_rank": 1, "raise_at_step": 3, "epochs": 3}, tmp_path)
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert "simulated failure at step 3" in output
    assert "rank 1 of 2 failed; stopping every rank" in output
    assert not (tmp_path / "rank0.npz").exists()


@pytest.mark.mpi
@pytest.mark.skipif(_WHY is not None, reason=_WHY or "")
@pytest.mark.parametrize(("options", "message"), [
    ({"hidden_on_rank1": 8}, "the model on rank 1 differs from rank 0's: layer 0: Dense(in_"),
    ({"seed_on_rank1": 4}, "the initial weights on rank 1 differ from rank 0's"),
    ({"samples": 97}, "leave a last batch of 1"),
    ({"lr_on_rank1": 0.001}, "the training settings on rank 1 differ from rank 0's: "
                             "optimizer.lr 0.001  versus rank 0's  optimizer.lr 0.1"),
])
def test_mismatch_is_a_clear_error_on_every_rank(options: dict[str, Any], message: str,
                                                 tmp_path: Path) -> None:
    done = launch(2, options, tmp_path)
    assert done.returncode != 0
    assert done.stderr.count(message) == 2, done.stderr  # both ranks say it
    assert "RankMismatchError" in done.stderr


@pytest.mark.mpi
@pytest.mark.skipif(_WHY is not None, reason=_WHY or "")
def test_command_line_trains_data_parallel(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(300, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=300).astype(np.int64)
    np.savez(tmp_path / "digits.npz", x_train=images[:240], y_train=labels[:240],
             x_test=images[240:], y_test=labels[240:])
    done = launch(2, {}, tmp_path, script=[
        "-m", "portanet", "train", "--model", "mlp1024", "--hidden", "32", "--epochs", "1",
        "--batch-size", "64", "--validation", "0", "--dataset-file", "digits.npz",
        "--out", "report", "--quiet"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("MPI world: 2 processes") == 1
    assert done.stdout.count("test accuracy") == 1  # rank 0 only
    assert json.loads((tmp_path / "report" / "report.json").read_text())["history"]["loss"]


def test_under_mpiexec_without_mpi4py_says_what_to_install(tmp_path: Path) -> None:
    blocker = tmp_path / "mpi4py"
    blocker.mkdir()
    (blocker / "__init__.py").write_text("raise ImportError('No module named mpi4py')\n")
    env = {**_env(), "PMI_RANK": "0", "PMI_SIZE": "2",
           "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    done = subprocess.run([sys.executable, "-m", "portanet", "train", "--epochs", "0"],
                          capture_output=True, text=True, timeout=TIMEOUT, env=env)
    assert done.returncode == 2
    assert 'pip install "portanet[mpi]"' in done.stderr


def test_one_process_stand_in_changes_nothing() -> None:
    X, y = mpi_worker.data(64)

    def train(comm: distributed.Communicator | None) -> portanet.Sequential:
        model = portanet.Sequential([portanet.Dense(20, 8), portanet.ReLU(),
                                     portanet.Dense(8, 3)], backend="numpy", seed=0)
        portanet.fit(model, X, y, optimizer=portanet.optim.SGD(0.1), epochs=2, batch_size=16,
                     comm=comm)
        return model

    assert not distributed.launched_by_mpi() or pytest.skip("running under mpiexec")
    local = distributed.world()
    assert isinstance(local, distributed.Local) and (local.rank, local.size) == (0, 1)
    with_comm, without = train(local), train(None)
    for (name, a, _), (_, b, _) in zip(with_comm.named_parameters(),
                                       without.named_parameters(), strict=True):
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert local.allreduce_calls == 0  # one process: no gradient averaging at all


def test_averaging_on_one_process_hands_back_the_same_gradients() -> None:
    X, y = mpi_worker.data(16)
    model = portanet.Sequential([portanet.Dense(20, 8), portanet.ReLU(), portanet.Dense(8, 3)],
                                backend="numpy", seed=0)
    _, dlogits = portanet.losses.softmax_cross_entropy(model.forward(X), y)
    model.backward(dlogits)
    before = {name: np.array(g) for name, _, g in model.named_parameters()}
    comm = distributed.Local()
    comm.average_gradients(model)  # packed into one flat buffer, reduced, unpacked as views
    assert comm.allreduce_calls == 1
    for name, _, g in model.named_parameters():
        np.testing.assert_array_equal(g, before[name], err_msg=name)


def test_shards_cover_the_batch_once() -> None:
    comm = distributed.Local()
    for size in (1, 2, 3, 5):
        comm.size = size
        parts = []
        for rank in range(size):
            comm.rank = rank
            parts.append(comm.shard(10, 27))
        assert parts[0][0] == 10 and parts[-1][1] == 27
        assert all(a[1] == b[0] for a, b in zip(parts, parts[1:], strict=False))
        assert max(hi - lo for lo, hi in parts) - min(hi - lo for lo, hi in parts) <= 1


def test_ring_allreduce_model() -> None:
    from bench import distributed as bench

    assert bench.ring_allreduce_seconds(1e6, 1, 1e9, 1e-5) == 0.0
    assert bench.ring_allreduce_seconds(1e6, 2, 1e9, 1e-5) == pytest.approx(1e-3 + 2e-5)
    assert bench.ring_allreduce_seconds(8e6, 8, 1e9, 0.0) == pytest.approx(2 * 7 / 8 * 8e-3)
    assert bench.efficiency(9.0, 1.0) == pytest.approx(0.9)
    model = bench.paper_model(1e-4, 814_090)["presets"]["mlp1024"]
    assert model["bytes_per_step"] == 4 * 814_090
    for row in model["layouts"].values():  # the batch it names gives at least 90%
        batch = row["min_batch_per_rank_for_90_cpu"]
        assert bench.efficiency(batch * 1e-4, row["allreduce_seconds"]) >= 0.9
        assert bench.efficiency((batch - 1) * 1e-4, row["allreduce_seconds"]) < 0.9


@pytest.mark.mpi
@pytest.mark.skipif(_WHY is not None, reason=_WHY or "")
def test_scaling_bench_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bench import distributed as bench

    assert bench.main(["--samples", "512", "--epochs", "2", "--hidden", "16", "--data",
                       "random", "--out", str(tmp_path)]) == 0
    runs = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["runs"]
    assert [(r["ranks"], r["threads"]) for r in runs] == [(1, 2), (1, 1), (2, 1)]
    assert runs[2]["allreduce_seconds_per_epoch"] > 0 and runs[2]["bare_allreduce_seconds"] > 0
    assert len(list(tmp_path.glob("distributed-*.md"))) == 1


@pytest.mark.mpi
@pytest.mark.skipif(_WHY is not None, reason=_WHY or "")
def test_threads_bench_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """python -m bench.threads: each thread count against PyTorch (where installed), and
    ranks under mpiexec, kept as JSON and Markdown."""
    from bench import threads as bench

    torch = importlib.util.find_spec("torch") is not None
    assert bench.main(["--samples", "256", "--threads", "1", "3", "--ranks", "2", "--repeats",
                       "1", "--data", "random", "--out", str(tmp_path),
                       *([] if torch else ["--no-torch"])]) == 0
    result = json.loads(next(tmp_path.glob("threads-*.json")).read_text())
    assert [row["threads"] for row in result["threads"]] == [1, 3]
    assert all(row["portanet_median"] > 0 for row in result["threads"])
    assert all((row["ratio"] is not None) == torch for row in result["threads"])
    assert [row["ranks"] for row in result["ranks"]] == [2]
    assert "| 3 |" in next(tmp_path.glob("threads-*.md")).read_text()


class _FakeWorld(distributed.Local):
    rank, size = 1, 2

    def abort(self, status: int = 1) -> None:
        self.aborted = status
        raise SystemExit(status)


def test_command_line_guard_aborts_every_rank_on_a_local_error(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    fake = _FakeWorld()
    monkeypatch.setattr(distributed, "_WORLD", fake)
    monkeypatch.setenv("PMI_SIZE", "2")

    @mpi_launch.abort_on_error
    def command(problem: BaseException | None) -> int:
        if problem is not None:
            raise problem
        return 0

    assert command(None) == 0
    with pytest.raises(SystemExit):
        command(OSError("no such file: digits.npz"))
    assert fake.aborted == 2
    assert "rank 1 of 2: OSError: no such file: digits.npz; stopping every rank" \
        in capsys.readouterr().err
    with pytest.raises(distributed.RankMismatchError):  # raised on every rank: no abort
        command(distributed.RankMismatchError("models differ"))
    monkeypatch.delenv("PMI_SIZE")
    with pytest.raises(OSError):  # not under mpiexec: the command is unchanged
        command(OSError("x"))


# --- every backend through both routes to MPI: host staging and CUDA-aware -----------------------


def _route_of(backend: portanet.Backend, cuda_aware: bool) -> str:
    """The route the gradients of ``backend`` must take (see distributed.allreduce_route)."""
    if backend.name == "numpy":
        return "host"
    return "device" if cuda_aware and backend.device_name.startswith("cuda") else "staged"


class _TwoRanks:
    """COMM_WORLD of two ranks holding the same buffer: Allreduce doubles it in place. Records
    what it was given and when (with the backend's synchronisations)."""

    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.given: list[Any] = []

    def Allreduce(self, inplace: Any, buffer: Any, op: Any) -> None:  # noqa: N802 (mpi4py's name)
        self.events.append("Allreduce " + ("host" if isinstance(buffer, np.ndarray)
                                            else "device"))
        self.given.append(buffer)
        buffer[...] = buffer * 2


def _world(cuda_aware: bool, events: list[str]) -> distributed.MPIWorld:
    """An MPIWorld of 2 ranks around :class:`_TwoRanks` (no MPI library involved)."""
    world = object.__new__(distributed.MPIWorld)
    world.size, world.rank = 2, 0
    distributed.Communicator.__init__(world)
    world.MPI = types.SimpleNamespace(IN_PLACE="IN_PLACE", SUM="SUM")
    world.comm, world.cuda_aware = _TwoRanks(events), cuda_aware
    return world


@pytest.mark.parametrize("cuda_aware", [False, True], ids=["staged", "cuda-aware"])
def test_gradient_averaging_routes_on_each_backend(backend: portanet.Backend,
                                                   cuda_aware: bool) -> None:
    """One process, every backend, both settings of the MPI library: the averaged gradients are
    right and went the route they must (NumPy as is, CUDA buffers straight to a CUDA-aware MPI
    after a synchronisation, everything else through the host)."""
    model = portanet.Sequential([portanet.Dense(5, 4), portanet.ReLU(), portanet.Dense(4, 3)],
                                backend=backend, seed=0)
    X, y = mpi_worker.data(8)
    portanet.fit(model, X[:, :5], y, epochs=1, batch_size=8)  # leaves gradients in place
    before = {f"{i}.{k}": backend.to_numpy(g) for i, layer in enumerate(model.layers)
              for k, g in layer.grads.items()}
    events: list[str] = []
    world = _world(cuda_aware, events)
    world.average_gradients(model)  # 2 ranks, same rows: weight 1/2 each, summed: unchanged
    route = _route_of(backend, cuda_aware)
    assert world.routes == {route: 1}
    assert events == ["Allreduce " + ("device" if route == "device" else "host")]
    for i, layer in enumerate(model.layers):
        for key, grad in layer.grads.items():
            assert backend.owns(grad)
            np.testing.assert_allclose(backend.to_numpy(grad), before[f"{i}.{key}"],
                                       **tolerance(backend.dtype_name))


class _FakeDeviceArray:
    """What a CuPy array or a CUDA tensor shows MPI: ``__cuda_array_interface__``."""

    def __init__(self, values: np.ndarray) -> None:
        self.values = values
        self.__cuda_array_interface__ = {"shape": values.shape, "typestr": "<f4",
                                         "data": (0, False), "version": 3}

    def __mul__(self, other: float) -> _FakeDeviceArray:
        return _FakeDeviceArray(self.values * other)

    def __setitem__(self, key: Any, value: _FakeDeviceArray) -> None:
        self.values[key] = value.values


class _FakeDeviceBackend:
    def __init__(self, events: list[str]) -> None:
        self.events = events

    def synchronize(self) -> None:
        self.events.append("synchronize")

    def to_numpy(self, array: _FakeDeviceArray) -> np.ndarray:
        self.events.append("to_numpy")
        return array.values.copy()

    def asarray(self, host: np.ndarray) -> _FakeDeviceArray:
        self.events.append("asarray")
        return _FakeDeviceArray(host)


@pytest.mark.parametrize("cuda_aware", [False, True], ids=["staged", "cuda-aware"])
def test_a_device_buffer_takes_both_routes(cuda_aware: bool) -> None:
    """The CuPy branches without a GPU: a CUDA buffer goes to a CUDA-aware MPI as it is, after
    the backend's own synchronisation (not CuPy's: a CUDA tensor has other streams, and CuPy
    need not be installed); otherwise it is staged through a host copy and back."""
    events: list[str] = []
    world = _world(cuda_aware, events)
    array = _FakeDeviceArray(np.arange(4, dtype=np.float32))
    result = world.allreduce(array, _FakeDeviceBackend(events))
    np.testing.assert_array_equal(result.values, [0, 2, 4, 6])
    if cuda_aware:
        assert events == ["synchronize", "Allreduce device"] and result is array
        assert world.comm.given == [array] and world.routes == {"device": 1}
    else:
        assert events == ["to_numpy", "Allreduce host", "asarray"] and result is not array
        assert world.routes == {"staged": 1}
    with pytest.raises(TypeError, match="needs its backend"):
        world.allreduce(array)


def test_a_cpu_tensor_is_staged_even_with_cuda_aware_mpi() -> None:
    torch = pytest.importorskip("torch")
    assert distributed.allreduce_route(torch.zeros(3), True) == "staged"
    assert distributed.allreduce_route(np.zeros(3), True) == "host"


def test_ranks_given_other_images_with_the_same_labels_are_stopped() -> None:
    images = np.random.default_rng(0).integers(0, 256, (50, 28, 28), dtype=np.uint8)
    labels = np.arange(50) % 10
    other = images.copy()
    other[7, 3, 3] ^= 1  # one pixel of one image

    class TwoRanks(distributed.Local):
        size = 2

        def allgather(self, value: Any) -> list[Any]:
            return [value, distributed.inputs_digest(other, labels)]

    TwoRanks().check_same_inputs(other.copy(), labels)  # the same bytes: no error
    distributed.Local().check_same_inputs(images, labels)  # one process: nothing to compare
    with pytest.raises(distributed.RankMismatchError,
                       match="the training data on rank 1 differs from rank 0's"):
        TwoRanks().check_same_inputs(images, labels)
    assert distributed.inputs_digest(other, labels) == distributed.inputs_digest(other, labels)
    assert distributed.inputs_digest(images, labels) != distributed.inputs_digest(
        images.reshape(50, 784), labels)  # the shape counts


@pytest.mark.mpi
@pytest.mark.skipif(_WHY is not None, reason=_WHY or "")
def test_two_ranks_on_each_backend(backend_spec: tuple[str, Any], tmp_path: Path) -> None:
    """2 ranks under mpiexec on every backend here equal one process: host staging forced
    (PORTANET_MPI_CUDA_AWARE=0), then, for CuPy, the route this MPI library allows."""
    name, device = backend_spec
    options = {"backend": name, "device": device, "epochs": 1}
    settings = [("0", False)] + ([(None, None)] if name == "cupy" else [])
    for forced, aware in settings:
        out = tmp_path / f"aware-{forced}"
        out.mkdir()
        done = launch(2, options, out, env={"PORTANET_MPI_CUDA_AWARE": forced})
        assert done.returncode == 0, done.stderr
        assert_ranks_equal_one_process(out, 2, options)
        info = results(out, 2)[0][1]
        aware = info["cuda_aware"] if aware is None else aware
        gradients = "host" if name == "numpy" else "device" if aware else "staged"
        assert info["routes"].get(gradients, 0) >= 4, info["routes"]  # 4 steps of gradients
        assert "device" not in info["routes"] or gradients == "device"


def test_command_line_ranks_with_other_images_stop_before_training(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(120, 28, 28), dtype=np.uint8)
    labels = np.arange(120) % 10
    np.savez(tmp_path / "a.npz", x_train=images[:100], y_train=labels[:100],
             x_test=images[100:], y_test=labels[100:])
    np.savez(tmp_path / "b.npz", x_train=255 - images[:100], y_train=labels[:100],
             x_test=images[100:], y_test=labels[100:])
    rank = [sys.executable, "-m", "portanet", "train", "--model", "mlp1024", "--hidden", "8",
            "--epochs", "1", "--batch-size", "20", "--validation", "0", "--quiet",
            "--out", "report", "--dataset-file"]
    command = [_MPIEXEC, "-n", "1", *rank, "a.npz", ":", "-n", "1", *rank, "b.npz"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, env=_env(),
                          cwd=tmp_path)
    assert done.returncode != 0
    assert done.stderr.count("the training data on rank 1 differs from rank 0's") == 2, \
        done.stderr
    assert "trained" not in done.stdout and not (tmp_path / "report").exists()


@pytest.mark.mpi
@pytest.mark.skipif(_WHY is not None, reason=_WHY or "")
def test_per_worker_batchnorm_is_an_explicit_choice(tmp_path: Path) -> None:
    """BatchNorm(sync=False): each rank normalises its own share (DDP's default); the ranks
    still hold the same parameters, but not those of one process."""
    options = {"model": "bn-cnn-local", "samples": 100}
    done = launch(2, options, tmp_path)
    assert done.returncode == 0, done.stderr
    (rank0, _), (rank1, _) = results(tmp_path, 2)
    params = [k for k in rank0 if k.startswith("w.") and "running" not in k]
    for key in params:
        np.testing.assert_array_equal(rank1[key], rank0[key], err_msg=key)
    model, _ = mpi_worker.run({**options, "comm": False, "threads": 1})
    one = model.state_dict()
    assert max(float(np.abs(rank0[f"w.{k}"] - v).max()) for k, v in one.items()) > 1e-3
