"""portanet.random_streams: every stream of a run is seeded from the model's seed and its own
spawn key, as the table in its docstring says, and no two streams coincide."""

from __future__ import annotations

import numpy as np

import portanet as pn
from portanet.parallel.engine import Engine
from portanet.random_streams import augment_stream, dropout_stream


def first_draws(backend: pn.Backend) -> tuple[float, ...]:
    return tuple(backend.rng.random(4))


def model() -> pn.Sequential:
    return pn.Sequential([pn.Dense(4, 4), pn.Dropout(0.5), pn.Dense(4, 2)],
                         backend=pn.get_backend("numpy", seed=7), seed=7)


def expected(spawn_key: tuple[int, int]) -> tuple[float, ...]:
    rng = np.random.default_rng(np.random.SeedSequence(7, spawn_key=spawn_key))
    return tuple(rng.random(4))


def test_the_spawn_keys_are_the_documented_ones() -> None:
    m = model()
    assert first_draws(m.layers[1].backend) == expected((1, 1))  # one process: worker 0
    assert first_draws(dropout_stream(m, 1, worker=0)) == expected((1, 1))
    assert first_draws(dropout_stream(m, 1, worker=5)) == expected((6, 1))
    assert first_draws(augment_stream(m, rank=1, size=2)) == expected((2, 3))
    assert augment_stream(m, rank=0, size=1) is m.backend


def test_every_worker_thread_has_its_own_stream() -> None:
    m = model()
    with Engine(m, 3) as engine:
        drawn = [first_draws(replica.layers[1].backend) for replica in engine.replicas]
    assert drawn == [expected((1, 1)), expected((2, 1)), expected((3, 1))]


def test_no_two_streams_coincide_and_the_model_keeps_its_own() -> None:
    m = model()
    streams = [dropout_stream(m, 1, w) for w in range(4)] + [
        augment_stream(m, r, 3) for r in range(3)]
    draws = {first_draws(s) for s in streams}
    assert len(draws) == len(streams)
    assert first_draws(m.backend) not in draws
