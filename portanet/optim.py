"""Optimizers: ``optimizer.step(model)`` updates every parameter from its gradient.

Hyperparameters are Python floats, so a float32 model stays float32. Updates are written as
in-place operators (``p -= lr * g``): NumPy, CuPy and PyTorch update the array in place, and a
namespace whose arrays are immutable falls back to rebinding, which is why each result is
stored back into the layer's ``params``.

Weight decay (an L2 term ``weight_decay * W`` added to the gradient) applies to weight
matrices only, not to biases.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any


def _positive(name: str, value: float, allow_zero: bool = False) -> float:
    value = float(value)
    if not (value >= 0.0 if allow_zero else value > 0.0) or not math.isfinite(value):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return value


class Optimizer:
    """Base class: holds the learning rate and per-parameter state keyed by parameter name."""

    def __init__(self, lr: float, weight_decay: float = 0.0) -> None:
        self.lr = _positive("lr", lr)
        self.weight_decay = _positive("weight_decay", weight_decay, allow_zero=True)
        self.state: dict[str, dict[str, Any]] = {}
        self.steps = 0
        self.xp: Any = None

    def step(self, model: Any) -> None:
        """Apply one update to every parameter of ``model`` from its current gradients."""
        self.steps += 1
        self.xp = model.backend.xp
        lr = float(self.lr)
        for name, params, grads, key in model.parameter_slots():
            p = params[key]
            g = grads[key]
            if self.weight_decay and p.ndim > 1:
                g = g + self.weight_decay * p
            params[key] = self.update(name, p, g, lr)

    def update(self, name: str, p: Any, g: Any, lr: float) -> Any:
        """Return the updated parameter (in place where the array allows it)."""
        raise NotImplementedError

    def _slot(self, name: str) -> dict[str, Any]:
        return self.state.setdefault(name, {})


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
        self.momentum = float(momentum)
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        if nesterov and self.momentum == 0.0:
            raise ValueError("nesterov=True needs a momentum > 0")
        self.nesterov = bool(nesterov)

    def update(self, name: str, p: Any, g: Any, lr: float) -> Any:
        mu = self.momentum
        if mu:
            state = self._slot(name)
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


class RMSProp(Optimizer):
    """RMSProp: ``s = rho * s + (1 - rho) * g^2``; ``p -= lr * g / (sqrt(s) + eps)``."""

    def __init__(
        self, lr: float = 0.001, rho: float = 0.9, eps: float = 1e-8, weight_decay: float = 0.0
    ) -> None:
        super().__init__(lr, weight_decay)
        self.rho = float(rho)
        if not 0.0 < self.rho < 1.0:
            raise ValueError(f"rho must be in (0, 1), got {rho!r}")
        self.eps = _positive("eps", eps)

    def update(self, name: str, p: Any, g: Any, lr: float) -> Any:
        xp = self.xp
        state = self._slot(name)
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
        self.beta1, self.beta2 = (float(b) for b in betas)
        for name, beta in (("beta1", self.beta1), ("beta2", self.beta2)):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {beta!r}")
        self.eps = _positive("eps", eps)

    def update(self, name: str, p: Any, g: Any, lr: float) -> Any:
        xp = self.xp
        b1, b2 = self.beta1, self.beta2
        state = self._slot(name)
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


Schedule = Callable[[int, int], float]
"""``schedule(epoch, epochs) -> learning rate`` for 0-based ``epoch``."""


def linear_decay(lr: float, final_lr: float = 0.0) -> Schedule:
    """Learning rate falling linearly from ``lr`` at the first epoch towards ``final_lr``."""

    def schedule(epoch: int, epochs: int) -> float:
        return float(lr + (final_lr - lr) * epoch / max(epochs, 1))

    return schedule


def cosine_decay(lr: float, final_lr: float = 0.0, warmup_epochs: int = 0) -> Schedule:
    """Cosine annealing from ``lr`` to ``final_lr``, after an optional linear warm-up."""

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
        if not isinstance(total_steps, int) or total_steps < 1:
            raise ValueError(f"total_steps must be a positive int, got {total_steps!r}")
        if not 0.0 < float(pct_start) < 1.0:
            raise ValueError(f"pct_start must be in (0, 1), got {pct_start!r}")
        self.optimizer = optimizer
        self.state = optimizer.state
        self.max_lr = float(max_lr)
        self.total_steps = total_steps
        self.pct_start = float(pct_start)
        self.initial_lr = self.max_lr / _positive("div_factor", div_factor)
        self.final_lr = self.initial_lr / _positive("final_div_factor", final_div_factor)
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

    def step(self, model: Any) -> None:
        self.optimizer.lr = self.lr = self.lr_at(self.steps)
        self.optimizer.step(model)
        self.steps += 1
