"""portanet.finite, the one home of finiteness checks: which named arrays hold NaN or inf."""

from __future__ import annotations

import numpy as np
import pytest

import portanet as pn
from portanet.finite import listed, not_finite, weights_not_finite


def test_host_arrays_are_named_in_order() -> None:
    arrays = {"a": np.ones(3), "b": np.array([1.0, np.nan]), "c": np.zeros((2, 2)),
              "d": np.array([-np.inf]), "e": np.arange(4)}
    assert not_finite(arrays) == ["b", "d"]
    assert not_finite({}) == []


def test_device_arrays_are_read_once(backend: pn.Backend) -> None:
    xp = backend.xp
    arrays = {"w": backend.asarray(np.array([1.0, 2.0])),
              "v": backend.asarray(np.array([[np.inf, 0.0]]))}
    reads = []

    def to_numpy(a: object) -> np.ndarray:
        reads.append(a)
        return backend.to_numpy(a)

    assert not_finite(arrays, xp, to_numpy) == ["v"] and len(reads) == 1


def test_a_model_names_its_weights_and_buffers(backend: pn.Backend) -> None:
    model = pn.Sequential([pn.Dense(3, 4), pn.BatchNorm(4), pn.Dense(4, 2)], backend=backend)
    assert weights_not_finite(model) == []
    state = model.state_dict()
    state["2.W"][0, 0] = np.nan
    state["1.running_var"][1] = np.inf
    model.load_state_dict(state)
    assert weights_not_finite(model) == ["2.W", "1.running_var"]


@pytest.mark.parametrize(("names", "text"), [
    (["0.W"], "0.W is"), (["0.W", "0.b"], "0.W, 0.b are"),
    ([f"{i}.W" for i in range(6)], "0.W, 1.W, 2.W, 3.W and 2 more are")])
def test_listed(names: list[str], text: str) -> None:
    assert listed(names) == text
