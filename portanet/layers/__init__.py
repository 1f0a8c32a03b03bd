"""Layers: explicit forward/backward pairs, each owning its ``params``, ``grads`` and ``buffers``.

One module per family; every layer class registers itself in :data:`LAYER_TYPES` when it is
defined (see :mod:`portanet.layers.base` for the contract).
"""

from portanet.layers.activations import ReLU, Sigmoid, Softmax, Tanh, softmax
from portanet.layers.base import LAYER_TYPES, Layer, Shape
from portanet.layers.convolution import Conv2D
from portanet.layers.dense import Dense
from portanet.layers.ensemble import Ensemble
from portanet.layers.normalisation import BatchNorm, Dropout
from portanet.layers.pooling import AvgPool2D, MaxPool2D
from portanet.layers.reshaping import Flatten

__all__ = [
    "LAYER_TYPES", "AvgPool2D", "BatchNorm", "Conv2D", "Dense", "Dropout", "Ensemble", "Flatten",
    "Layer", "MaxPool2D", "ReLU", "Shape", "Sigmoid", "Softmax", "Tanh", "softmax",
]
