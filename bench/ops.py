"""Array operations per training step, per preset: what a GPU would launch as kernels.

One training step (forward, the loss's gradient, backward, the optimizer's update; the same
calls as ``fit``'s step) runs on the ``torch`` backend on the CPU under a dispatch mode that
counts every ATen operation the array namespace sends down. Views (reshape, permute, slicing,
windows) and metadata-only reshapes move no data and launch nothing, so they are not counted.
The second step is counted (the first allocates the optimizer's state).

    python -m bench.ops                 # every convolutional preset, one line each, then JSON
"""

from __future__ import annotations

import collections
import json
from typing import Any

import numpy as np

import portanet
from portanet.app.recipes import PRESETS
from portanet.losses import as_loss, softmax_cross_entropy

METADATA_ONLY = frozenset({"aten._unsafe_view.default", "aten.lift_fresh.default"})
"""Operations that reshape without moving data but are not flagged as views."""


def count_step(preset: str, batch: int = 256, seed: int = 0) -> dict[str, Any]:
    """``{"ops_per_step": total, "by_op": {op: count}}`` for one training step of ``preset``
    (None and the reason where PyTorch is not installed)."""
    try:
        import torch  # noqa: F401
        from torch.utils._python_dispatch import TorchDispatchMode
    except ImportError:
        return {"ops_per_step": None, "skipped": "PyTorch is not installed"}

    class Counter(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.counts: collections.Counter[str] = collections.Counter()

        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (),
                               kwargs: Any = None) -> Any:
            name = str(func)
            if not func.is_view and name not in METADATA_ONLY:
                self.counts[name] += 1
            return func(*args, **(kwargs or {}))

    backend = portanet.get_backend("torch", "float32", seed=seed, device="cpu")
    recipe = PRESETS[preset]
    model = recipe.build(backend, seed=seed)
    optimizer = recipe.fit_arguments(samples=batch * 10)["optimizer"]
    loss = as_loss(softmax_cross_entropy)
    rng = np.random.default_rng(seed)
    x = backend.asarray(rng.random((batch, *recipe_input(recipe)), dtype=np.float32))
    prepared = loss.prepare(backend.asarray(rng.integers(0, 10, batch)), 10, backend.dtype)
    counter = Counter()
    for step in range(2):
        if step == 1:
            counter.__enter__()
        logits = model.forward_unchecked(x)
        model.backward(loss.gradient(logits, prepared), need_input_grad=False)
        optimizer.step(model)
    counter.__exit__(None, None, None)
    return {"ops_per_step": sum(counter.counts.values()),
            "by_op": dict(counter.counts.most_common())}


def recipe_input(recipe: Any) -> tuple[int, ...]:
    """The per-sample input shape of a preset's network (MNIST images or flat pixels)."""
    return (784,) if recipe.network == "mlp" else (1, 28, 28)


def main() -> int:
    results = {}
    for preset in PRESETS:
        if PRESETS[preset].network == "mlp":
            continue
        results[preset] = count_step(preset)
        print(f"{preset}: {results[preset]['ops_per_step']} array operations per training step")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
