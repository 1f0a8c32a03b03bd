"""An ensemble as one layer: several trained networks whose class probabilities are averaged.

For members ``f_1 .. f_K`` (each a list of layers ending in class scores)::

    p(x)   = (1/K) * sum_k softmax(f_k(x))
    out(x) = log p(x)

so ``softmax(out) == p``: every consumer of a model's scores (evaluation, prediction, the draw
page, ONNX export) gets the averaged probabilities unchanged. With ``shift`` = s > 0 the mean
also runs over views of each image (test-time augmentation): the image itself and four copies
moved by s pixels up, down, left and right, zeros filled in, so ``p`` is the mean over
K * 5 softmax outputs; one member is then enough. ``log p`` is computed as a
log-sum-exp of the members' log-softmax outputs, finite wherever the scores are. An ensemble is
for inference: its members are trained on their own, then combined with
:func:`portanet.ensemble`; ``fit`` refuses a model holding one.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from portanet.backend import Backend
from portanet.layers.base import LAYER_TYPES, Layer, Shape
from portanet.layers.convolution import pad


def _member_layer(k: int, j: int, spec: Any) -> Layer:
    """Layer ``j`` of member ``k`` from its saved spec ``{"type": name, **config}``."""
    if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
        raise ValueError(f"Ensemble member {k} layer {j} is not described by an object with a "
                         f"'type', got {spec!r}")
    spec = dict(spec)
    name = spec.pop("type")
    cls = LAYER_TYPES.get(name)
    if cls is None or cls is Ensemble:
        raise ValueError(f"Ensemble member {k} layer {j} has the type {name!r}, which is not "
                         f"a layer an ensemble member can hold")
    return cls(**spec)


class Ensemble(Layer):
    """The log of the mean of the members' softmax outputs (see the module docstring).

    Args:
        members: one list of layer specs per member, each spec ``{"type": class name,
            **layer.config()}`` (what :func:`portanet.ensemble` writes); at least two, or one
            with ``shift``.
        shift: pixels by which the four moved views of each image are moved (0: no views,
            the image alone). Needs image input (C, H, W) with ``shift`` below H/2 and W/2.

    Parameters and buffers are the members' own, keyed ``"k.j.name"`` (member ``k``, its
    layer ``j``): ``"1.0.W"`` is the second member's first weight.
    """

    trainable: ClassVar[bool] = False

    def __init__(self, members: list[list[dict[str, Any]]], shift: int = 0) -> None:
        super().__init__()
        check_shift(shift)
        if not isinstance(members, (list, tuple)) or len(members) < (1 if shift else 2):
            raise ValueError(f"an Ensemble needs at least two members (lists of layer specs), "
                             f"or one with shift > 0, got {members!r:.80}")
        self.shift = shift
        self._specs = [[dict(spec) for spec in member] for member in members]
        self.members = self.fresh_members()
        if not all(self.members):
            raise ValueError("an Ensemble member needs at least one layer")

    def fresh_members(self) -> list[list[Layer]]:
        """New, unbuilt layers for each member, made from the saved specs."""
        return [[_member_layer(k, j, spec) for j, spec in enumerate(member)]
                for k, member in enumerate(self._specs)]

    def _slots(self) -> list[tuple[str, Layer]]:
        """``("k.j.", layer)`` for every layer of every member."""
        return [(f"{k}.{j}.", layer) for k, member in enumerate(self.members)
                for j, layer in enumerate(member)]

    def build(self, backend: Backend, rng: np.random.Generator) -> None:
        super().build(backend, rng)
        for prefix, layer in self._slots():
            layer.build(backend, rng)
            self.params.update((prefix + key, value) for key, value in layer.params.items())
            self.buffers.update((prefix + key, value) for key, value in layer.buffers.items())

    def _owner(self, key: str) -> tuple[Layer, str]:
        k, j, name = key.split(".", 2)
        return self.members[int(k)][int(j)], name

    def load_param(self, key: str, host: np.ndarray) -> None:
        layer, name = self._owner(key)
        layer.load_param(name, host)
        self.params[key] = layer.params[name]

    def load_buffer(self, key: str, host: np.ndarray) -> None:
        layer, name = self._owner(key)
        layer.load_buffer(name, host)
        self.buffers[key] = layer.buffers[name]

    def state_shapes(self) -> dict[str, Shape]:
        return {prefix + key: shape for prefix, layer in self._slots()
                for key, shape in layer.state_shapes().items()}

    def check_state(self, state: dict[str, np.ndarray]) -> list[str]:
        problems = []
        for prefix, layer in self._slots():
            own = {key[len(prefix):]: value for key, value in state.items()
                   if key.startswith(prefix)}
            problems += [f"member {prefix.split('.')[0]}: {p}" for p in layer.check_state(own)]
        return problems

    def input_shape_hint(self) -> Shape | None:
        return self.members[0][0].input_shape_hint()

    def output_shape(self, input_shape: Shape) -> Shape:
        if self.shift and (len(input_shape) != 3 or 2 * self.shift >= min(input_shape[1:])):
            raise ValueError(f"an Ensemble with shift={self.shift} reads images (C, H, W) at "
                             f"least {2 * self.shift + 1} pixels high and wide, moved by "
                             f"{self.shift} pixels; its input is {tuple(input_shape)}: use "
                             f"shift=0 or a smaller shift")
        outputs = []
        for member in self.members:
            shape = tuple(input_shape)
            for layer in member:
                shape = layer.output_shape(shape)
            outputs.append(shape)
        if any(shape != outputs[0] or len(shape) != 1 for shape in outputs):
            raise ValueError(f"the Ensemble's members give outputs of shapes {outputs} for "
                             f"input {tuple(input_shape)}; all must give the same class scores")
        return outputs[0]

    def forward(self, x: Any) -> Any:
        """x: (N, *input_shape) -> (N, classes): ``log(mean_k,v softmax(f_k(view_v(x))))``,
        members in evaluation mode, views as :func:`shifted_views` gives them."""
        xp = self.xp
        logs = []
        for view in shifted_views(xp, x, self.shift):
            for member in self.members:
                z = view
                for layer in member:
                    layer.training = False
                    z = layer.forward(z)
                logs.append(log_softmax(xp, z))
        top = logs[0]
        for part in logs[1:]:
            top = xp.maximum(top, part)
        total = xp.exp(logs[0] - top)
        for part in logs[1:]:
            total = total + xp.exp(part - top)
        return top + xp.log(total) - math.log(len(logs))

    def backward(self, dout: Any, need_dx: bool = True) -> Any:
        raise TypeError("an Ensemble averages networks trained on their own and is not trained "
                        "itself: train each member with portanet.fit, then combine them with "
                        "portanet.ensemble(models)")

    def config(self) -> dict[str, Any]:
        return {"members": self._specs, "shift": self.shift}

    def __repr__(self) -> str:
        k = len(self.members)
        views = f", each read on 5 views shifted by {self.shift}" if self.shift else ""
        return (f"Ensemble({k} member{'s' if k > 1 else ''} of {len(self.members[0])} "
                f"layers{views})")


def check_shift(shift: Any) -> None:
    """Refuse a ``shift`` that is not a whole number of pixels >= 0."""
    if isinstance(shift, bool) or not isinstance(shift, int) or shift < 0:
        raise ValueError(f"an ensemble's shift must be an int >= 0 (pixels), got {shift!r}")


def shifted_views(xp: Any, x: Any, shift: int) -> list[Any]:
    """x: (N, C, H, W) -> ``[x]`` for ``shift`` 0, else ``x`` and its copies moved by ``shift``
    pixels down, up, right and left (zeros filled in), each (N, C, H, W)."""
    if not shift:
        return [x]
    c, h, w = x.shape[1], x.shape[2], x.shape[3]
    s = shift
    padded = pad(xp, x, (s, s, s, s), axes=(2, 3))
    windows = ((0, s), (2 * s, s), (s, 0), (s, 2 * s))  # top-left corners in ``padded``
    # The reshape only restates the shape, for tracers (ONNX export) that lose it in slicing.
    return [x] + [xp.reshape(padded[:, :, r:r + h, q:q + w], (-1, c, h, w))
                  for r, q in windows]


def log_softmax(xp: Any, z: Any) -> Any:
    """z: (N, classes) -> log softmax(z) along the classes, from the shifted scores."""
    shifted = z - xp.max(z, axis=1, keepdims=True)
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=1, keepdims=True))
