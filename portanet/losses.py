"""Losses as objects: ``prepare(labels)`` once per run, then ``loss(logits, prepared)`` per step.

``logits`` is the (batch, classes) output of the model's last layer; ``labels`` holds integer
class indices of shape (batch,). :meth:`Loss.prepare` turns a whole run's labels into what the
loss needs per step (one-hot rows for the built-in losses), with samples on the first axis so
that :func:`portanet.fit` can gather each batch's rows from it. :meth:`Loss.loss` returns the
loss, a 0-d array on the device averaged over the batch, and ``dlogits``, its gradient, ready for
``model.backward``. Nothing here reads a value back to the host.

Calling a loss, ``softmax_cross_entropy(logits, labels)``, checks the arguments and runs both
steps: that is the form for stepping by hand. A plain function ``(logits, labels) -> (loss,
dlogits)`` is also accepted by ``fit`` (see :func:`as_loss`).

Labels are checked for shape and dtype here (free), but their range only once at the boundary
(:func:`portanet.fit`, :func:`portanet.evaluate`), since reading min/max would synchronise.

L2 regularisation has one mechanism: the optimizer's weight decay (``fit(l2=...)`` passes it
there), applied to the parameters :func:`portanet.optim.is_weight` names. :func:`l2_penalty`
gives the penalty's value, for reports.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from portanet.backend import namespace_of, numpy_namespace
from portanet.layers import softmax
from portanet.optim import is_weight

_NAMESPACES: dict[type, Any] = {np.ndarray: numpy_namespace}


def _xp(array: Any) -> Any:
    """The array's namespace, looked up once per array type (this runs every step); NumPy
    arrays get the NumPy backend's namespace (direct reductions, see _numpy_namespace)."""
    xp = _NAMESPACES.get(type(array))
    if xp is None:
        xp = _NAMESPACES[type(array)] = namespace_of(array)
    return xp


def _check(xp: Any, logits: Any, labels: Any) -> None:
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape (batch, classes), got {tuple(logits.shape)}")
    if labels.ndim != 1 or labels.shape[0] != logits.shape[0]:
        raise ValueError(
            f"labels must have shape ({logits.shape[0]},) to match the logits, "
            f"got {tuple(labels.shape)}"
        )
    if not xp.isdtype(labels.dtype, "integral"):
        raise ValueError(
            f"labels must be integer class indices, got dtype {labels.dtype}; "
            f"convert one-hot targets with argmax and float labels with astype(int64)"
        )


def one_hot(xp: Any, labels: Any, num_classes: int, dtype: Any) -> Any:
    """(batch, num_classes) one-hot rows, built by comparison (the standard has no scatter)."""
    classes = xp.arange(num_classes, dtype=labels.dtype, device=labels.device)
    return xp.astype(labels[:, None] == classes, dtype)


def log_softmax(xp: Any, logits: Any) -> Any:
    """Row-wise log-softmax through the max shift: never the log of a rounded probability."""
    shifted = logits - xp.max(logits, axis=1, keepdims=True)
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=1, keepdims=True))


class Loss:
    """A loss in two steps. Subclass it and override :meth:`loss` (and :meth:`prepare` when the
    per-step work is cheaper on a transformed form of the labels).

    Attributes:
        takes_logits: True when the loss applies softmax itself, so a model ending in a Softmax
            layer is refused (it would apply softmax twice).
    """

    takes_logits = False

    def prepare(self, labels: Any, num_classes: int, dtype: Any) -> Any:
        """What :meth:`loss` takes for ``labels`` (checked integer labels on the device), with
        samples on the first axis. Called once per run; the default keeps the labels."""
        return labels

    def loss(self, logits: Any, prepared: Any) -> tuple[Any, Any]:
        """``(loss, dlogits)`` for a batch, given its rows of :meth:`prepare`'s result: the mean
        over the batch of a per-sample loss, and its gradient. No checks."""
        raise NotImplementedError

    def gradient(self, logits: Any, prepared: Any) -> Any:
        """``dlogits`` alone: what :func:`portanet.fit` calls every step (it computes the
        epoch's loss once, at the epoch's end, from the logits it kept). Override it when the
        gradient is cheaper without the value; the default takes it from :meth:`loss`."""
        return self.loss(logits, prepared)[1]

    def __call__(self, logits: Any, labels: Any) -> tuple[Any, Any]:
        """Check the arguments, then prepare and compute: the form for stepping by hand."""
        xp = _xp(logits)
        _check(xp, logits, labels)
        return self.loss(logits, self.prepare(labels, logits.shape[1], logits.dtype))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class SoftmaxCrossEntropy(Loss):
    """Mean softmax cross-entropy and its gradient, fused and numerically stable.

    L = -(1/N) sum_i log softmax(z_i)[y_i];   dL/dz = (softmax(z) - onehot(y)) / N
    """

    takes_logits = True

    def prepare(self, labels: Any, num_classes: int, dtype: Any) -> Any:
        return one_hot(_xp(labels), labels, num_classes, dtype)

    def loss(self, logits: Any, prepared: Any) -> tuple[Any, Any]:
        xp = _xp(logits)
        loss = -xp.sum(prepared * log_softmax(xp, logits)) / float(logits.shape[0])
        return loss, self.gradient(logits, prepared)

    def gradient(self, logits: Any, prepared: Any) -> Any:
        p = softmax(_xp(logits), logits)
        p -= prepared  # in place where arrays allow it: p is ours
        return p * (1.0 / logits.shape[0])


class SoftmaxSquaredError(Loss):
    """Squared error between one-hot targets and softmax probabilities, mean over the batch.

    Per sample L = sum_k (onehot_k - p_k)^2 with p = softmax(z). The gradient goes through the
    full softmax Jacobian: with g = dL/dp = 2 (p - onehot) / N, dL/dz = p * (g - sum_k g_k p_k).
    (Keeping only the Jacobian's diagonal, g * p * (1 - p), is a common shortcut and is wrong.)
    """

    takes_logits = True

    def prepare(self, labels: Any, num_classes: int, dtype: Any) -> Any:
        return one_hot(_xp(labels), labels, num_classes, dtype)

    def loss(self, logits: Any, prepared: Any) -> tuple[Any, Any]:
        xp = _xp(logits)
        diff = softmax(xp, logits) - prepared
        return xp.sum(diff * diff) / float(logits.shape[0]), self.gradient(logits, prepared)

    def gradient(self, logits: Any, prepared: Any) -> Any:
        xp = _xp(logits)
        p = softmax(xp, logits)
        g = p - prepared
        g *= 2.0 / logits.shape[0]  # in place where arrays allow it (g is ours): dL/dp
        g -= xp.sum(g * p, axis=1, keepdims=True)
        g *= p
        return g


class FunctionLoss(Loss):
    """A plain function ``(logits, labels) -> (loss, dlogits)`` as a :class:`Loss` (labels are
    its prepared form)."""

    def __init__(self, fn: Callable[[Any, Any], tuple[Any, Any]]) -> None:
        self.fn = fn

    def loss(self, logits: Any, prepared: Any) -> tuple[Any, Any]:
        return self.fn(logits, prepared)

    def __call__(self, logits: Any, labels: Any) -> tuple[Any, Any]:
        return self.fn(logits, labels)

    def __repr__(self) -> str:
        return f"FunctionLoss({getattr(self.fn, '__name__', self.fn)!r})"


softmax_cross_entropy = SoftmaxCrossEntropy()
"""``softmax_cross_entropy(logits, labels) -> (loss, dlogits)``: see the class."""

softmax_squared_error = SoftmaxSquaredError()
"""``softmax_squared_error(logits, labels) -> (loss, dlogits)``: see the class."""

LOSSES: dict[str, Loss] = {
    "softmax_cross_entropy": softmax_cross_entropy,
    "cross_entropy": softmax_cross_entropy,
    "softmax_squared_error": softmax_squared_error,
}


def as_loss(loss: Loss | Callable[[Any, Any], tuple[Any, Any]] | str) -> Loss:
    """A :class:`Loss` from a Loss, a name in :data:`LOSSES` or a plain function."""
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, str):
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
        return LOSSES[loss]
    if callable(loss):
        return FunctionLoss(loss)
    raise TypeError(
        f"loss must be a portanet.losses.Loss, a loss name ({', '.join(LOSSES)}) or a function "
        f"(logits, labels) -> (loss, dlogits), got {type(loss).__name__}"
    )


def l2_penalty(model: Any, reg: float) -> Any:
    """The L2 penalty ``0.5 * reg * sum(W^2)`` over the model's weights (a 0-d device array).

    Only the value, for reports: the gradient term ``reg * W`` belongs to the optimizer
    (``weight_decay=reg``, or ``fit(l2=reg)``), which applies it to the same parameters.
    """
    xp = model.backend.xp
    total = xp.zeros((), dtype=model.backend.dtype, device=model.backend.device)
    for _name, params, _grads, key in model.parameter_slots():
        w = params[key]
        if is_weight(w):
            total = total + xp.sum(w * w)
    return (0.5 * float(reg)) * total
