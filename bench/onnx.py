"""Inference throughput of an exported model: onnxruntime against portanet and PyTorch (CPU).

    python -m bench.onnx                      # mlp1024 and cnn-fast, 10,000 MNIST test images
    python -m bench.onnx --images 2000 --repeats 2

For each preset (weights as built, seed 0: throughput does not depend on training):

- ``onnxruntime``: the file :func:`portanet.export_onnx` writes (the layers' own math as
  recorded by ndonnx), run in batches by an ``InferenceSession`` with default options;
- ``onnxruntime native ops``: a reference graph built here by hand from the same weights with
  ONNX's own ``Conv``/``MaxPool``/``Gemm``: what a graph rewrite could gain (not shipped);
- ``portanet evaluate``: :func:`portanet.evaluate` on the NumPy backend, same batch size;
- ``torch``: the same network in ``torch.nn``, ``no_grad``, on the CPU, same batches.

Every implementation's probabilities are checked against portanet's first (max abs difference
in the output). The machine is shared: the 1-minute load average is recorded before and after,
and only ratios measured in one run compare. Ends with one JSON line holding every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import portanet
from portanet.app import recipes
from portanet.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU

PRESETS = ("mlp1024", "cnn-fast")


def load_images(n: int, random: bool = False) -> tuple[np.ndarray, np.ndarray, str]:
    """``n`` MNIST test images scaled to [0, 1] (random pixels if asked or MNIST is not at
    hand: the figures are about speed, not accuracy)."""
    why = "asked"
    if not random:
        try:
            (_, _), (x, y) = portanet.data.load_mnist(progress=False)
            return (x[:n].astype(np.float32) / 255, y[:n].astype(np.int64), "mnist test images")
        except Exception as exc:  # any failure to get the data: measure on random pixels
            why = type(exc).__name__
    rng = np.random.default_rng(0)
    return (rng.random((n, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, n),
            f"random pixels ({why})")


def native_graph(model: portanet.Sequential) -> bytes:
    """The model as ONNX's own operators (Gemm, Conv, MaxPool, Relu, Flatten): a reference for
    what a rewrite of the recorded graph could reach. Layer types of the two presets only."""
    from onnx import TensorProto, helper, numpy_helper

    state, nodes, name = model.state_dict(), [], "images"
    for i, layer in enumerate(model.layers):
        out = f"y{i}"
        if isinstance(layer, Dense):
            nodes.append(helper.make_node("Gemm", [name, f"{i}.W", f"{i}.b"], [out]))
        elif isinstance(layer, Conv2D):
            top, bottom, left, right = layer._pads
            nodes.append(helper.make_node("Conv", [name, f"{i}.W", f"{i}.b"], [out],
                                          strides=list(layer.stride),
                                          pads=[top, left, bottom, right]))
        elif isinstance(layer, MaxPool2D):
            nodes.append(helper.make_node("MaxPool", [name], [out],
                                          kernel_shape=list(layer.kernel_size),
                                          strides=list(layer.stride)))
        elif isinstance(layer, (ReLU, Flatten)):
            nodes.append(helper.make_node(type(layer).__name__.capitalize(), [name], [out]))
        else:
            raise ValueError(f"no native reference for {layer!r}")
        name = out
    nodes.append(helper.make_node("Softmax", [name], ["probabilities"], axis=1))
    graph = helper.make_graph(
        nodes, "native",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                       ["batch", *model.input_shape])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in state.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]
                             ).SerializeToString()


def torch_net(model: portanet.Sequential) -> Callable[[np.ndarray], np.ndarray]:
    """The same network in torch.nn with the model's weights; returns probabilities."""
    import torch
    from torch import nn

    modules: list[nn.Module] = []
    state = model.state_dict()
    for i, layer in enumerate(model.layers):
        if isinstance(layer, Dense):
            m = nn.Linear(layer.in_features, layer.out_features)
            m.weight.data = torch.from_numpy(state[f"{i}.W"].T.copy())
        elif isinstance(layer, Conv2D):
            m = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                          layer.stride, layer.padding)
            m.weight.data = torch.from_numpy(state[f"{i}.W"].copy())
        elif isinstance(layer, MaxPool2D):
            m = nn.MaxPool2d(layer.kernel_size, layer.stride)
        else:
            m = {"ReLU": nn.ReLU, "Flatten": nn.Flatten}[type(layer).__name__]()
        if f"{i}.b" in state:
            m.bias.data = torch.from_numpy(state[f"{i}.b"].copy())
        modules.append(m)
    net = nn.Sequential(*modules).eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.softmax(net(torch.from_numpy(x)), dim=1).numpy()

    return run


def batched(run: Callable[[np.ndarray], Any], X: np.ndarray, batch: int) -> np.ndarray:
    return np.concatenate([run(X[i:i + batch]) for i in range(0, len(X), batch)])


def timed(fn: Callable[[], Any], repeats: int) -> dict[str, float]:
    fn()  # warm up (first session run, BLAS threads, allocations)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return {"median_s": statistics.median(seconds), "min_s": min(seconds)}


def bench_preset(name: str, X: np.ndarray, y: np.ndarray, batch: int, repeats: int,
                 torch_too: bool) -> dict[str, Any]:
    import onnxruntime as ort

    model = recipes.get_recipe(name).build("numpy", seed=0)
    X = X.reshape(-1, *(model.input_shape or (784,)))
    expected = portanet.predict_proba(model, X)
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        path = portanet.export_onnx(model, os.path.join(folder, f"{name}.onnx"))
        export_s = time.perf_counter() - started
        recorded = Path(path).read_bytes()
    import onnx

    result: dict[str, Any] = {"export_seconds": round(export_s, 2),
                              "file_bytes": len(recorded),
                              "nodes": len(onnx.load_from_string(recorded).graph.node),
                              "parameters": model.num_parameters(), "rows": {}}

    def session(data: bytes) -> Callable[[np.ndarray], np.ndarray]:
        s = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        return lambda x: s.run(["probabilities"], {"images": x})[0]

    runs: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "onnxruntime": session(recorded),
        "onnxruntime native ops": session(native_graph(model)),
    }
    if torch_too:
        runs["torch"] = torch_net(model)
    for label, run in runs.items():
        probabilities = batched(run, X, batch)
        row = timed(lambda run=run: batched(run, X, batch), repeats)
        row["max_abs_diff"] = float(np.max(np.abs(probabilities - expected)))
        row["images_per_s"] = round(len(X) / row["median_s"])
        result["rows"][label] = row
    row = timed(lambda: portanet.evaluate(model, X, y, batch_size=batch), repeats)
    row["images_per_s"] = round(len(X) / row["median_s"])
    result["rows"]["portanet evaluate"] = row
    base = result["rows"]["portanet evaluate"]["median_s"]
    result["speedup_vs_portanet_evaluate"] = {
        label: round(base / r["median_s"], 2) for label, r in result["rows"].items()}
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.onnx", description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=10_000)
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--presets", default=",".join(PRESETS))
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--random", action="store_true", help="random pixels instead of MNIST")
    args = p.parse_args(argv)
    import importlib.util

    X, y, source = load_images(args.images, args.random)
    torch_too = not args.no_torch and importlib.util.find_spec("torch") is not None
    result: dict[str, Any] = {
        "images": len(X), "data": source, "batch_size": args.batch_size,
        "repeats": args.repeats, "load_before": list(os.getloadavg()),
        "cpu_count": os.cpu_count(),
        "env": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OMP_NUM_THREADS")},
        "presets": {},
    }
    for name in args.presets.split(","):
        res = bench_preset(name, X, y, args.batch_size, args.repeats, torch_too)
        result["presets"][name] = res
        print(f"{name}: exported in {res['export_seconds']}s, {res['nodes']} nodes, "
              f"{res['file_bytes']:,} bytes for {res['parameters']:,} parameters")
        for label, row in res["rows"].items():
            diff = f"  max|dp| {row['max_abs_diff']:.1e}" if "max_abs_diff" in row else ""
            print(f"  {label:<24} {row['images_per_s']:>9,} images/s  "
                  f"({row['median_s']:.3f}s median){diff}")
    result["load_after"] = list(os.getloadavg())
    print(f"load average before {result['load_before'][0]:.2f}, after "
          f"{result['load_after'][0]:.2f} on {os.cpu_count()} cores")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
