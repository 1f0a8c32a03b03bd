"""The CNN benchmark: one epoch of each convolutional preset (``cnn-fast``, ``cnn``) on portanet
against the same network in PyTorch on the same device, paired and interleaved in one run;
inference (``evaluate`` on 10,000 images against PyTorch's eval mode); the array operations of
one training step (:mod:`bench.ops`); the matrix-product limit of ``cnn-fast`` (the epoch's
im2col and dense products alone) and a per-layer profile.

    python -m bench.cnn                    # full epochs of 60,000 MNIST images, 3 pairs
    python -m bench.cnn --samples 12000 --repeats 5
    python -m bench --sections cnn         # the same, as a section of the main benchmark

PyTorch runs ``torch.nn.Conv2d``/``MaxPool2d``/``BatchNorm``/``Linear`` with
``torch.optim.Adam`` and ``OneCycleLR`` stepped per batch, batch 256, one ``randperm`` per
epoch: the recipe each preset follows. Each pair runs both in alternating order; the ratio
reported is the median of the pairs' ratios, so load that drifts during the run affects both
sides alike.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import portanet
from bench.ops import count_step
from portanet import losses
from portanet.app.recipes import PRESETS

BATCH = 256
IMAGE = (1, 28, 28)
CNN_PRESETS = ("cnn-fast", "cnn")
"""The presets compared with PyTorch; the first one's figures also sit at the top level."""
INFERENCE_IMAGES = 10_000


def portanet_epoch(backend: portanet.Backend, X: Any, y: Any, seed: int,
                   preset: str = "cnn-fast") -> float:
    """Seconds of one epoch of ``fit`` with the preset's recipe (epochs forced to 1, random
    shifts off: the PyTorch side trains on the images as they are)."""
    recipe = PRESETS[preset].replace(epochs=1, augment_pixels=0)
    model = recipe.build(backend, seed=seed)
    history = portanet.fit(model, X, y, stop_on_interrupt=False,
                           **recipe.fit_arguments(samples=int(X.shape[0])))
    return history.seconds[0]


def torch_net(preset: str) -> Any:
    """The preset's network in PyTorch (see :mod:`portanet.app.recipes`)."""
    from torch import nn

    if preset == "cnn-fast":
        return nn.Sequential(
            nn.Conv2d(1, 24, 5), nn.MaxPool2d(2), nn.ReLU(), nn.Conv2d(24, 32, 3),
            nn.MaxPool2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(800, 256), nn.ReLU(),
            nn.Linear(256, 10))
    return nn.Sequential(
        nn.Conv2d(1, 32, 5), nn.BatchNorm2d(32), nn.MaxPool2d(2), nn.ReLU(),
        nn.Conv2d(32, 64, 3), nn.BatchNorm2d(64), nn.MaxPool2d(2), nn.ReLU(), nn.Flatten(),
        nn.Linear(1600, 256), nn.BatchNorm1d(256), nn.ReLU(), nn.Dropout(0.3),
        nn.Linear(256, 10))


def torch_epoch(X: np.ndarray, y: np.ndarray, seed: int, device: str = "cpu",
                preset: str = "cnn-fast") -> float:
    """Seconds of one epoch of the same network, batch size and schedule in PyTorch."""
    import torch
    from torch import nn

    batch = PRESETS[preset].batch_size
    torch.manual_seed(seed)
    net = torch_net(preset).to(device)
    tx = torch.from_numpy(X.reshape(-1, *IMAGE)).to(device)
    ty = torch.from_numpy(y).to(device)
    n = tx.shape[0]
    steps = math.ceil(n / batch)
    opt = torch.optim.Adam(net.parameters(), lr=PRESETS[preset].lr)
    # OneCycleLR divides by its phase lengths: at least 10 steps, as tiny runs have fewer.
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=PRESETS[preset].lr,
                                                total_steps=max(steps, 10), pct_start=0.25,
                                                cycle_momentum=False)
    sync = torch.cuda.synchronize if device != "cpu" else (lambda: None)
    sync()
    start = time.perf_counter()
    order = torch.randperm(n, device=device)
    xs, ys = tx.index_select(0, order), ty.index_select(0, order)
    for lo in range(0, n, batch):
        loss = nn.functional.cross_entropy(net(xs[lo:lo + batch]), ys[lo:lo + batch])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    sync()
    return time.perf_counter() - start


def portanet_inference(backend: portanet.Backend, X: Any, y: Any, preset: str,
                       seed: int) -> float:
    """Seconds of ``evaluate`` (loss and accuracy) of the preset's network on ``X``."""
    model = PRESETS[preset].build(backend, seed=seed)
    start = time.perf_counter()
    portanet.evaluate(model, X, y)
    return time.perf_counter() - start


def torch_inference(X: np.ndarray, y: np.ndarray, seed: int, device: str, preset: str,
                    batch: int) -> float:
    """Seconds of the same in PyTorch: eval mode, no autograd, ``batch`` images per step
    (``evaluate``'s, :attr:`portanet.Backend.inference_batch`: PyTorch on a CPU is also fastest
    near 256), loss and accuracy summed on the device and read once."""
    import torch

    torch.manual_seed(seed)
    net = torch_net(preset).to(device).eval()
    tx, ty = torch.from_numpy(X).to(device), torch.from_numpy(y).to(device)
    sync = torch.cuda.synchronize if device != "cpu" else (lambda: None)
    sync()
    start = time.perf_counter()
    with torch.no_grad():
        loss, correct = torch.zeros((), device=device), torch.zeros((), device=device)
        for lo in range(0, tx.shape[0], batch):
            out = net(tx[lo:lo + batch])
            loss += torch.nn.functional.cross_entropy(out, ty[lo:lo + batch], reduction="sum")
            correct += (out.argmax(1) == ty[lo:lo + batch]).sum()
        float(loss), float(correct)
    return time.perf_counter() - start


def product_shapes(n: int) -> list[tuple[tuple[int, int], tuple[int, int], str]]:
    """(left, right, what) for every matrix product of one cnn-fast step on ``n`` samples
    (the first convolution's carry its bias: 25 kernel weights and a row of ones)."""
    p1, p2 = n * 24 * 24, n * 10 * 10
    return [
        ((24, 26), (26, p1), "conv1 forward"),
        ((24, p1), (p1, 26), "conv1 weight gradient"),
        ((32, 216), (216, p2), "conv2 forward"),
        ((32, p2), (p2, 216), "conv2 weight gradient"),
        ((216, 32), (32, p2), "conv2 column gradient"),
        ((n, 800), (800, 256), "dense1 forward"),
        ((256, n), (n, 800), "dense1 weight gradient"),
        ((n, 256), (256, 800), "dense1 input gradient"),
        ((n, 256), (256, 10), "dense2 forward"),
        ((10, n), (n, 256), "dense2 weight gradient"),
        ((n, 10), (10, 256), "dense2 input gradient"),
    ]


def limit_epoch(backend: portanet.Backend, samples: int) -> dict[str, float]:
    """Seconds of the epoch's matrix products alone (random operands of the right shapes,
    allocated once), in total and per product."""
    rng = np.random.default_rng(0)
    steps = [min(BATCH, samples - lo) for lo in range(0, samples, BATCH)]
    times: dict[str, float] = {}
    for n in sorted(set(steps)):
        count = steps.count(n)
        for left, right, what in product_shapes(n):
            a = backend.asarray(rng.random(left, dtype=np.float32))
            b = backend.asarray(rng.random(right, dtype=np.float32))
            out = a @ b
            _read(backend, out)
            start = time.perf_counter()
            for _ in range(count):
                out = a @ b
            _read(backend, out)
            times[what] = times.get(what, 0.0) + time.perf_counter() - start
    return {"total": sum(times.values()), **times}


def _read(backend: portanet.Backend, array: Any) -> None:
    float(backend.to_numpy(array[:1, :1])[0, 0])  # waits for the device


def profile_layers(backend: portanet.Backend, preset: str, steps: int = 10,
                   seed: int = 0) -> dict[str, float]:
    """Milliseconds per step in each layer's forward and backward, and in the optimizer, for
    ``steps`` training steps of the preset's batch (256 for cnn-fast, 128 for cnn) on random
    images."""
    recipe = PRESETS[preset]
    model = recipe.build(backend, seed=seed)
    optimizer = recipe.fit_arguments()["optimizer"]
    rng = np.random.default_rng(seed)
    batch = recipe.batch_size
    x = backend.asarray(rng.random((batch, *IMAGE), dtype=np.float32))
    y = backend.asarray(rng.integers(0, 10, batch))
    names = [f"{i} {type(layer).__name__}" for i, layer in enumerate(model.layers)]
    spent: dict[str, float] = {}

    def clock(key: str, fn: Callable[[], Any]) -> Any:
        # Synchronised on both sides, so on a GPU each part is charged its device time, not
        # the time to queue its kernels.
        backend.synchronize()
        start = time.perf_counter()
        result = fn()
        backend.synchronize()
        spent[key] = spent.get(key, 0.0) + time.perf_counter() - start
        return result

    for step in range(steps + 2):
        if step == 2:
            spent.clear()
        out = x
        for name, layer in zip(names, model.layers, strict=True):
            out = clock(f"{name} forward", lambda layer=layer, out=out: layer.forward(out))
        _, d = losses.softmax_cross_entropy(out, y)
        for i in range(len(model.layers) - 1, -1, -1):
            layer = model.layers[i]
            d = clock(f"{names[i]} backward",
                      lambda layer=layer, d=d, i=i: layer.backward(d, need_dx=i > 0))
        clock("optimizer", lambda: optimizer.step(model))
    per_step = {k: round(v / steps * 1000, 2) for k, v in spent.items()}
    return dict(sorted(per_step.items(), key=lambda kv: -kv[1]))


def _pairs(first: Callable[[], float], second: Callable[[], float] | None, repeats: int,
           say: Callable[[str], None], what: str) -> dict[str, Any]:
    """``repeats`` pairs of portanet (``first``) and PyTorch (``second``) in alternating
    order; the ratio is the median of the pairs' ratios, so load drifting during the run
    affects both sides alike."""
    ours: list[float] = []
    theirs: list[float] = []
    ratios: list[float] = []
    for r in range(repeats):
        pair = {}
        for side in (("portanet", "torch") if r % 2 == 0 else ("torch", "portanet")):
            if side == "portanet":
                pair[side] = first()
            elif second is not None:
                pair[side] = second()
        ours.append(pair["portanet"])
        line = f"  {what} pair {r + 1}: portanet {pair['portanet']:.2f} s"
        if "torch" in pair:
            theirs.append(pair["torch"])
            ratios.append(pair["portanet"] / pair["torch"])
            line += f", PyTorch {pair['torch']:.2f} s, ratio {ratios[-1]:.2f}"
        say(line + f" (load {_load()})")
    return {"portanet_seconds": ours, "torch_seconds": theirs,
            "portanet_median": statistics.median(ours),
            "torch_median": statistics.median(theirs) if theirs else None,
            "ratio_median": statistics.median(ratios) if ratios else None}


def compare_preset(backend: portanet.Backend, X: np.ndarray, y: np.ndarray, preset: str,
                   repeats: int, seed: int, torch_device: str | None,
                   say: Callable[[str], None]) -> dict[str, Any]:
    """Paired training epochs and paired inference of one preset, and its operations per
    training step."""
    Xd, yd = backend.asarray(X), backend.asarray(y)
    m = min(INFERENCE_IMAGES, X.shape[0])
    Xi, yi = Xd[:m, ...], yd[:m]
    portanet_epoch(backend, Xd[:BATCH * 8, ...], yd[:BATCH * 8], seed, preset)  # warm-up
    portanet_inference(backend, Xi, yi, preset, seed)
    if torch_device:
        torch_epoch(X[:BATCH * 8], y[:BATCH * 8], seed, torch_device, preset)
        torch_inference(X[:m], y[:m], seed, torch_device, preset, backend.inference_batch)
    train = _pairs(lambda: portanet_epoch(backend, Xd, yd, seed, preset),
                   (lambda: torch_epoch(X, y, seed, torch_device, preset)) if torch_device
                   else None, repeats, say, f"{preset} epoch")
    infer = _pairs(lambda: portanet_inference(backend, Xi, yi, preset, seed),
                   (lambda: torch_inference(X[:m], y[:m], seed, torch_device, preset,
                                            backend.inference_batch))
                   if torch_device else None, repeats, say, f"{preset} inference")
    ops = count_step(preset, PRESETS[preset].batch_size, seed)
    result = {"ratio_median": train["ratio_median"], "ops_per_step": ops["ops_per_step"],
              "batch": PRESETS[preset].batch_size,
              "inference_ratio": infer["ratio_median"], **train,
              "inference": {"images": m, **infer}, "ops_by_kind": ops.get("by_op")}
    say(f"cnn {preset}: portanet {train['portanet_median']:.2f} s/epoch"
        + (f", PyTorch {train['torch_median']:.2f} s, ratio {train['ratio_median']:.2f}"
           if train["ratio_median"] is not None else "")
        + f"; inference on {m:,} images ratio {_fmt(infer['ratio_median'])}; "
          f"{ops['ops_per_step']} array operations per training step")
    return result


def run(backend: portanet.Backend, X_flat: np.ndarray, y: np.ndarray, repeats: int = 3,
        seed: int = 0, torch: bool = True, say: Callable[[str], None] = print,
        profile: bool = True, presets: tuple[str, ...] = CNN_PRESETS) -> dict[str, Any]:
    """The CNN section: per preset paired epochs, paired inference and operations per step;
    then the limit and the profile. ``X_flat``: host float32 (n, 784) in [0, 1]; ``y``: int64
    (n,). The top-level figures are the first preset's (``cnn-fast`` unless ``presets`` says
    otherwise; the limit is always ``cnn-fast``'s)."""
    X = np.ascontiguousarray(X_flat.reshape(-1, *IMAGE), dtype=np.float32)
    y = np.asarray(y, dtype=np.int64)
    n = X.shape[0]
    torch_device = None
    if torch:
        try:
            import torch as _torch

            torch_device = "cuda" if backend.name == "cupy" and _torch.cuda.is_available() \
                else "cpu"
        except ImportError:
            torch_device = None
    say(f"cnn: one epoch of {', '.join(presets)} ({n:,} images, each preset's batch) on "
        f"portanet {backend.name} vs PyTorch {torch_device or 'skipped'}; {repeats} "
        f"interleaved pairs")
    compared = {p: compare_preset(backend, X, y, p, repeats, seed, torch_device, say)
                for p in presets}
    first = compared[presets[0]]
    limit = limit_epoch(backend, n)
    result: dict[str, Any] = {
        "samples": n, "batch": BATCH, "repeats": repeats, "backend": backend.name,
        "device": backend.device_name, "torch_device": torch_device,
        **{k: first[k] for k in ("portanet_seconds", "torch_seconds", "portanet_median",
                                 "torch_median", "ratio_median")},
        "limit_seconds": limit, "portanet/limit": first["portanet_median"] / limit["total"],
        "presets": compared, "load_at_end": _load(),
    }
    say(f"cnn: {presets[0]} portanet {result['portanet_median']:.2f} s/epoch, ratio "
        f"{_fmt(result['ratio_median'])} (goal <= 1.0); matrix-product limit "
        f"{limit['total']:.2f} s (portanet/limit {result['portanet/limit']:.2f}, goal <= 2.0)")
    if profile:
        result["profile_ms_per_step"] = {p: profile_layers(backend, p) for p in presets}
        for preset, table in result["profile_ms_per_step"].items():
            top = ", ".join(f"{k} {v}" for k, v in list(table.items())[:6])
            say(f"cnn profile ({preset}, ms per step of {PRESETS[preset].batch_size}): {top}")
    return result


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def cnn(ctx: Any, plan: Any, say: Callable[[str], None]) -> dict[str, Any]:
    """The section ``python -m bench`` runs: on the bench's data, 3 interleaved pairs of full
    epochs in a full run, 1 in a quick one, then the limit and the per-layer profile."""
    repeats = 3 if plan.mode == "full" else 1
    return run(ctx.backend, ctx.X_host, ctx.y_host.astype(np.int64), repeats, plan.seed,
               torch=plan.torch, say=say, profile=plan.mode != "tiny")


def _load() -> float | None:
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0])
    except OSError:
        return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.cnn", description=__doc__.split("\n")[0])
    p.add_argument("--backend", default="numpy")
    p.add_argument("--samples", type=int, default=None, help="images per epoch (all 60,000)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved pairs (default 3)")
    p.add_argument("--data", choices=("auto", "mnist", "random"), default="auto")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--no-profile", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--presets", nargs="+", choices=CNN_PRESETS, default=list(CNN_PRESETS),
                   help="which presets to compare (default: all of them)")
    args = p.parse_args(argv)
    from bench import data as bench_data

    backend = portanet.get_backend(args.backend, "float32", seed=args.seed)
    X, y, info = bench_data.load(args.data, args.samples, args.seed)
    result = run(backend, X, y, args.repeats, args.seed, torch=not args.no_torch,
                 profile=not args.no_profile, presets=tuple(args.presets))
    result["data"] = info
    print(json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
