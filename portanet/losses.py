"""Losses: functions ``loss(logits, labels) -> (loss, dlogits)``.

``logits`` is the (batch, classes) output of the model's last layer; ``labels`` holds integer
class indices of shape (batch,). The loss is a 0-d array on the device (averaged over the batch)
and ``dlogits`` its gradient, ready for ``model.backward``. Nothing here reads a value back to the
host, so a training loop can call them every step without synchronising with a GPU.

Labels are checked for shape and dtype here (free), but their range only once at the boundary
(:func:`portanet.fit`, :func:`portanet.evaluate`), since reading min/max would synchronise.
"""

from __future__ import annotations

from typing import Any

from portanet.backend import namespace_of
from portanet.layers import softmax


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


def softmax_cross_entropy(logits: Any, labels: Any) -> tuple[Any, Any]:
    """Mean softmax cross-entropy and its gradient, fused and numerically stable.

    L = -(1/N) sum_i log softmax(z_i)[y_i];   dL/dz = (softmax(z) - onehot(y)) / N
    """
    xp = namespace_of(logits)
    _check(xp, logits, labels)
    return cross_entropy_onehot(xp, logits, one_hot(xp, labels, logits.shape[1], logits.dtype))


def cross_entropy_onehot(xp: Any, logits: Any, targets: Any) -> tuple[Any, Any]:
    """:func:`softmax_cross_entropy` given one-hot ``targets``, without checks (for loops)."""
    n = float(logits.shape[0])
    log_p = log_softmax(xp, logits)
    loss = -xp.sum(xp.vecdot(targets, log_p)) / n
    return loss, (xp.exp(log_p) - targets) / n


def softmax_squared_error(logits: Any, labels: Any) -> tuple[Any, Any]:
    """Squared error between one-hot targets and softmax probabilities, mean over the batch.

    Per sample L = sum_k (onehot_k - p_k)^2 with p = softmax(z). The gradient goes through the
    full softmax Jacobian: with g = dL/dp = 2 (p - onehot) / N, dL/dz = p * (g - sum_k g_k p_k).
    (Keeping only the Jacobian's diagonal, g * p * (1 - p), is a common shortcut and is wrong.)
    """
    xp = namespace_of(logits)
    _check(xp, logits, labels)
    return squared_error_onehot(xp, logits, one_hot(xp, labels, logits.shape[1], logits.dtype))


def squared_error_onehot(xp: Any, logits: Any, targets: Any) -> tuple[Any, Any]:
    """:func:`softmax_squared_error` given one-hot ``targets``, without checks (for loops)."""
    n = float(logits.shape[0])
    p = softmax(xp, logits)
    diff = p - targets
    loss = xp.sum(xp.vecdot(diff, diff)) / n
    g = diff * (2.0 / n)
    return loss, p * (g - xp.vecdot(g, p)[:, None])


def l2_penalty(model: Any, reg: float) -> Any:
    """Add an L2 penalty 0.5 * reg * sum(W^2) over the model's weight matrices.

    Call after ``model.backward``: it adds ``reg * W`` to each weight gradient (biases are not
    penalised) and returns the penalty, a 0-d device array to add to the data loss.
    """
    reg = float(reg)
    total = None
    for _name, params, grads, key in model.parameter_slots():
        w = params[key]
        if w.ndim < 2:
            continue
        grads[key] = grads[key] + reg * w
        term = model.backend.xp.sum(w * w)
        total = term if total is None else total + term
    if total is None:
        return model.backend.xp.zeros((), dtype=model.backend.dtype, device=model.backend.device)
    return 0.5 * reg * total


ONE_HOT_FORMS = {
    softmax_cross_entropy: cross_entropy_onehot,
    softmax_squared_error: squared_error_onehot,
}
"""The built-in losses' one-hot forms: :func:`portanet.fit` builds the one-hot targets once per
run and skips the per-step checks, which matters most for per-sample SGD."""

LOSSES = {
    "softmax_cross_entropy": softmax_cross_entropy,
    "cross_entropy": softmax_cross_entropy,
    "softmax_squared_error": softmax_squared_error,
}
