"""portanet: small neural networks written once against the Python array API.

The same code trains on NumPy (CPU), CuPy (CUDA GPUs), array-api-strict and PyTorch, chosen at
run time with :func:`get_backend` or the ``PORTANET_BACKEND`` environment variable.

The public names below load their modules on first use, so ``import portanet.data`` does not
load the training loop and ``import portanet`` loads neither (nor the command line).

The package has two floors. The core (everything outside ``portanet/app/``) is the library:
layers, model, losses, optimizers, training, data, the backend table, saving, the parallel
engine and the own-digit reader. The application (``portanet/app/``) is the ``portanet``
command with its presets, reports, plots, self-check and draw page. The core never imports it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from portanet import _moved
from portanet.backend import Backend, BackendUnavailableError, get_backend
from portanet.version import __version__

_moved.install()

if TYPE_CHECKING:
    from portanet import data, init, losses, optim
    from portanet.app import metrics, recipes
    from portanet.app.self_check import check
    from portanet.inference import evaluate, predict, predict_proba
    from portanet.layers import (
        AvgPool2D,
        BatchNorm,
        Conv2D,
        Dense,
        Dropout,
        Ensemble,
        Flatten,
        Layer,
        MaxPool2D,
        ReLU,
        Sigmoid,
        Softmax,
        Tanh,
    )
    from portanet.model import Sequential, ensemble, ensemble_members
    from portanet.saving.npz import load, save  # noqa: F401 (load is public but not in __all__)
    from portanet.saving.onnx_export import export_onnx
    from portanet.train import Callback, DivergedError, History, fit

_HOMES = {
    **dict.fromkeys(("data", "init", "losses", "optim"), None),
    "metrics": "portanet.app.metrics",
    "recipes": "portanet.app.recipes",
    "datasets": "portanet.datasets",  # the old name of portanet.data (see portanet._moved)
    "check": "portanet.app.self_check",
    **dict.fromkeys(("load", "save"), "portanet.saving.npz"),
    **dict.fromkeys(("AvgPool2D", "BatchNorm", "Conv2D", "Dense", "Dropout", "Ensemble",
                     "Flatten", "Layer", "MaxPool2D", "ReLU", "Sigmoid", "Softmax", "Tanh"),
                    "portanet.layers"),
    **dict.fromkeys(("Sequential", "ensemble", "ensemble_members"), "portanet.model"),
    "export_onnx": "portanet.saving.onnx_export",
    **dict.fromkeys(("Callback", "DivergedError", "History", "fit"), "portanet.train"),
    **dict.fromkeys(("evaluate", "predict", "predict_proba"), "portanet.inference"),
}
"""Each lazily loaded public name and its home: a module to take the name from, a module that
is the value (``metrics``, ``recipes``, ``datasets``), or ``None`` for a submodule."""

_MODULE_VALUES = {"metrics", "recipes", "datasets"}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        try:  # a public submodule (pn.data) or any other (pn.train, pn.parallel)
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    module = importlib.import_module(home)
    value = module if name in _MODULE_VALUES else getattr(module, name)
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
    "Ensemble",
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
    "ensemble",
    "ensemble_members",
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
