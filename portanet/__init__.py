"""portanet: small neural networks written once against the Python array API.

The same code trains on NumPy (CPU), CuPy (CUDA GPUs), array-api-strict and PyTorch, chosen at
run time with :func:`get_backend` or the ``PORTANET_BACKEND`` environment variable.
"""

from portanet import data, datasets, init, losses, metrics, optim, recipes
from portanet.backend import Backend, BackendUnavailableError, get_backend
from portanet.check import check
from portanet.io import load, save
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
from portanet.train import (
    Callback,
    DivergedError,
    History,
    evaluate,
    fit,
    predict,
    predict_proba,
)

__version__ = "0.1.0"

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
    "load",
    "losses",
    "metrics",
    "optim",
    "predict",
    "predict_proba",
    "recipes",
    "save",
    "__version__",
]
