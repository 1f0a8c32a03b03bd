"""The seeded random streams of a training run, in one place.

A model built with a seed draws its initial weights and every epoch's shuffle from its
backend's generator (``get_backend(seed=...)``, ``Backend.rng``). Whatever else draws during
training has a stream of its own, a backend copy seeded from
``SeedSequence(model.seed, spawn_key=(worker, index))``, so that no two share a stream and the
shuffles come out the same on every backend (CuPy draws masks on the device) and every MPI
rank:

==========================================================  ==============================
stream                                                      spawn key
==========================================================  ==============================
Dropout layer ``i`` of worker ``w`` (thread ``t`` of MPI     ``(1 + w, i)``
rank ``r`` with ``T`` threads a rank: ``w = r * T + t``)
the augmentation on rank ``r`` of several MPI ranks         ``(1 + r, number of layers)``
==========================================================  ==============================

One process with one thread is worker 0. The augmentation runs once per process, on the
process's share of each batch; in one process it draws from the model's own generator.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from portanet.backend import Backend


def stream(backend: Backend, seed: int, worker: int, index: int) -> Backend:
    """A copy of ``backend`` whose generator is seeded from
    ``SeedSequence(seed, spawn_key=(worker, index))``."""
    return backend.fork(np.random.SeedSequence(seed, spawn_key=(worker, index)))


def dropout_stream(model: Any, layer_index: int, worker: int = 0) -> Backend:
    """The backend Dropout layer ``layer_index`` of worker ``worker`` draws its masks from."""
    return stream(model.backend, model.seed, 1 + worker, layer_index)


def augment_stream(model: Any, rank: int, size: int) -> Backend:
    """The backend ``fit``'s augmentation draws from: the model's own in one process; on rank
    ``rank`` of ``size`` > 1 MPI ranks a stream of the rank's own. Drawn from the model's
    generator, which also draws the shuffles, shards of different sizes would consume
    different amounts of it and the ranks' shuffles would drift apart."""
    if size == 1:
        return model.backend
    return stream(model.backend, model.seed, 1 + rank, len(model.layers))
