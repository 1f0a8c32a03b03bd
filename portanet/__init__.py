"""portanet: small neural networks written once against the Python array API.

The same code trains on NumPy (CPU), CuPy (CUDA GPUs), array-api-strict and PyTorch, chosen at
run time with :func:`get_backend` or the ``PORTANET_BACKEND`` environment variable.

The public names below load their modules on first use, so ``import portanet.data`` does not
load the training loop and ``import portanet`` loads neither (nor the command line).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from portanet._version import __version__
from portanet.backend import Backend, BackendUnavailableError, get_backend

# ``check`` is both a module and the function it exports: imported here, first, so that a later
# ``import portanet.check`` does not rebind ``portanet.check`` to the module.
from portanet.check import check

if TYPE_CHECKING:
    from portanet import data, datasets, init, losses, metrics, optim, recipes
    from portanet.inference import evaluate, predict, predict_proba
    from portanet.io import load, save  # noqa: F401 (load is public but not in __all__)
    from portanet.layers import (
        AvgPool2D,
        BatchNorm,
        Conv2D,
        Dense,
        Dropout,
        Flatten,
        Layer,
        MaxPool2D,
        ReLU,
        Sigmoid,
        Softmax,
        Tanh,
    )
    from portanet.model import Sequential
    from portanet.onnx_export import export_onnx
    from portanet.train import Callback, DivergedError, History, fit

_HOMES = {
    **dict.fromkeys(("data", "datasets", "init", "losses", "metrics", "optim", "recipes"), None),
    **dict.fromkeys(("load", "save"), "portanet.io"),
    **dict.fromkeys(("AvgPool2D", "BatchNorm", "Conv2D", "Dense", "Dropout", "Flatten", "Layer",
                     "MaxPool2D", "ReLU", "Sigmoid", "Softmax", "Tanh"), "portanet.layers"),
    "Sequential": "portanet.model",
    "export_onnx": "portanet.onnx_export",
    **dict.fromkeys(("Callback", "DivergedError", "History", "fit"), "portanet.train"),
    **dict.fromkeys(("evaluate", "predict", "predict_proba"), "portanet.inference"),
}
"""Each lazily loaded public name and the module it comes from (``None``: a submodule)."""


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        try:  # a public submodule (pn.data) or any other (pn.io, pn.train)
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})


__all__ = [
    "AvgPool2D",
    "Backend",
    "BatchNorm",
    "BackendUnavailableError",
    "Callback",
    "Conv2D",
    "Dense",
    "DivergedError",
    "Dropout",
    "Flatten",
    "History",
    "Layer",
    "MaxPool2D",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "Softmax",
    "Tanh",
    "check",
    "evaluate",
    "export_onnx",
    "fit",
    "get_backend",
    "data",
    "datasets",
    "init",
    "losses",
    "metrics",
    "optim",
    "predict",
    "predict_proba",
    "recipes",
    "save",
    "__version__",
]
