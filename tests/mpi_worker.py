"""A small training run for tests/test_distributed.py, under mpiexec or in one process.

    mpiexec -n 2 python tests/mpi_worker.py '{"out": "/tmp/x", "hidden": 16}'

Writes ``rank{r}.npz`` (weights, last dropout mask, generator state) and ``rank{r}.json``
(history) into ``out``. Options (JSON): see ``DEFAULTS``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

import portanet
from portanet.parallel import mpi as distributed

DEFAULTS: dict[str, Any] = {
    "out": ".", "samples": 96, "batch": 24, "epochs": 2, "hidden": 16, "dropout": 0.0,
    "seed": 3, "optimizer": "momentum", "l2": 0.0, "comm": True, "backend": "numpy",
    "device": None,  # the backend's device, e.g. "no_float64" for array_api_strict
    "hidden_on_rank1": None,  # a different model on rank 1
    "seed_on_rank1": None,  # different initial weights on rank 1
    "raise_on_rank": None, "raise_at_step": 3,  # a rank that fails mid-training
    "lr_on_rank1": None,  # another learning rate on rank 1
    "shift": 0,  # > 0: the features as 1x4x5 images, shifted by up to this many pixels
    "model": "mlp",  # "cnn": the features as 1x4x5 images through a convolution; "bn-cnn":
    # with BatchNorm after it and after the hidden layer; "bn-cnn-local": BatchNorm(sync=False);
    # "cnn-fast": that preset's network on 28x28 images (the features tiled)
    "threads": 1,  # workers per rank
}


def data(samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic, learnable data: 20 features, 3 classes."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(samples, 20)).astype(np.float32)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(np.int64) + (X[:, 2] > 1.0).astype(np.int64)
    return X, y


class FailAt(portanet.optim.SGD):
    """SGD that raises on its ``step``-th update (a rank going wrong mid-training); every rank
    uses it, so the ranks agree on the optimizer, and only the failing one is given a step
    (private: not a setting the ranks compare)."""

    def __init__(self, step: int | None) -> None:
        super().__init__(0.1)
        self._fail_at = step

    def step(self, model: Any, l2: float = 0.0) -> None:
        if self.steps + 1 == self._fail_at:
            raise RuntimeError(f"simulated failure at step {self._fail_at}")
        super().step(model, l2)


def model_layers(kind: str, hidden: int, images: bool) -> list[Any]:
    """The layers before the dropout and the output layer."""
    if kind == "mlp":
        return ([portanet.Flatten()] if images else []) + [portanet.Dense(20, hidden),
                                                             portanet.ReLU()]
    sync = kind != "bn-cnn-local"
    norm = kind.startswith("bn-")
    return [portanet.Conv2D(1, 3, 2), *([portanet.BatchNorm(3, sync=sync)] if norm else []),
            portanet.ReLU(), portanet.Flatten(), portanet.Dense(36, hidden),
            *([portanet.BatchNorm(hidden, sync=sync)] if norm else []), portanet.ReLU()]


def run(options: dict[str, Any]) -> tuple[portanet.Sequential, Any]:
    """Train as the options say; returns the model and its history."""
    o = {**DEFAULTS, **options}
    comm = distributed.world() if o["comm"] else None
    rank = comm.rank if comm is not None else 0
    hidden, seed = o["hidden"], o["seed"]
    if rank == 1 and o["hidden_on_rank1"] is not None:
        hidden = o["hidden_on_rank1"]
    if rank == 1 and o["seed_on_rank1"] is not None:
        seed = o["seed_on_rank1"]
    layers = model_layers(o["model"], hidden, images=bool(o["shift"]))
    if o["dropout"]:
        layers.append(portanet.layers.Dropout(o["dropout"]))
    layers.append(portanet.Dense(hidden, 3))
    backend = portanet.get_backend(o["backend"], "float32", device=o["device"])
    model = portanet.Sequential(layers, backend=backend, seed=seed)
    optimizer = (portanet.optim.SGD(0.1, momentum=0.9) if o["optimizer"] == "momentum"
                 else portanet.optim.Adam(0.01))
    if o["raise_on_rank"] is not None:
        optimizer = FailAt(o["raise_at_step"] if o["raise_on_rank"] == rank else None)
    if rank == 1 and o["lr_on_rank1"] is not None:
        optimizer.lr = o["lr_on_rank1"]
    X, y = data(o["samples"])
    augment = None
    if o["model"] == "cnn-fast":
        from portanet.app.recipes import PRESETS

        model = PRESETS["cnn-fast"].build(backend, seed=seed)
        X = np.tile(X.reshape(-1, 1, 4, 5), (1, 1, 7, 6))[:, :, :, :28]
    elif o["shift"] or o["model"] != "mlp":
        X = X.reshape(-1, 1, 4, 5)
    if o["shift"]:
        augment = portanet.augment.RandomShift(o["shift"])
    history = portanet.fit(model, X, y, optimizer=optimizer, epochs=o["epochs"],
                           batch_size=o["batch"], l2=o["l2"], comm=comm, augment=augment,
                           threads=o["threads"])
    return model, history


def main() -> None:
    options = {**DEFAULTS, **json.loads(sys.argv[1])}
    model, history = run(options)
    comm = distributed.world() if options["comm"] else None
    rank = comm.rank if comm is not None else 0
    out = Path(options["out"])
    arrays = {f"w.{k}": v for k, v in model.state_dict().items()}
    masks = [layer._mask for layer in model.layers if hasattr(layer, "rate")]
    if masks and masks[0] is not None:
        arrays["mask"] = model.backend.to_numpy(masks[0])
    state = json.dumps(model.backend.rng.bit_generator.state)
    np.savez(out / f"rank{rank}.npz", **arrays)
    routes = getattr(comm, "routes", {})  # how the gradients went to MPI
    (out / f"rank{rank}.json").write_text(json.dumps({
        "history": history.as_dict(), "rng": state, "routes": routes,
        "cuda_aware": getattr(comm, "cuda_aware", None)}))


if __name__ == "__main__":
    main()
