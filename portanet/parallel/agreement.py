"""What MPI ranks agree on before they train (:meth:`portanet.parallel.mpi.Communicator.begin`):
the model, its initial weights, the data and batch plan, and the training settings (the
optimizer's type and hyperparameters, ``l2``, the learning-rate schedule). Each is a small
fingerprint every rank sends to every other; a difference raises :class:`RankMismatchError`
naming it, on every rank alike (they all see the same fingerprints), never a hang."""

from __future__ import annotations

import functools
import hashlib
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np


class RankMismatchError(ValueError):
    """Ranks disagree on the model or the training plan. Raised on every rank alike."""

    on_every_rank = True


def describe_model(model: Any) -> list[str]:
    """One line per layer: its type, configuration, parameter shapes and the dtype."""
    lines = []
    for i, layer in enumerate(model.layers):
        shapes = ", ".join(f"{k} {tuple(p.shape)}" for k, p in layer.params.items())
        lines.append(f"layer {i}: {layer!r}" + (f" [{shapes}]" if shapes else ""))
    lines.append(f"dtype {model.backend.dtype_name}")
    return lines


def weights_digest(model: Any) -> str:
    """SHA-256 of every parameter's bytes, in order (host copies, once per fit)."""
    digest = hashlib.sha256()
    for name, array in model.state_dict().items():
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def inputs_digest(*arrays: np.ndarray) -> str:
    """SHA-256 of host arrays' shapes, dtypes and bytes (MNIST's 47 MB of images: ~0.1 s)."""
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


_PLAIN = (bool, numbers.Number, str, type(None))


def describe_optimizer(optimizer: Any, name: str = "optimizer") -> list[str]:
    """The configuration of ``optimizer`` as ``"name.setting value"`` lines: its class, learning
    rate and every public plain setting (weight_decay, momentum, betas, eps, a OneCycle's
    max_lr, total_steps, pct_start, ..., the steps taken so far), an optimizer it wraps under
    its own prefix. Moments and other per-parameter state are not settings."""
    kind = type(optimizer)
    lines = [f"{name} {kind.__module__}.{kind.__qualname__}"]
    if hasattr(optimizer, "lr"):
        lines.append(f"{name}.lr {optimizer.lr!r}")
    for key, value in sorted(vars(optimizer).items()):
        if key.startswith("_") or key == "state":
            continue
        if hasattr(value, "step") and hasattr(value, "lr"):
            lines += describe_optimizer(value, f"{name}.{key}")
        elif isinstance(value, _PLAIN):
            lines.append(f"{name}.{key} {value!r}")
    return lines


def describe_schedule(schedule: Any) -> str:
    """A learning-rate schedule (``schedule(epoch, epochs) -> lr``) by its function and the
    plain values it holds: a closure's cells (``linear_decay(0.1)``'s lr and final_lr), a
    partial's arguments, default arguments; ``None`` without one. The schedule is not called."""
    if schedule is None:
        return "none"
    shown: list[str] = []
    while isinstance(schedule, functools.partial):
        shown += [*map(repr, schedule.args),
                  *(f"{k}={v!r}" for k, v in sorted(schedule.keywords.items()))]
        schedule = schedule.func
    code = getattr(schedule, "__code__", None)
    names = code.co_freevars if code is not None else ()
    cells = [cell.cell_contents for cell in getattr(schedule, "__closure__", None) or ()]
    shown += [f"{k}={v!r}" for k, v in zip(names, cells, strict=False) if isinstance(v, _PLAIN)]
    shown += [repr(v) for v in getattr(schedule, "__defaults__", None) or ()
              if isinstance(v, _PLAIN)]
    kind = getattr(schedule, "__qualname__", type(schedule).__qualname__)
    where = getattr(schedule, "__module__", type(schedule).__module__)
    return f"{where}.{kind}({', '.join(shown)})"


def describe_training(optimizer: Any = None, l2: float = 0.0, lr_schedule: Any = None
                      ) -> list[str]:
    """The training settings ranks must share: the optimizer's configuration, ``l2`` and the
    learning-rate schedule (the epochs and batch are in the plan)."""
    lines = describe_optimizer(optimizer) if optimizer is not None else ["optimizer none"]
    return [*lines, f"l2 {float(l2)!r}", f"lr_schedule {describe_schedule(lr_schedule)}"]


def check_same(everyone: Sequence[dict[str, Any]]) -> None:
    """Raise RankMismatchError (on every rank: all see the same list) naming what differs."""
    root = everyone[0]
    for rank, mine in enumerate(everyone[1:], start=1):
        if mine["model"] != root["model"]:
            counts = (f"{len(mine['model']) - 1} layers versus rank 0's "
                      f"{len(root['model']) - 1}")
            raise RankMismatchError(
                f"the model on rank {rank} differs from rank 0's: "
                f"{_first_difference(mine['model'], root['model'], counts)}. Every MPI rank "
                f"must build the same model (same layers, widths and dtype) before fit")
        if mine["weights"] != root["weights"]:
            raise RankMismatchError(
                f"the initial weights on rank {rank} differ from rank 0's (same layers and "
                f"shapes). Build the model with the same seed on every rank, e.g. "
                f"Sequential(..., seed=0), or load the same saved file")
        if mine["plan"] != root["plan"]:
            raise RankMismatchError(
                f"rank {rank} would train on {mine['plan']}, rank 0 on {root['plan']}. Every "
                f"rank must load the same training data and call fit with the same batch_size "
                f"and epochs")
        settings, roots = mine.get("training", []), root.get("training", [])
        if settings != roots:
            counts = f"{len(settings)} settings versus rank 0's {len(roots)}"
            raise RankMismatchError(
                f"the training settings on rank {rank} differ from rank 0's: "
                f"{_first_difference(settings, roots, counts)}. Every rank must call fit with "
                f"the same optimizer, learning rate, weight decay, l2 and lr_schedule "
                f"(portanet train: the same --optimizer, --lr and --weight-decay on every rank)")


def _first_difference(mine: Sequence[str], root: Sequence[str], otherwise: str) -> str:
    """The first line of ``mine`` that differs from ``root``'s, with rank 0's; else
    ``otherwise`` (one list is longer)."""
    return next((f"{a}  versus rank 0's  {b}" for a, b in zip(mine, root, strict=False)
                 if a != b), otherwise)
