"""Small example instances of every layer type, with a per-sample input shape each.

The layer contract test (tests/test_layer_contract.py) runs on every entry. A new layer type
needs only an entry here (the contract test fails until every registered portanet layer has
one); a layer with variants worth checking (strides, paddings) gets several.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import portanet as pn


@dataclass(frozen=True)
class Example:
    """``make()`` builds a fresh layer; ``input_shape`` is one sample's shape."""

    id: str
    make: Callable[[], pn.Layer]
    input_shape: tuple[int, ...]
    stochastic: bool = False  # forward draws random numbers in training (Dropout)
    differs_in_eval: bool = False  # training and evaluation outputs differ
    trained: bool = True  # False: backward refuses (an Ensemble is combined, not trained)


EXAMPLES = [
    Example("Dense", lambda: pn.Dense(5, 3), (5,)),
    Example("ReLU", lambda: pn.ReLU(), (2, 3, 2)),
    Example("Sigmoid", lambda: pn.Sigmoid(), (5,)),
    Example("Tanh", lambda: pn.Tanh(), (5,)),
    Example("Softmax", lambda: pn.Softmax(), (4,)),
    Example("Dropout", lambda: pn.Dropout(0.5), (6,), stochastic=True, differs_in_eval=True),
    Example("Flatten", lambda: pn.Flatten(), (2, 3, 2)),
    Example("Conv2D", lambda: pn.Conv2D(2, 3, 3), (2, 5, 6)),
    Example("Conv2D-stride2-pad1", lambda: pn.Conv2D(2, 3, 3, stride=2, padding=1), (2, 5, 6)),
    Example("Conv2D-same-2x3", lambda: pn.Conv2D(2, 2, (2, 3), padding="same"), (2, 4, 5)),
    Example("Conv2D-3x1-stride(2,1)", lambda: pn.Conv2D(1, 2, (3, 1), stride=(2, 1)), (1, 6, 4)),
    Example("MaxPool2D", lambda: pn.MaxPool2D(2), (2, 4, 6)),
    Example("MaxPool2D-ragged", lambda: pn.MaxPool2D(2), (2, 5, 5)),
    Example("MaxPool2D-overlap", lambda: pn.MaxPool2D(3, stride=2), (2, 5, 6)),
    Example("AvgPool2D", lambda: pn.AvgPool2D(2), (2, 4, 6)),
    Example("AvgPool2D-overlap", lambda: pn.AvgPool2D((2, 3), stride=1), (1, 4, 5)),
    Example("BatchNorm-2d", lambda: pn.BatchNorm(4), (4,), differs_in_eval=True),
    Example("BatchNorm-4d", lambda: pn.BatchNorm(3, momentum=0.2), (3, 3, 4),
            differs_in_eval=True),
    Example("Ensemble", lambda: pn.Ensemble([
        [{"type": "Dense", "in_features": 5, "out_features": 3}],
        [{"type": "Dense", "in_features": 5, "out_features": 4},
         {"type": "BatchNorm", "num_features": 4}, {"type": "ReLU"},
         {"type": "Dense", "in_features": 4, "out_features": 3}]]), (5,), trained=False),
    Example("Ensemble-shift1", lambda: pn.Ensemble([
        [{"type": "Conv2D", "in_channels": 2, "out_channels": 3, "kernel_size": 3},
         {"type": "Flatten"}, {"type": "Dense", "in_features": 48, "out_features": 3}]],
        shift=1), (2, 6, 6), trained=False),
]
