"""ONNX export (portanet.saving.onnx_export): the layers' own forward pass recorded by ndonnx.

Every layer example of tests/layer_examples.py round-trips through onnxruntime at batch 1 and
257 from one file; every preset does after a short training run; the file is the same bytes
from every backend; bad input gets one line naming the problem.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

import portanet as pn
from portanet.app import cli, recipes
from portanet.backend import cuda_status
from portanet.layers import LAYER_TYPES
from portanet.saving import onnx_export
from tests.helpers import distinct_input, make_dataset
from tests.layer_examples import EXAMPLES, Example

pytestmark = pytest.mark.skipif(sys.version_info < (3, 11), reason="ndonnx needs Python 3.11")

IDS = [e.id for e in EXAMPLES]
TOL = {"rtol": 1e-5, "atol": 2e-6}


def layer_model(example: Example, backend: pn.Backend | str = "numpy") -> pn.Sequential:
    """The example layer in a small model (flattened when its output is not a vector), with
    non-trivial parameters and buffers, in training mode (the export must not care)."""
    layer = example.make()
    flat = len(layer.output_shape(example.input_shape)) != 1
    model = pn.Sequential([layer, pn.Flatten()] if flat else [layer], backend=backend, seed=0,
                          input_shape=example.input_shape)
    rng = np.random.default_rng(5)
    state = {name: value + rng.normal(size=value.shape).astype(value.dtype) * 0.3
             for name, value in model.state_dict().items()}
    state.update({name: np.abs(state[name]) + 0.1 for name in state if "running_var" in name})
    model.load_state_dict(state)
    return model.train()


def portanet_outputs(model: pn.Sequential, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Logits (eval mode) and predict_proba of a NumPy model."""
    model.eval()
    logits = model.forward(model.backend.asarray(X))
    return model.backend.to_numpy(logits), pn.predict_proba(model, X)


def test_every_layer_type_has_an_export_example() -> None:
    """The export round trip runs on tests/layer_examples.py: a layer type without an entry
    there is not known to export, and fails here."""
    covered = {type(e.make()).__name__ for e in EXAMPLES}
    ours = {name for name, cls in LAYER_TYPES.items() if cls.__module__.startswith("portanet.")}
    missing = sorted(ours - covered)
    assert not missing, f"layer types without an export example: {missing}"


@pytest.mark.parametrize("example", EXAMPLES, ids=IDS)
def test_layer_round_trip_batch_1_and_257(example: Example, tmp_path: Path) -> None:
    """One file, a symbolic batch: onnxruntime equals portanet's eval forward at both sizes."""
    model = layer_model(example)
    path = pn.export_onnx(model, tmp_path / "layer.onnx")
    assert all(layer.training for layer in model.layers)  # the model's mode is left alone
    for batch in (1, 257):
        X = distinct_input((batch, *example.input_shape), seed=batch).astype(np.float32)
        got = onnx_export.run_onnx(path, X)
        logits, probabilities = portanet_outputs(model, X)
        assert got["logits"].shape == logits.shape and got["logits"].dtype == np.float32
        np.testing.assert_allclose(got["logits"], logits, **TOL)
        np.testing.assert_allclose(got["probabilities"], probabilities, **TOL)
        model.train()


def test_graph_records_the_layers_math_not_an_exporter() -> None:
    """A Dense layer exports as its own matrix product and addition: no Gemm or Conv node, and
    (on the export backend) no transpose of the weights."""
    model = pn.Sequential([pn.Dense(4, 3)], backend="numpy", seed=0)
    ops = [node.op_type for node in onnx_export.onnx_model(model).graph.node]
    assert "Gemm" not in ops and "Transpose" not in ops and "Conv" not in ops


def short_training(name: str, X: np.ndarray, y: np.ndarray) -> pn.Sequential:
    recipe = recipes.get_recipe(name).replace(epochs=1)
    model = recipe.build("numpy", seed=0, in_features=784, classes=10)
    shape = model.input_shape or (784,)
    arguments = recipe.fit_arguments(samples=len(X))
    if name == "tiny":  # full-batch: one step would leave it at its random start
        arguments["epochs"] = 5
    pn.fit(model, X.reshape(-1, *shape), y, **arguments)
    return model


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    path = make_dataset(tmp_path_factory.mktemp("data") / "small.npz", n_train=300,
                        n_test=1000)
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


@pytest.mark.parametrize("name", list(recipes.PRESETS))
def test_every_preset_after_short_training(name: str, images: dict[str, np.ndarray],
                                           tmp_path: Path) -> None:
    """1,000 test images: the same predicted class for every one, probabilities within
    float32 tolerance, and a file about the size of the parameters."""
    X = images["x_train"].reshape(-1, 784).astype(np.float32) / 255
    model = short_training(name, X, images["y_train"].astype(np.int64))
    path = pn.export_onnx(model, tmp_path / f"{name}.onnx", dataset="synthetic")
    shape = model.input_shape or (784,)
    X_test = images["x_test"].reshape(-1, *shape).astype(np.float32) / 255
    got = onnx_export.run_onnx(path, X_test)
    expected = pn.predict_proba(model, X_test)
    np.testing.assert_array_equal(np.argmax(got["probabilities"], axis=1),
                                  pn.predict(model, X_test))
    np.testing.assert_allclose(got["probabilities"], expected, rtol=1e-4, atol=1e-5)
    weights = 4 * model.num_parameters() + 4 * sum(int(np.prod(b.shape))
                                                   for _, b in model.named_buffers())
    # The weights plus the graph: under 50 kB per matrix product (ndonnx wraps each in an If
    # against an onnxruntime bug with empty inputs, 30-45 kB each). mlp1024: 1.02x.
    products = sum(isinstance(layer, (pn.Dense, pn.Conv2D)) for layer in model.layers)
    assert weights <= os.path.getsize(path) <= weights + 50_000 * products


def test_metadata_names_version_layers_labels_scaling_and_data(tmp_path: Path) -> None:
    import onnx

    model = pn.Sequential([pn.Conv2D(1, 2, 5), pn.MaxPool2D(2), pn.Flatten(),
                           pn.Dense(2 * 12 * 12, 3)], backend="numpy", seed=0,
                          input_shape=(1, 28, 28))
    path = pn.export_onnx(model, tmp_path / "m.onnx", class_names=["cat", "dog"],
                          dataset="pets", verify=False)
    proto = onnx.load(path)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["portanet_version"] == pn.__version__ == proto.producer_version
    assert [layer["type"] for layer in json.loads(meta["layers"])][:2] == ["Conv2D", "MaxPool2D"]
    assert json.loads(meta["class_labels"]) == ["cat", "dog", "2"]
    assert "255" in meta["input_scaling"] and meta["dataset"] == "pets"
    assert json.loads(meta["input_shape"]) == [1, 28, 28]
    (image,) = proto.graph.input
    dims = image.type.tensor_type.shape.dim
    assert image.name == "images" and image.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [1, 28, 28]
    assert [o.name for o in proto.graph.output] == ["logits", "probabilities"]


def test_same_file_from_every_backend(tmp_path: Path) -> None:
    """A model loaded on array-api-strict, PyTorch, CuPy (where a GPU is usable) or in float64
    exports to the same bytes as on NumPy (float32): the parameters pass through host NumPy."""
    model = pn.Sequential([pn.Dense(6, 8), pn.BatchNorm(8), pn.ReLU(), pn.Dense(8, 3)],
                          backend="numpy", seed=0)  # Dense: its weights' layout differs by backend
    pn.fit(model, np.random.default_rng(0).random((64, 6), dtype=np.float32),
           np.arange(64) % 3, epochs=1)  # BatchNorm's running statistics move
    saved = pn.save(model, tmp_path / "cnn.npz")
    reference = Path(pn.export_onnx(model, tmp_path / "numpy.onnx")).read_bytes()
    targets = [("numpy", "float64")] + [(name, None) for name in ("array_api_strict", "torch")
                                         if importlib.util.find_spec(name)]
    targets += [("cupy", None)] if cuda_status()[0] else []
    for backend, dtype in targets:
        loaded = pn.load(saved, backend=backend, dtype=dtype)
        path = pn.export_onnx(loaded, tmp_path / f"{backend}-{dtype}.onnx")
        assert Path(path).read_bytes() == reference, (backend, dtype)


# --- the command line and bad input -----------------------------------------------------------


def saved_mlp(tmp_path: Path) -> Path:
    model = pn.Sequential([pn.Dense(784, 16), pn.ReLU(), pn.Dense(16, 10)], backend="numpy",
                          seed=0)
    return pn.save(model, tmp_path / "mlp.npz", dataset="fashion-mnist")


def test_cli_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import onnx

    model_path = saved_mlp(tmp_path)
    out = tmp_path / "deploy" / "mlp.onnx"
    assert cli.main(["export", str(model_path), str(out)]) == 0
    assert "verified in onnxruntime" in capsys.readouterr().out
    assert cli.main(["export", str(model_path), str(tmp_path / "fast.onnx"), "--no-verify"]) == 0
    assert "not verified" in capsys.readouterr().out
    assert (tmp_path / "fast.onnx").read_bytes() == out.read_bytes()
    meta = {p.key: p.value for p in onnx.load(out).metadata_props}
    assert meta["dataset"] == "fashion-mnist" and "Ankle boot" in meta["class_labels"]
    X = np.random.default_rng(0).random((5, 784), dtype=np.float32)
    np.testing.assert_allclose(onnx_export.run_onnx(out, X)["probabilities"],
                               pn.predict_proba(pn.load(model_path), X), **TOL)


@pytest.mark.parametrize("case", ["input", "folder", "fifo", "missing"])
def test_cli_refuses_bad_paths(case: str, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    model_path = saved_mlp(tmp_path)
    before = model_path.read_bytes()
    model, out = str(model_path), str(tmp_path / "out.onnx")
    if case == "input":
        out = model
    elif case == "folder":
        os.mkdir(out)
    elif case == "fifo":
        os.mkfifo(out)
    else:
        model = str(tmp_path / "nothing.npz")
    assert cli.main(["export", model, out]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("portanet export: ") and len(error.splitlines()) == 1
    expected = {"input": "same file as the model file", "folder": "is a folder",
                "fifo": "FIFO", "missing": "does not exist"}[case]
    assert expected in error
    assert model_path.read_bytes() == before


def test_model_without_input_shape_names_the_fix(tmp_path: Path) -> None:
    model = pn.Sequential([pn.Flatten(), pn.Dense(784, 10)], backend="numpy", seed=0)
    with pytest.raises(ValueError, match=r"no input shape.*input_shape=\(1, 28, 28\)"):
        pn.export_onnx(model, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


class HostClip(pn.Layer):
    """A user's layer that leaves the array API (NumPy on the host): it cannot be recorded."""

    keeps_shape = True

    def forward(self, x: object) -> object:
        return np.clip(np.asarray(x), 0, 1)


class _Hidden(pn.Layer):
    keeps_shape = True

    def forward(self, x: object) -> object:
        return x


@pytest.mark.parametrize("layer, why", [
    (HostClip(), r"layer 1 \(HostClip\(\)\) cannot be exported .*forward pass failed on ndonnx"),
    (_Hidden(), r"layer 1 \(_Hidden\) .*not a registered"),
])
def test_layer_that_cannot_be_exported_says_which_and_why(layer: pn.Layer, why: str,
                                                          tmp_path: Path) -> None:
    model = pn.Sequential([pn.Dense(4, 3), layer], backend="numpy", seed=0)
    with pytest.raises(ValueError, match=why) as caught:
        pn.export_onnx(model, tmp_path / "m.onnx")
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "m.onnx").exists()


def test_unknown_layer_in_a_model_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                       ) -> None:
    model = pn.Sequential([pn.Dense(4, 3), HostClip()], backend="numpy", seed=0)
    path = pn.save(model, tmp_path / "m.npz")
    del LAYER_TYPES["HostClip"]  # a file naming a layer type this process does not know
    try:
        assert cli.main(["export", str(path), str(tmp_path / "m.onnx")]) == 2
    finally:
        LAYER_TYPES["HostClip"] = HostClip
    assert "unknown type 'HostClip'" in capsys.readouterr().err


@pytest.mark.parametrize("module", ["ndonnx", "onnxruntime"])
def test_missing_library_gives_the_pip_line(module: str, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    model_path = saved_mlp(tmp_path)
    with pytest.raises(ImportError, match=f"needs {module}" + r'.*pip install "portanet\[onnx\]"'):
        pn.export_onnx(pn.load(model_path), tmp_path / "m.onnx")
    assert cli.main(["export", str(model_path), str(tmp_path / "m.onnx")]) == 1
    assert 'pip install "portanet[onnx]"' in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()


def test_a_failed_verification_writes_nothing(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    model = pn.Sequential([pn.Dense(4, 3)], backend="numpy", seed=0)
    out = tmp_path / "m.onnx"
    out.write_bytes(b"the previous export")

    def wrong(data: bytes, images: np.ndarray) -> dict[str, np.ndarray]:
        return {"probabilities": np.zeros((len(images), 3), np.float32)}

    monkeypatch.setattr(onnx_export, "run_onnx", wrong)
    with pytest.raises(ValueError, match="does not reproduce the model"):
        pn.export_onnx(model, out)
    assert out.read_bytes() == b"the previous export"


def test_readme_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    """README's "Deploying with ONNX" onnxruntime example, on an exported MLP."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Deploying with ONNX", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    model = pn.Sequential([pn.Dense(784, 10)], backend="numpy", seed=0)
    pn.export_onnx(model, tmp_path / "model.onnx")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    assert capsys.readouterr().out.strip() == str(pn.predict(model, np.zeros((1, 784))))


def test_bench_onnx_runs_and_ends_with_json() -> None:
    """``python -m bench.onnx`` on a few random images: every row is there, outputs agree."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-m", "bench.onnx", "--images", "64", "--repeats", "1",
                           "--presets", "mlp1024", "--no-torch", "--random"],
                          cwd=root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    rows = result["presets"]["mlp1024"]["rows"]
    assert set(rows) == {"onnxruntime", "onnxruntime native ops", "portanet evaluate"}
    assert rows["onnxruntime"]["max_abs_diff"] < 1e-5 and rows["onnxruntime"]["images_per_s"] > 0
