"""Export a model to ONNX by running its own forward pass on ndonnx arrays.

`ndonnx <https://github.com/Quantco/ndonnx>`_ is an array library that follows the Python array
API standard and records every operation into an ONNX graph instead of computing it. portanet's
layers are written against that standard, so the exporter has no per-layer code: it rebuilds the
model on an export-only backend whose namespace is ndonnx, copies the parameters in (through host
NumPy, whatever backend the model lives on), and calls the layers' ``forward`` in evaluation mode
(BatchNorm's running statistics, no dropout) on a symbolic batch. What the layers compute is what
the graph holds.

The ONNX model takes ``images``: float32 of shape (batch, *input_shape), the batch dynamic, pixels
scaled to [0, 1] as portanet scales them (``uint8 / 255``); it returns ``logits`` (the last
layer's output) and ``probabilities`` (their softmax, or the last layer's output when it is a
Softmax layer). Its metadata names the portanet version, the layers, the class labels, the input
scaling and the data set. The graph is always float32: a float64 model is exported in float32.

Needs ``pip install "portanet[onnx]"``: ndonnx, and onnxruntime, which ndonnx uses while
recording and which verifies and runs the file.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from portanet.backend import Backend
from portanet.backend.table import Seam
from portanet.file_checks import check_input_file, check_output_path
from portanet.files import atomic_write
from portanet.layers import LAYER_TYPES, Softmax, softmax
from portanet.model import Sequential, class_names_for
from portanet.version import __version__

__all__ = ["INPUT_NAME", "INPUT_SCALING", "INSTALL_HINT", "OUTPUT_NAMES", "export_onnx",
           "export_saved", "onnx_model", "run_onnx"]

INPUT_NAME = "images"
OUTPUT_NAMES = ("logits", "probabilities")
INPUT_SCALING = "float32 pixels in [0, 1]: uint8 pixel values divided by 255"
INSTALL_HINT = 'pip install "portanet[onnx]"'
BATCH_AXIS = "batch"
_VERIFY_BATCH = 3


def _import(module: str) -> Any:
    """``module`` imported, or a one-line ImportError with the ``pip install`` line."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        needs = " (ndonnx needs Python 3.11 or newer)" if module == "ndonnx" else ""
        raise ImportError(f"exporting to ONNX needs {module}, which is not installed: "
                          f"{INSTALL_HINT}{needs}") from None


def _ndonnx() -> Any:
    """ndonnx, after onnxruntime: ndonnx evaluates constant parts of the graph with it while
    recording (its fallback is incomplete), so exporting needs both."""
    _import("onnxruntime")
    return _import("ndonnx")


def _export_seam() -> Seam:
    """The seam row of the export-only backend: plain standard paths, no device, no fast path.

    Not a row of :data:`portanet.backend.table.SEAMS`: nothing trains or computes on ndonnx, so
    it is no backend a user can choose. Dense weights stay in (in, out) order (no transpose node).
    """

    def cannot(what: str) -> Any:
        def fail(*_: Any) -> Any:
            raise RuntimeError(f"ndonnx arrays are symbolic: they cannot {what}")
        return fail

    from contextlib import nullcontext

    return Seam("ndonnx", "ndonnx", "ndonnx", load=cannot("be loaded as a backend"),
                to_host=cannot("be copied to the host"), synchronize=lambda device: None,
                describe=lambda device: "ONNX graph", activate=lambda device: nullcontext(),
                transposed_weights=False)


@dataclasses.dataclass(eq=False)
class _ExportBackend(Backend):
    """A :class:`Backend` whose namespace is ndonnx: layers built on it record their forward
    pass into an ONNX graph. Its seam is :func:`_export_seam`, whatever rows ``SEAMS`` has."""

    @property
    def seam(self) -> Seam:
        return _export_seam()


def _export_backend() -> Backend:
    ndx = _ndonnx()
    return _ExportBackend(name="ndonnx", xp=ndx, device=None, dtype=ndx.float32,
                          rng=np.random.default_rng(0), note="ONNX export (ndonnx)")


def _rebuilt(model: Sequential, backend: Backend) -> Sequential:
    """A copy of ``model`` on ``backend`` (layers rebuilt from their configs, the parameters and
    buffers copied through host NumPy), in evaluation mode."""
    layers = []
    for i, layer in enumerate(model.layers):
        name = type(layer).__name__
        if LAYER_TYPES.get(name) is not type(layer):
            raise ValueError(f"layer {i} ({name}) cannot be exported to ONNX: it is not a "
                             f"registered portanet layer type (a class whose name starts with "
                             f"'_' is not registered); give it a public name")
        try:
            layers.append(type(layer)(**layer.config()))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"layer {i} ({layer!r}) cannot be exported to ONNX: its config() "
                             f"does not rebuild it ({exc})") from None
    copy = Sequential(layers, backend=backend, seed=0, input_shape=model.input_shape)
    copy.load_state_dict(model.state_dict())
    return copy.eval()


def _metadata(model: Sequential, class_names: Sequence[str] | None,
              dataset: str | None) -> dict[str, str]:
    layers = [{"type": type(layer).__name__, **layer.config()} for layer in model.layers]
    return {
        "portanet_version": __version__,
        "layers": json.dumps(layers),
        "input_shape": json.dumps(list(model.input_shape or ())),
        "class_labels": json.dumps(class_names_for(model, list(class_names or ()))),
        "input_scaling": INPUT_SCALING,
        "dataset": dataset or "",
    }


def onnx_model(
    model: Sequential,
    *,
    class_names: Sequence[str] | None = None,
    dataset: str | None = None,
) -> Any:
    """The ONNX ``ModelProto`` of ``model``'s inference forward pass (see the module docstring).

    Raises:
        ValueError: the model has no input shape, or a layer cannot be exported (one line
            naming the layer and why).
        ImportError: ndonnx or onnxruntime is not installed (the message has the ``pip install``
            line).
    """
    if model.input_shape is None:
        raise ValueError(
            "the model has no input shape, so the ONNX input cannot be declared: build it with "
            "Sequential(layers, input_shape=...), e.g. input_shape=(1, 28, 28) for a CNN on "
            "MNIST or (784,) for an MLP"
        )
    ndx = _ndonnx()
    copy = _rebuilt(model, _export_backend())
    images = ndx.argument(shape=(BATCH_AXIS, *model.input_shape), dtype=ndx.float32)
    x = images
    for i, layer in enumerate(copy.layers):
        try:
            x = layer.forward(x)
        except Exception as exc:  # whatever failed, name the layer in one line
            why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"layer {i} ({layer!r}) cannot be exported to ONNX: its forward "
                             f"pass failed on ndonnx arrays ({type(exc).__name__}: {why})"
                             ) from exc
    probabilities = x if isinstance(copy.layers[-1], Softmax) else softmax(ndx, x)
    proto = ndx.build({INPUT_NAME: images}, dict(zip(OUTPUT_NAMES, (x, probabilities),
                                                     strict=True)))
    proto.producer_name, proto.producer_version = "portanet", __version__
    proto.doc_string = f"portanet {model!r}; input {INPUT_NAME}: {INPUT_SCALING}"
    for key, value in _metadata(model, class_names, dataset).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto


def export_onnx(
    model: Sequential,
    path: str | os.PathLike[str],
    *,
    class_names: Sequence[str] | None = None,
    dataset: str | None = None,
    verify: bool = True,
) -> Path:
    """Write ``model`` as an ONNX file at ``path``, atomically; return ``path``.

    The model may live on any backend (its parameters are copied through host NumPy) and in
    any mode (the export is of evaluation mode; the model itself is left as it is).

    Args:
        model: a model with a known input shape.
        path: the ``.onnx`` file; the same rules as :func:`portanet.save` (a folder, FIFO or
            device is refused; a link is followed; a half-written file is never left behind).
        class_names: the class labels stored in the metadata (default: ``"0"``, ``"1"``, ...).
        dataset: the name of the data set the model was trained on, for the metadata.
        verify: run the graph in onnxruntime on a few random images and compare its
            probabilities with portanet's own before writing the file.

    Raises:
        ValueError: no input shape, a layer that cannot be exported, a bad output path, or a
            graph whose outputs differ from portanet's (``verify``).
        ImportError: ndonnx or onnxruntime is not installed; the message has the ``pip install``
            line.
    """
    check_output_path(path, what="the ONNX file")
    data = onnx_model(model, class_names=class_names, dataset=dataset).SerializeToString()
    if verify:
        _verify(model, data)
    return atomic_write(path, lambda f: f.write(data))


def run_onnx(model_bytes_or_path: bytes | str | os.PathLike[str], images: np.ndarray
             ) -> dict[str, np.ndarray]:
    """Run an exported model in onnxruntime on host ``images`` (float32, (batch, *shape)):
    ``{"logits": ..., "probabilities": ...}``."""
    ort = _import("onnxruntime")
    source = model_bytes_or_path
    if not isinstance(source, bytes):
        source = os.fspath(source)
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    outputs = session.run(list(OUTPUT_NAMES), {INPUT_NAME: np.asarray(images, np.float32)})
    return dict(zip(OUTPUT_NAMES, outputs, strict=True))


def _verify(model: Sequential, data: bytes) -> None:
    """The graph's probabilities on a few random images match portanet's (float32 tolerance)."""
    from portanet.inference import predict_proba

    images = np.random.default_rng(0).random((_VERIFY_BATCH, *model.input_shape),
                                             dtype=np.float32)
    got = run_onnx(data, images)["probabilities"]
    training = [layer.training for layer in model.layers]
    try:
        expected = predict_proba(model, images)
    finally:
        for layer, mode in zip(model.layers, training, strict=True):
            layer.training = mode
    expected = model.backend.to_numpy(expected) if not isinstance(expected, np.ndarray) \
        else expected
    worst = float(np.max(np.abs(got - expected)))
    if not worst <= 1e-4:
        raise ValueError(f"the exported graph does not reproduce the model: its probabilities "
                         f"differ from portanet's by up to {worst:.3g} on random images; "
                         f"nothing was written")


def export_saved(
    model_path: str | os.PathLike[str], path: str | os.PathLike[str], *, verify: bool = True
) -> str:
    """Export a model file saved by :func:`portanet.save` to ``path``, with the class labels
    and data set its metadata names; returns a one-line summary. What ``portanet export`` runs.

    Raises:
        ValueError, FileNotFoundError: a bad input or output path (the output may not be the
            input), a damaged model file, or what :func:`export_onnx` raises.
        ImportError: ndonnx or onnxruntime is not installed.
    """
    from portanet.data import get_spec
    from portanet.saving.npz import load, load_metadata

    check_input_file(model_path, what="the model file")
    check_output_path(path, {"the model file": model_path}, what="the ONNX file")
    model = load(model_path, backend="numpy")
    extra = load_metadata(model_path)["extra"]
    dataset = extra.get("dataset")
    names = extra.get("class_names")
    if not names and dataset:
        try:
            names = list(get_spec(str(dataset)).classes)
        except ValueError:
            names = None
    written = export_onnx(model, path, class_names=names,
                         dataset=str(dataset) if dataset else None, verify=verify)
    size = os.path.getsize(written)
    checked = "verified in onnxruntime" if verify else "not verified"
    return (f"wrote {written} ({size / 1e6:.2f} MB, input {INPUT_NAME} (batch, "
            f"{', '.join(map(str, model.input_shape or ()))}), {checked})")
