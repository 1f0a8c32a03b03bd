"""Optimizers: ``optimizer.step(model)`` updates every parameter from its gradient.

Hyperparameters are Python floats, so a float32 model stays float32. Updates are written as
in-place operators (``p -= lr * g``): NumPy, CuPy and PyTorch update the array in place, and a
namespace whose arrays are immutable falls back to rebinding, which is why each result is
stored back into the layer's ``params``. Plain SGD's update goes through
:func:`subtract_scaled`, the one backend fast path here (tested against the portable form).
SCRATCH_MIN_SIZE (re-exported from :mod:`portanet.backend.table`) is where NumPy's path starts.

Optimizers with state (SGD with momentum, RMSProp, Adam) update all parameters at once: the
model's parameters become views of one flat array (:class:`portanet.flat.FlatParameters`) and
the update runs once over it, about a dozen array operations per step instead of a dozen per
parameter. ``optimizer.flat = False`` selects the per-parameter update, which computes the same
numbers (``tests/test_optim.py`` checks that they are identical).

An optimizer knows nothing of threads. :meth:`Optimizer.plan` hands out one step as independent
pieces of work; the parallel engine (:mod:`portanet.parallel.engine`) runs them on its workers.
The flat update splits into parts of the flat arrays (views, on backends whose arrays are
updated in place): the same arithmetic on every element, so again the same numbers. A subclass
that overrides :meth:`Optimizer.update` splits like the built-in ones; one that overrides
:meth:`Optimizer.step` runs as one piece, its own step.

L2 regularisation has one mechanism, weight decay: ``weight_decay * W`` added to the gradient of
each parameter :func:`is_weight` names (weight matrices and kernels, not biases).
``fit(l2=...)`` adds its term through the same step.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from functools import partial
from typing import Any

from portanet import number_checks
from portanet.backend.table import SCRATCH_MIN_SIZE, Capabilities  # noqa: F401 (re-exported)
from portanet.flat import FlatParameters

Work = Callable[[], Any]
"""One piece of an optimizer step (:meth:`Optimizer.plan`)."""


def is_weight(param: Any) -> bool:
    """The one rule for "this parameter is a weight" (what L2 and weight decay touch): arrays
    of two or more axes (weight matrices, convolution kernels), not biases or scales."""
    return param.ndim >= 2



def subtract_scaled(capabilities: Capabilities, p: Any, g: Any, factor: float,
                    state: dict[str, Any]) -> Any:
    """``p -= factor * g`` in place where arrays allow it, returning ``p``: the backend's fused
    form where it has one (:attr:`portanet.backend.table.Capabilities.subtract_scaled`: NumPy
    through a reused scratch buffer, bit for bit the portable form; PyTorch in one pass), else the
    portable form (rebinding where arrays are immutable). ``state`` holds the fast path's
    buffers."""
    fused = capabilities.subtract_scaled
    if fused is not None:
        return fused(p, g, factor, state)
    p -= factor * g
    return p


class Optimizer:
    """Base class: holds the learning rate and per-parameter state keyed by parameter name.

    An optimizer with state belongs to the first model it steps: stepping any other model,
    even one with the same parameter shapes, raises a ValueError (create one per model).
    """

    def __init__(self, lr: float, weight_decay: float = 0.0) -> None:
        self.lr = lr
        self.weight_decay = number_checks.finite_non_negative("weight_decay", weight_decay)
        self.state: dict[str, dict[str, Any]] = {}
        self.steps = 0
        self.xp: Any = None
        self._model: Any = None
        self._signature: Any = None
        self._scratch: dict[str, dict[str, Any]] = {}  # fast-path buffers, not optimizer state
        self.flat = True
        self._flat: FlatParameters | None = None

    @property
    def updates_flat(self) -> bool:
        """Whether :meth:`step` updates all parameters at once (optimizers with state, unless
        ``flat`` is False)."""
        return self.flat and self.elementwise_state

    elementwise_state = False
    """True for optimizers whose update keeps elementwise state (one pass over all the
    parameters at once computes exactly what one pass per parameter does)."""

    @property
    def lr(self) -> float:
        """The learning rate, a finite float > 0 (checked on every assignment)."""
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr = number_checks.finite_positive("lr", value)

    def step(self, model: Any, l2: float = 0.0) -> None:
        """Apply one update to every parameter of ``model`` from its current gradients.

        ``l2`` adds to ``weight_decay`` for this step (what ``fit(l2=...)`` uses).
        """
        for work in self._pieces(model, l2, 1):
            work()

    def plan(self, model: Any, l2: float = 0.0, parts: int = 1) -> list[Work]:
        """One :meth:`step` as pieces of work that together apply it, each to be run once, in
        any order or at the same time (the parallel engine runs them on its threads).

        ``parts`` pieces where the update splits: the flat update of an optimizer with state,
        from its second step on (the first creates the state whole), on backends whose arrays
        are updated in place; else one. A subclass that overrides :meth:`step` and not this
        gets one piece, its own step.
        """
        if type(self).step is not Optimizer.step and type(self).plan is Optimizer.plan:
            return [partial(self.step, model, l2)]
        return self._pieces(model, l2, parts)

    def _pieces(self, model: Any, l2: float, parts: int) -> list[Work]:
        if self._model is None or self._model() is not model:
            self._bind(model)
        self.steps += 1
        self.xp = model.backend.xp
        decay = self.weight_decay + l2
        if self.updates_flat:
            return self._flat_pieces(model, self._lr, decay, parts)
        return [partial(self._each_parameter, model, self._lr, decay)]

    def _each_parameter(self, model: Any, lr: float, decay: float) -> None:
        capabilities = model.backend.capabilities
        for name, params, grads, key in model.parameter_slots():
            p = params[key]
            params[key] = self._apply(capabilities, name, p, grads[key], lr,
                                      decay if decay and is_weight(p) else 0.0)

    def _flat_pieces(self, model: Any, lr: float, decay: float, parts: int) -> list[Work]:
        """The update of the flat parameter array from the gathered gradients: in ``parts``
        contiguous parts (views of the flat arrays, written through in place) once the state
        exists and where arrays are updated in place, else whole."""
        flat = self._flat
        if flat is None:
            flat = self._flat = FlatParameters(model, is_weight)
        elif not flat.current():
            flat.gather()
        g = flat.gradients()
        if decay:
            g = g + flat.decay(decay) * flat.values
        state = self._slot("*")
        if parts > 1 and state and model.backend.capabilities.in_place:
            n = int(flat.values.shape[0])
            cuts = [slice(n * k // parts, n * (k + 1) // parts) for k in range(parts)]
            return [partial(self.update, {key: array[rows] for key, array in state.items()},
                            flat.values[rows], g[rows], lr) for rows in cuts]

        def whole() -> None:
            updated = self.update(state, flat.values, g, lr)
            if updated is not flat.values or not model.backend.capabilities.in_place:
                flat.hand_out(updated)

        return [whole]

    def _apply(self, capabilities: Capabilities, name: str, p: Any, g: Any, lr: float,
               decay: float) -> Any:
        """The update with weight decay ``decay`` (0 for parameters that are not weights)."""
        if decay:
            g = g + decay * p
        return self.update(self._slot(name), p, g, lr)

    def update(self, state: dict[str, Any], p: Any, g: Any, lr: float) -> Any:
        """Return the updated parameter (in place where the array allows it); ``state`` holds
        this parameter's optimizer state (moments, velocities), updated in place where the
        arrays allow it, else rebound in the dict."""
        raise NotImplementedError

    def _slot(self, name: str) -> dict[str, Any]:
        return self.state.setdefault(name, {})

    def _bind(self, model: Any) -> None:
        """Belong to ``model``; refused when the state held is another model's. The model is
        compared by identity, not by its shapes: a second model of the same shapes would
        otherwise train with the first one's moments."""
        backend = model.backend
        signature = (backend.name, str(backend.device), backend.dtype_name,
                     tuple((name, tuple(p.shape)) for name, p, _ in model.named_parameters()))
        if self._signature is not None and self.state:
            other = ("another model of the same shapes" if signature == self._signature else
                     f"another model ({_describe(self._signature)}), but was asked to step "
                     f"{_describe(signature)}")
            raise ValueError(
                f"this {type(self).__name__} already holds state (moments, velocities) for "
                f"{other}; create a new optimizer for each model"
            )
        self._model, self._signature, self._flat = weakref.ref(model), signature, None


def _describe(signature: Any) -> str:
    name, device, dtype, shapes = signature
    listed = ", ".join(f"{n} {s}" for n, s in shapes[:4]) + (", ..." if len(shapes) > 4 else "")
    return f"{name} on {device}, {dtype}, parameters {listed}"


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum and Nesterov momentum.

    With momentum mu: ``v = mu * v + g``; ``p -= lr * v`` (or ``p -= lr * (g + mu * v)`` for
    Nesterov), as in PyTorch. The first step sets ``v = g``.
    """

    def __init__(
        self,
        lr: float = 0.01,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(lr, weight_decay)
        self.momentum = number_checks.rate("momentum", momentum)
        if nesterov and self.momentum == 0.0:
            raise ValueError("nesterov=True needs a momentum > 0")
        self.nesterov = bool(nesterov)

    @property
    def elementwise_state(self) -> bool:  # type: ignore[override]
        return self.momentum > 0.0

    def update(self, state: dict[str, Any], p: Any, g: Any, lr: float) -> Any:
        mu = self.momentum
        if mu:
            v = state.get("velocity")
            if v is None:
                v = g * 1.0  # a copy: g belongs to the layer
            else:
                v *= mu
                v += g
            state["velocity"] = v
            g = g + mu * v if self.nesterov else v
        p -= lr * g
        return p

    def _apply(self, capabilities: Capabilities, name: str, p: Any, g: Any, lr: float,
               decay: float) -> Any:
        if self.momentum:
            return super()._apply(capabilities, name, p, g, lr, decay)
        # Plain SGD: p -= lr * (g + decay * p), as p *= 1 - lr * decay; p -= lr * g (no
        # temporary of the weight's size), the subtraction on the backend's fast path.
        if decay:
            p *= 1.0 - lr * decay
        scratch = self._scratch.get(name)
        if scratch is None:
            scratch = self._scratch[name] = {}
        return subtract_scaled(capabilities, p, g, lr, scratch)


class RMSProp(Optimizer):
    """RMSProp: ``s = rho * s + (1 - rho) * g^2``; ``p -= lr * g / (sqrt(s) + eps)``."""

    def __init__(
        self, lr: float = 0.001, rho: float = 0.9, eps: float = 1e-8, weight_decay: float = 0.0
    ) -> None:
        super().__init__(lr, weight_decay)
        self.rho = number_checks.open_unit("rho", rho)
        self.eps = number_checks.finite_positive("eps", eps)
        self.elementwise_state = True

    def update(self, state: dict[str, Any], p: Any, g: Any, lr: float) -> Any:
        xp = self.xp
        s = state.get("square_avg")
        if s is None:
            s = (1.0 - self.rho) * (g * g)
        else:
            s *= self.rho
            s += (1.0 - self.rho) * (g * g)
        state["square_avg"] = s
        p -= lr * g / (xp.sqrt(s) + self.eps)
        return p


class Adam(Optimizer):
    """Adam with bias correction (Kingma and Ba, 2015).

    ``m = b1 m + (1 - b1) g``; ``v = b2 v + (1 - b2) g^2``;
    ``p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)``.
    """

    def __init__(
        self,
        lr: float = 0.001,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(lr, weight_decay)
        beta1, beta2 = betas
        self.beta1 = number_checks.rate("beta1", beta1)
        self.beta2 = number_checks.rate("beta2", beta2)
        self.eps = number_checks.finite_positive("eps", eps)
        self.elementwise_state = True

    def update(self, state: dict[str, Any], p: Any, g: Any, lr: float) -> Any:
        xp = self.xp
        b1, b2 = self.beta1, self.beta2
        m, v = state.get("m"), state.get("v")
        if m is None:
            m = (1.0 - b1) * g
            v = (1.0 - b2) * (g * g)
        else:
            m *= b1
            m += (1.0 - b1) * g
            v *= b2
            v += (1.0 - b2) * (g * g)
        state["m"], state["v"] = m, v
        t = self.steps
        bias1 = 1.0 - b1**t
        bias2 = 1.0 - b2**t
        p -= (lr / bias1) * m / (xp.sqrt(v * (1.0 / bias2)) + self.eps)
        return p


OPTIMIZERS: dict[str, Callable[..., Optimizer]] = {
    "sgd": SGD,
    "momentum": partial(SGD, momentum=0.9),
    "nesterov": partial(SGD, momentum=0.9, nesterov=True),
    "rmsprop": RMSProp,
    "adam": Adam,
}
"""The optimizer registry: each name builds its optimizer from keyword hyperparameters over the
defaults given here (``fit(optimizer="adam")``, ``OPTIMIZERS["nesterov"](0.1, momentum=0.8)``).
Adding an optimizer is one class and one row here; recipes and the command line read the names
from this table."""


def get_optimizer(optimizer: Optimizer | str | None) -> Optimizer:
    """An :class:`Optimizer` from an optimizer, a name in :data:`OPTIMIZERS`, or ``None``
    (``SGD(lr=0.01)``)."""
    if optimizer is None:
        return SGD(lr=0.01)
    if isinstance(optimizer, Optimizer):
        return optimizer
    if isinstance(optimizer, str):
        if optimizer not in OPTIMIZERS:
            raise ValueError(
                f"unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZERS)}, "
                f"or pass an object such as portanet.optim.Adam(lr=1e-3)"
            )
        return OPTIMIZERS[optimizer]()
    raise TypeError(
        f"optimizer must be a portanet.optim.Optimizer (e.g. SGD(lr=0.1)) or one of the names "
        f"{', '.join(OPTIMIZERS)}, got {type(optimizer).__name__}"
    )


Schedule = Callable[[int, int], float]
"""``schedule(epoch, epochs) -> learning rate`` for 0-based ``epoch``."""


def linear_decay(lr: float, final_lr: float = 0.0) -> Schedule:
    """Learning rate falling linearly from ``lr`` at the first epoch towards ``final_lr``
    (both finite, ``lr > 0``, ``final_lr >= 0``: checked here, not at the first epoch)."""
    lr = number_checks.finite_positive("lr", lr)
    final_lr = number_checks.finite_non_negative("final_lr", final_lr)

    def schedule(epoch: int, epochs: int) -> float:
        return float(lr + (final_lr - lr) * epoch / max(epochs, 1))

    return schedule


def cosine_decay(lr: float, final_lr: float = 0.0, warmup_epochs: int = 0) -> Schedule:
    """Cosine annealing from ``lr`` to ``final_lr``, after an optional linear warm-up of
    ``warmup_epochs`` (a whole number >= 0); the arguments are checked here."""
    lr = number_checks.finite_positive("lr", lr)
    final_lr = number_checks.finite_non_negative("final_lr", final_lr)
    warmup_epochs = number_checks.non_negative_int("warmup_epochs", warmup_epochs)

    def schedule(epoch: int, epochs: int) -> float:
        if epoch < warmup_epochs:
            return float(lr * (epoch + 1) / (warmup_epochs + 1))
        span = max(epochs - warmup_epochs, 1)
        t = (epoch - warmup_epochs) / span
        return float(final_lr + 0.5 * (lr - final_lr) * (1.0 + math.cos(math.pi * t)))

    return schedule


class OneCycle(Optimizer):
    """The one-cycle learning rate (Smith and Topin, 2019) around another optimizer, set before
    every step as PyTorch's ``OneCycleLR`` does: cosine from ``max_lr / div_factor`` up to
    ``max_lr`` over the first ``pct_start`` of ``total_steps``, then cosine down to
    ``max_lr / (div_factor * final_div_factor)``; after ``total_steps`` it stays there.

    ``OneCycle(Adam(), max_lr=3e-3, total_steps=470)``; pass it to ``fit`` as the optimizer and
    leave ``lr_schedule`` unset (that one works per epoch).
    """

    def __init__(
        self,
        optimizer: Optimizer,
        max_lr: float,
        total_steps: int,
        pct_start: float = 0.25,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
    ) -> None:
        super().__init__(max_lr)
        total_steps = number_checks.positive_int("total_steps", total_steps)
        pct_start = number_checks.open_unit("pct_start", pct_start)
        self.optimizer = optimizer
        self.state = optimizer.state
        self.max_lr = float(max_lr)
        self.total_steps = total_steps
        self.pct_start = float(pct_start)
        self.initial_lr = self.max_lr / number_checks.finite_positive("div_factor", div_factor)
        self.final_lr = self.initial_lr / number_checks.finite_positive("final_div_factor",
                                                                  final_div_factor)
        self.lr = self.lr_at(0)

    def lr_at(self, step: int) -> float:
        """The learning rate of 0-based ``step``."""
        up = max(self.pct_start * self.total_steps - 1.0, 1.0)
        down = max(self.total_steps - 1.0 - up, 1.0)
        if step <= up:
            start, end, t = self.initial_lr, self.max_lr, step / up
        else:
            start, end, t = self.max_lr, self.final_lr, min((step - up) / down, 1.0)
        return float(end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * t)))

    def step(self, model: Any, l2: float = 0.0) -> None:
        for work in self.plan(model, l2):
            work()

    def plan(self, model: Any, l2: float = 0.0, parts: int = 1) -> list[Work]:
        """The inner optimizer's pieces of one step, at this step's learning rate."""
        self.optimizer.lr = self.lr = self.lr_at(self.steps)
        self.steps += 1
        return self.optimizer.plan(model, l2, parts)
