"""Inference: ``evaluate``, ``predict``, ``predict_proba``, in evaluation mode, batch by batch.

Inputs are checked at the boundary and copied to the model's device once, as for ``fit``.
``evaluate`` and ``predict`` refuse to return figures or probabilities computed from non-finite
outputs, naming the cause (the weights, or the input values). The helpers without an underscore
(the loss and batch size checks, the names of the non-finite parameters, the mean loss and
accuracy over device arrays) are shared with :mod:`portanet.train`, which imports this module.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from portanet import number_checks
from portanet.backend import on_model_device
from portanet.finite import all_finite, listed, weights_not_finite
from portanet.input_checks import prepare_inputs, prepare_labels
from portanet.layers import Softmax, softmax
from portanet.losses import Loss, as_loss, softmax_cross_entropy
from portanet.model import Sequential
from portanet.parallel.engine import inference_forward

LossFn = Callable[[Any, Any], tuple[Any, Any]]

__all__ = ["evaluate", "predict", "predict_proba"]


# --- shared with fit ---------------------------------------------------------------------------


def resolve_loss(model: Sequential, loss: Loss | LossFn | str) -> Loss:
    """The :class:`~portanet.losses.Loss` for ``loss``; refuses a model that ends in Softmax
    (the losses take logits)."""
    loss = as_loss(loss)
    if isinstance(model.layers[-1], Softmax) and loss.takes_logits:
        raise ValueError(
            "the model ends in a Softmax layer, but portanet's losses take logits and apply "
            "softmax themselves; remove the last Softmax layer (predict_proba still gives "
            "probabilities)"
        )
    return loss


def samples_per_batch(batch_size: int | None, n: int) -> int:
    """The number of samples per step: ``batch_size`` capped at ``n``, ``n`` for ``None``."""
    if batch_size is None:
        return n
    return min(number_checks.positive_int("batch_size", batch_size), n)


def inference_batch(model: Sequential, batch_size: int | None, n: int) -> int:
    """Samples per inference step: ``batch_size`` capped at ``n``, or for None the backend's
    choice (:attr:`Backend.inference_batch`)."""
    return samples_per_batch(model.backend.inference_batch if batch_size is None else batch_size,
                             n)


def loss_and_accuracy(
    model: Sequential, X: Any, y: Any, loss: Loss, batch_size: int | None = None
) -> tuple[float, float]:
    """Mean loss and accuracy over device arrays, read back once."""
    xp = model.xp
    n = X.shape[0]
    batch_size = inference_batch(model, batch_size, n)
    model.eval()
    loss_sum = xp.zeros((), dtype=model.backend.dtype, device=model.backend.device)
    correct = xp.zeros((), dtype=xp.int64, device=model.backend.device)
    with inference_forward(model, batch_size) as forward:
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            xb, yb = X[start:stop, ...], y[start:stop]
            logits = forward(xb)
            value, _ = loss(logits, yb)
            loss_sum = loss_sum + value * float(xb.shape[0])
            correct = correct + xp.count_nonzero(xp.argmax(logits, axis=1) == yb)
    return float(loss_sum) / n, int(correct) / n


# --- inference ---------------------------------------------------------------------------------


@on_model_device
def evaluate(
    model: Sequential,
    X: Any,
    y: Any,
    *,
    loss: Loss | LossFn | str = softmax_cross_entropy,
    batch_size: int | None = None,
) -> dict[str, float]:
    """Mean loss and accuracy of ``model`` on ``(X, y)``: ``{"loss", "accuracy", "samples"}``.

    ``batch_size``: images per step; None takes the backend's choice (256 on a CPU, 2,048 on a
    GPU, :attr:`Backend.inference_batch`). It changes speed and memory, not the result.

    Raises a ValueError naming the cause (non-finite weights, or input values too large for
    the model's dtype) when the model's outputs are not finite."""
    loss_obj = resolve_loss(model, loss)
    X = prepare_inputs(model, X, "X")
    y = prepare_labels(model, y, X.shape[0], "y")
    value, accuracy = loss_and_accuracy(model, X, y, loss_obj, batch_size)
    if not math.isfinite(value):
        raise _not_finite_outputs(model, X, "X")
    return {"loss": value, "accuracy": accuracy, "samples": int(X.shape[0])}


def _probabilities(model: Sequential, X: Any, batch_size: int) -> Any:
    """Softmax outputs for device input ``X``, in eval mode, batch by batch."""
    xp = model.xp
    model.eval()
    ends_in_softmax = isinstance(model.layers[-1], Softmax)
    parts = []
    with inference_forward(model, batch_size) as forward:
        for start in range(0, X.shape[0], batch_size):
            out = forward(X[start:min(start + batch_size, X.shape[0]), ...])
            parts.append(out if ends_in_softmax else softmax(xp, out))
    out = parts[0] if len(parts) == 1 else xp.concat(parts, axis=0)
    if not bool(all_finite(xp, out)):
        raise _not_finite_outputs(model, X, "X")
    return out


def _not_finite_outputs(model: Sequential, X: Any, what: str) -> ValueError:
    """The error for outputs that are not finite, naming the cause: the model's weights, or
    (when they are finite) the size of the input values."""
    bad = weights_not_finite(model)
    if bad:
        return ValueError(
            f"the model's {listed(bad)} not finite (NaN or infinite values), so its "
            f"outputs are not either: it diverged in training or was edited; train it again "
            f"with a lower learning rate"
        )
    xp = model.xp
    peak = float(xp.max(xp.abs(X)))
    return ValueError(
        f"the model's outputs for {what} are not finite, though its weights are: {what} holds "
        f"values up to {peak:g} in magnitude, which overflow the model's "
        f"{model.backend.dtype_name} arithmetic; give inputs scaled as in training (e.g. "
        f"pixels / 255, in [0, 1])"
    )


def _infer(model: Sequential, X: Any, batch_size: int | None, labels: bool) -> Any:
    host_in = isinstance(X, np.ndarray) and not model.backend.seam.host_arrays
    X = prepare_inputs(model, X, "X")
    out = _probabilities(model, X, inference_batch(model, batch_size, X.shape[0]))
    if labels:
        out = model.xp.argmax(out, axis=1)
    return model.backend.to_numpy(out) if host_in else out


@on_model_device
def predict_proba(model: Sequential, X: Any, *, batch_size: int | None = None) -> Any:
    """Class probabilities, shape (samples, classes); never NaN: outputs that are not finite
    raise a ValueError naming the cause (the weights, or input values too large).
    ``batch_size`` as in :func:`evaluate`.

    The result lives where ``X`` lived: host NumPy for host input, the model's arrays otherwise.
    """
    return _infer(model, X, batch_size, labels=False)


@on_model_device
def predict(model: Sequential, X: Any, *, batch_size: int | None = None) -> Any:
    """Predicted class indices, shape (samples,), living where ``X`` lived; ``batch_size`` as
    in :func:`evaluate`."""
    return _infer(model, X, batch_size, labels=True)
