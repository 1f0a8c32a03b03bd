"""BatchNorm folded into the layer before it, for inference.

In evaluation mode BatchNorm is a fixed affine map per channel, ``y = x * scale + shift`` with
``scale = gamma / sqrt(running_var + eps)`` and ``shift = beta - running_mean * scale``. After
a Conv2D or Dense layer, whose outputs are ``W x + b`` per channel, the two are one layer:

    W' = W * scale   (each output channel's weights scaled),   b' = b * scale + shift.

:func:`fold_batchnorm` gives ``evaluate``/``predict`` a copy of the model built that way: the
same outputs up to float rounding, without BatchNorm's two passes over every activation (the
``cnn`` preset's first BatchNorm reads and writes 32 x 24 x 24 numbers per image). The model
itself is untouched; the copy shares every layer that is not folded.
"""

from __future__ import annotations

import copy
from typing import Any

from portanet.layers import BatchNorm, Conv2D, Dense, Ensemble, Layer


def fold_batchnorm(model: Any) -> Any:
    """``model`` for evaluation mode with every BatchNorm that directly follows a Conv2D or
    Dense layer of as many output channels folded into that layer (see the module), in the
    model and in each member of an :class:`~portanet.layers.Ensemble` it holds; the model
    itself where there is none. The copy is only for inference: training it would train
    copies of the folded layers' parameters."""
    layers = _folded_layers(model.layers)
    if layers is None:
        return model
    inference = copy.copy(model)
    inference.layers = layers
    return inference


def _folded_layers(layers: list[Layer]) -> list[Layer] | None:
    """``layers`` with each foldable BatchNorm folded, ensembles' members too; None if none."""
    out: list[Layer] = []
    folded = False
    for layer in layers:
        before = out[-1] if out else None
        if (isinstance(layer, BatchNorm) and isinstance(before, (Conv2D, Dense))
                and _channels(before) == layer.num_features):
            out[-1] = _folded(before, layer)
            folded = True
        elif isinstance(layer, Ensemble):
            members = [_folded_layers(member) for member in layer.members]
            if any(member is not None for member in members):
                layer = copy.copy(layer)
                layer.members = [new if new is not None else old
                                 for new, old in zip(members, layer.members, strict=True)]
                folded = True
            out.append(layer)
        else:
            out.append(layer)
    return out if folded else None


def _channels(layer: Conv2D | Dense) -> int:
    return layer.out_channels if isinstance(layer, Conv2D) else layer.out_features


def _folded(layer: Conv2D | Dense, norm: BatchNorm) -> Conv2D | Dense:
    """A copy of ``layer`` with ``norm`` (in evaluation mode) folded into its parameters."""
    xp = layer.xp
    scale = norm.params["gamma"] / xp.sqrt(norm.buffers["running_var"] + norm.eps)
    shift = norm.params["beta"] - norm.buffers["running_mean"] * scale
    w = layer.params["W"]
    per_output = (-1, 1, 1, 1) if isinstance(layer, Conv2D) else (1, -1)
    twin = copy.copy(layer)
    twin.params = {"W": w * xp.reshape(scale, per_output), "b": layer.params["b"] * scale + shift}
    twin.grads = {}
    return twin
