"""Issue 32, part B: evaluate maps a built-in data set's labels by the model's class names (or
refuses), MPI ranks agree on the optimizer, and a file route bounds what it allocates before it
allocates (model files declaring huge layers, encrypted or deflate64 members, data files whose
headers declare 10**12 images)."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import portanet as pn
from portanet.app import cli, run_data
from portanet.optim import SGD, Adam, OneCycle, linear_decay
from portanet.parallel import mpi as distributed
from tests.helpers import separable_data

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
