"""All of a model's parameters in one flat array, so that an optimizer updates them in one pass.

An optimizer with state (Adam, RMSProp, SGD with momentum) does about a dozen elementwise
operations per parameter per step; on a GPU each is a kernel launch, so for eight parameters
that is about a hundred launches. :class:`FlatParameters` copies the parameters once into one
flat array and hands each layer a view of its part (``layer.params`` keeps its names, shapes
and memory order); each step gathers the gradients with one ``concat``, and the optimizer's
elementwise update runs once over the flat arrays: the same arithmetic on every element as the
per-parameter update, so the results are identical (``tests/test_optim.py`` checks that).

Each parameter is laid out in the flat array in its layer's memory order
(:meth:`portanet.layers.Layer.memory_order`), so that flattening its gradient, which the layer
forms in that order, is a view and not a copy.

Where a parameter was replaced since the last step (``load_state_dict``, a user's assignment),
the flat array is gathered again from the current parameters; where the backend cannot update
arrays in place, each step hands the layers views of the new flat array.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def _inverse(order: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(order.index(axis) for axis in range(len(order)))


class FlatParameters:
    """The parameters of ``model`` as views of one flat array (:attr:`values`).

    Attributes:
        values: the flat parameter array, every parameter of the model a view of a part of it.
        weights: 1.0 where an element belongs to a weight (what weight decay touches), else 0.0.
    """

    def __init__(self, model: Any, is_weight: Any) -> None:
        self.backend = model.backend
        self.slots = model.parameter_slots()
        orders = [layer.memory_order(key) for layer in model.layers for key in layer.params]
        self.orders: list[tuple[int, ...] | None] = orders
        self.parts: list[tuple[int, int, tuple[int, ...]]] = []  # (start, stop, memory shape)
        offset, mask = 0, []
        for (_, params, _, key), order in zip(self.slots, orders, strict=True):
            p = params[key]
            shape = tuple(p.shape) if order is None else tuple(p.shape[a] for a in order)
            size = math.prod(shape)
            self.parts.append((offset, offset + size, shape))
            mask.append(np.full(size, 1.0 if is_weight(p) else 0.0))
            offset += size
        self.weights = self.backend.asarray(np.concatenate(mask))
        self._decay: tuple[float, Any] | None = None
        self.gather()

    def _flatten(self, array: Any, order: tuple[int, ...] | None) -> Any:
        xp = self.backend.xp
        return xp.reshape(array if order is None else xp.permute_dims(array, order), (-1,))

    def gather(self) -> None:
        """Copy the current parameters into a new flat array and hand out views of it."""
        xp = self.backend.xp
        self.values = xp.concat([self._flatten(params[key], order) for (_, params, _, key), order
                                 in zip(self.slots, self.orders, strict=True)])
        self.hand_out(self.values)

    def hand_out(self, values: Any) -> None:
        """Make ``values`` the flat array and set every parameter to its view of it."""
        xp = self.backend.xp
        self.values, self.views = values, []
        for (_, params, _, key), order, (start, stop, shape) in zip(
                self.slots, self.orders, self.parts, strict=True):
            view = xp.reshape(values[start:stop], shape)
            params[key] = view if order is None else xp.permute_dims(view, _inverse(order))
            self.views.append(params[key])

    def current(self) -> bool:
        """Whether every parameter still is the view handed out (else :meth:`gather` again)."""
        return all(params[key] is view for (_, params, _, key), view
                   in zip(self.slots, self.views, strict=True))

    def gradients(self) -> Any:
        """The gradients, gathered into one flat array laid out like :attr:`values`."""
        xp = self.backend.xp
        return xp.concat([self._flatten(grads[key], order) for (_, _, grads, key), order
                          in zip(self.slots, self.orders, strict=True)])

    def decay(self, decay: float) -> Any:
        """``decay`` on the weights' elements, 0.0 elsewhere (kept while ``decay`` stays)."""
        if self._decay is None or self._decay[0] != decay:
            self._decay = (decay, self.weights * decay)
        return self._decay[1]
