"""The benchmark machinery (``python -m bench``) on tiny sizes: it runs, writes its files and
ends with one JSON line holding the expected figures; the floor trains like portanet. No timing
assertions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_bench_tiny_run_writes_results_and_ends_with_json(tmp_path: Path) -> None:
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--tiny", "--data", "random", "--backend", "numpy",
         "--out", str(out), "--wait-max", "0", "--profile"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    result = json.loads(last)

    assert result["run"]["mode"] == "tiny"
    assert result["run"]["backend"] == "numpy"
    assert result["run"]["data"]["source"] == "random"
    for key in ("cpu", "numpy_blas", "env", "gpu", "versions"):
        assert key in result["machine"]
    assert "OPENBLAS_CORETYPE" in result["machine"]["env"]
    assert result["load"]["at_start"] is not None

    ref = result["reference"]
    assert ref["config"]["epoch_samples"] == 512
    for name in ("portanet", "floor", "limit"):
        assert ref[name]["seconds_per_epoch"] > 0
        assert ref[name]["samples_per_second"] > 0
    assert "seconds_per_epoch" in ref["torch"] or "skipped" in ref["torch"]
    for key in ("portanet/floor", "portanet/limit", "portanet/torch"):
        assert key in ref["ratios"]
    assert ref["ratios"]["portanet/floor"] > 0
    assert set(ref["ratios_of_medians"]) == set(ref["ratios"])
    assert set(ref["ratios_of_minimums"]) == set(ref["ratios"])
    assert set(ref["goals"]) == {"portanet/floor", "portanet/limit", "portanet/torch"}

    rows = result["scaling"]["rows"]
    assert {(r["hidden"], r["batch_size"]) for r in rows} == {
        (h, b) for h in (16, 32) for b in (1, 64, 512)
    }
    for r in rows:
        assert r["seconds_per_epoch"] > 0
        assert r["peak_memory_bytes"] is not None and r["peak_memory_bytes"] >= 0

    per_sample = {(r["impl"], r["backend"]): r for r in result["per_sample"]["rows"]}
    assert per_sample[("portanet", "numpy")]["us_per_sample"] > 0
    assert per_sample[("plain numpy inline", "numpy")]["us_per_sample"] > 0
    assert "portanet[numpy]/plain numpy" in result["per_sample"]["ratios"]

    process = result["process"]
    for name in ("plain numpy", "portanet"):
        run = process["medians"][name]
        assert run["wall_seconds"] > 0 and run["peak_rss_bytes"] > 0
        assert run["last_line"].startswith("epoch 1")
    assert process["ratios"]["wall"] > 0 and process["ratios"]["peak_rss"] > 0
    assert set(process["goals"]) == {"wall ratio", "peak_rss ratio"}

    full_batch = result["full_batch"]
    assert full_batch["config"]["dtype"] == "float64" and full_batch["ratio"] > 0
    for name in ("portanet", "plain numpy"):
        assert full_batch["rows"][name]["ms_per_iteration"] > 0

    for name in ("portanet", "floor", "limit"):
        assert ref[name]["memory"]["peak_bytes"] >= 0
    assert set(result["headline"]) >= {
        "reference portanet/floor", "reference portanet/torch", "process wall ratio",
        "process peak_rss ratio", "full batch portanet/plain numpy",
        "per-sample portanet[numpy]/plain numpy"}
    assert "extra" not in result["run"]["plan"]

    cnn = result["cnn"]
    assert cnn["ratio_median"] == cnn["presets"]["cnn-fast"]["ratio_median"]
    assert set(cnn["presets"]) == {"cnn-fast", "cnn"}
    for figures in cnn["presets"].values():
        assert {"ratio_median", "ops_per_step", "inference_ratio"} <= set(figures)
        assert figures["inference"]["images"] == 512 and figures["portanet_median"] > 0
        if cnn["torch_device"]:
            assert figures["ratio_median"] > 0 and figures["inference_ratio"] > 0
            assert 0 < figures["ops_per_step"] == sum(figures["ops_by_kind"].values())
    assert {"cnn-fast epoch portanet/PyTorch", "cnn inference portanet/PyTorch",
            "cnn-fast array operations per training step"} <= set(result["headline"])

    phases = result["profile"]["phases"]
    assert phases["portanet"]["total"] > 0 and phases["floor"]["total"] > 0
    assert "backward 1 ReLU" in phases["portanet"] and "backward 1 ReLU" in phases["floor"]
    assert result["profile"]["cprofile_top"]

    json_files = list(out.glob("*-numpy-tiny.json"))
    assert len(json_files) == 1
    assert json.loads(json_files[0].read_text())["reference"]["ratios"] == ref["ratios"]
    assert json_files[0].with_suffix(".md").exists()
    assert "Reference workload" in (out / "SUMMARY.md").read_text()
    assert not list(out.glob(".*.part"))  # atomic writes leave no partial files


def test_floor_trains_like_portanet() -> None:
    """The floor (lr folded into the output gradient, L2 as W *= 1 - lr*l2) is the same
    training step as portanet.fit with l2: one full-batch step gives the same weights."""
    import portanet
    from bench import workloads
    from bench.common import host_params, mlp

    rng = np.random.default_rng(0)
    X = rng.random((64, 784), dtype=np.float32)
    y = rng.integers(0, 10, size=64)
    model = mlp(portanet.get_backend("numpy", "float64"), hidden=32, seed=0)
    floor = workloads.ArrayModuleFloor(np, host_params(model), batch=64, lr=0.5, seed=0,
                                       reg=0.01)
    floor.run(X.astype(np.float64), y)
    portanet.fit(model, X, y, optimizer=portanet.optim.SGD(0.5), l2=0.01, batch_size=None)
    state = model.state_dict()
    for ours, theirs in (("0.W", floor.W1), ("0.b", floor.b1), ("2.W", floor.W2),
                         ("2.b", floor.b2)):
        np.testing.assert_allclose(state[ours], theirs, rtol=1e-10, atol=1e-12, err_msg=ours)


def test_phased_floor_is_the_floor() -> None:
    """The profile's phased floor runs the floor's own step: same weights after an epoch."""
    from bench import workloads
    from bench.common import plan_for
    from bench.profile import _PhasedFloor

    rng = np.random.default_rng(1)
    params = {"W1": rng.normal(size=(784, 16)).astype(np.float32) * 0.05,
              "b1": np.zeros(16, np.float32),
              "W2": rng.normal(size=(16, 10)).astype(np.float32) * 0.05,
              "b2": np.zeros(10, np.float32)}
    X = rng.random((300, 784), dtype=np.float32)
    y = rng.integers(0, 10, size=300)
    plan = plan_for("tiny")
    phased = _PhasedFloor(params, plan)
    plain = workloads.ArrayModuleFloor(np, params, plan.batch, plan.lr, plan.seed, plan.l2)
    phases = phased.epoch(X, y)
    plain.run(X, y)
    assert phases["total"] > 0 and phases["optimizer.step"] > 0
    for name in ("W1", "b1", "W2", "b2"):
        np.testing.assert_array_equal(getattr(phased, name), getattr(plain, name))


def test_ops_count_sees_the_optimizer_update_once_for_all_parameters() -> None:
    """bench.ops counts one training step on the torch backend; Adam over all parameters at
    once costs about a dozen operations, not a dozen per parameter (8 in cnn-fast)."""
    import pytest

    pytest.importorskip("torch")
    from bench.ops import count_step

    counts = count_step("cnn-fast", batch=4)
    assert counts["ops_per_step"] == sum(counts["by_op"].values())
    assert counts["by_op"]["aten.sqrt.default"] == 1  # Adam's one square root
    assert counts["ops_per_step"] <= 100



def test_the_pytorch_networks_compute_the_presets_functions() -> None:
    """The CNN benchmark's PyTorch side is the same network as each preset: with the preset's
    weights and statistics copied in, it gives the same outputs (layer order included)."""
    import pytest

    torch = pytest.importorskip("torch")
    import portanet as pn
    from bench.cnn import torch_net
    from portanet.app.recipes import PRESETS

    x = np.random.default_rng(0).normal(size=(8, 1, 28, 28)).astype(np.float32)
    for preset in ("cnn-fast", "cnn"):
        model = PRESETS[preset].build(pn.get_backend("numpy"), seed=0)
        rng = np.random.default_rng(1)
        for layer in model.layers:  # statistics away from their defaults, so order matters
            for key in getattr(layer, "buffers", None) or {}:
                layer.buffers[key] = rng.uniform(0.5, 1.5, layer.buffers[key].shape).astype(
                    np.float32) - (0.5 if key == "running_mean" else 0.0)
        model.eval()
        net = torch_net(preset).eval()
        modules = [m for m in net if any(True for _ in m.parameters())]
        layers = [layer for layer in model.layers if layer.params]
        assert len(modules) == len(layers), preset
        with torch.no_grad():
            for module, layer in zip(modules, layers, strict=True):
                p = {k: torch.from_numpy(np.asarray(v)) for k, v in layer.params.items()}
                if "gamma" in p:
                    module.weight.copy_(p["gamma"])
                    module.bias.copy_(p["beta"])
                    module.running_mean.copy_(torch.from_numpy(layer.buffers["running_mean"]))
                    module.running_var.copy_(torch.from_numpy(layer.buffers["running_var"]))
                else:
                    module.weight.copy_(p["W"] if p["W"].ndim == 4 else p["W"].T)
                    module.bias.copy_(p["b"])
            expected = net(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(pn.predict_proba(model, x), torch.softmax(
            torch.from_numpy(expected), dim=1).numpy(), rtol=1e-4, atol=1e-6, err_msg=preset)


def test_the_limit_times_every_matrix_product_of_a_cnn_fast_step() -> None:
    """``bench.cnn.product_shapes`` (the matrix-product limit) lists the products one
    training step of cnn-fast computes, no more and no fewer (either orientation)."""
    import collections

    import pytest

    pytest.importorskip("torch")
    from torch.utils._python_dispatch import TorchDispatchMode

    import portanet as pn
    from bench.cnn import product_shapes
    from portanet.app.recipes import PRESETS
    from portanet.losses import as_loss, softmax_cross_entropy

    def key(left: tuple[int, ...], right: tuple[int, ...]) -> tuple[int, tuple[int, ...]]:
        return left[1], tuple(sorted((left[0], right[1])))  # inner size, outer sizes

    class Products(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.seen: collections.Counter[tuple[int, tuple[int, ...]]] = collections.Counter()

        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (),
                               kwargs: Any = None) -> Any:
            if str(func) in ("aten.mm.default", "aten.addmm.default"):
                a, b = args[-2:]
                self.seen[key(tuple(a.shape), tuple(b.shape))] += 1
            return func(*args, **(kwargs or {}))

    n = 6
    backend = pn.get_backend("torch", "float32", seed=0, device="cpu")
    model = PRESETS["cnn-fast"].build(backend, seed=0)
    loss = as_loss(softmax_cross_entropy)
    rng = np.random.default_rng(0)
    x = backend.asarray(rng.random((n, 1, 28, 28), dtype=np.float32))
    target = loss.prepare(backend.asarray(rng.integers(0, 10, n)), 10, backend.dtype)
    with Products() as products:
        model.backward(loss.gradient(model.forward_unchecked(x), target), need_input_grad=False)
    listed = collections.Counter(key(left, right) for left, right, _ in product_shapes(n))
    assert products.seen == listed


def test_augment_benchmark_prints_a_row_per_augmentation(
        capsys: pytest.CaptureFixture[str]) -> None:
    from bench import augment

    assert augment.main(["--batches", "4", "--repeats", "1", "--data", "random"]) == 0
    printed = capsys.readouterr().out
    for name in ("RandomShift(2)", "RandomAffine (cnn-best)", "ElasticDistortion(34, 4)",
                 "Compose(affine, elastic)", "cnn-best step without augmentation"):
        assert f"| {name} | " in printed
