"""Weight averaging for evaluation: an exponential moving average (EMA) of a model's weights.

During training, after every step::

    avg = d * avg + (1 - d) * theta,    d = min(decay, (1 + t) / (10 + t))

over every parameter *and* every buffer (BatchNorm's running statistics follow the weights
they were measured with, as in timm's ``ModelEmaV2``); ``t`` counts steps, so early steps,
whose weights are far from the end, weigh little. At the end of the last epoch the model takes
the averages. ``fit(model, ..., callbacks=[WeightAverage(model, 0.999)])``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from portanet.callbacks import Callback
from portanet.input_checks import prepare_inputs
from portanet.layers import BatchNorm, Ensemble
from portanet.model import Sequential
from portanet.number_checks import rate


class WeightAverage(Callback):
    """Keep an exponential moving average of ``model``'s parameters and buffers and give it to
    the model when training ends (after the last epoch; an interrupted run keeps its own
    weights). ``decay`` in [0, 1): 0.999 averages over about the last 1,000 steps.

    The update runs on the device, a few array operations per parameter and step, with no
    read-back. :meth:`apply` gives the model the averages at any time.
    """

    def __init__(self, model: Sequential, decay: float = 0.999) -> None:
        decay = rate("WeightAverage decay", decay)
        if decay >= 1.0:
            raise ValueError(f"WeightAverage decay must be below 1, got {decay}")
        self.model, self.decay = model, decay
        self.steps = 0
        self.average: dict[str, Any] = {}
        self._epochs = 0

    def _current(self) -> dict[str, Any]:
        state = {name: p for name, p, _ in self.model.named_parameters()}
        state.update(self.model.named_buffers())
        return state

    def update(self) -> None:
        """Fold the model's present weights into the averages (what each step does)."""
        d = min(self.decay, (1.0 + self.steps) / (10.0 + self.steps))
        current = self._current()
        if not self.average:
            self.average = {name: value * 1.0 for name, value in current.items()}
        else:
            self.average = {name: d * self.average[name] + (1.0 - d) * current[name]
                            for name in current}
        self.steps += 1

    def apply(self) -> None:
        """Set the model's parameters and buffers to the averages (no-op before a step)."""
        if self.average:
            to_numpy = self.model.backend.to_numpy
            self.model.load_state_dict({k: to_numpy(v) for k, v in self.average.items()})

    def on_epoch_begin(self, epoch: int, epochs: int, num_batches: int) -> None:
        self._epochs = epochs

    def on_batch_end(self, batch: int, running: Callable[[], tuple[float, float]]) -> None:
        self.update()

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        if epoch == self._epochs - 1:
            self.apply()

    def __repr__(self) -> str:
        return f"WeightAverage(decay={self.decay})"


def recalibrate_batchnorm(model: Sequential, X: Any, batch_size: int = 256) -> None:
    """Set every BatchNorm layer's running statistics to the mean of its batch statistics over
    ``X`` (the weights unchanged; Dropout off), as SWA's ``update_bn`` does after averaging.

    Training statistics come from augmented batches and from weights that kept moving; these
    are those of the final weights on the images given (e.g. the plain training images).
    An ensemble is refused: recalibrate its members (:func:`portanet.ensemble_members`).
    """
    if any(isinstance(layer, Ensemble) for layer in model.layers):
        raise ValueError("recalibrate_batchnorm takes one network, not an ensemble: "
                         "recalibrate each of portanet.ensemble_members(model), then "
                         "combine them again with portanet.ensemble")
    norms = [layer for layer in model.layers if isinstance(layer, BatchNorm)]
    if not norms:
        return
    X = prepare_inputs(model, X, "X")
    momenta = [layer.momentum for layer in norms]
    model.eval()
    try:
        for layer in norms:
            layer.training = True
        for t, start in enumerate(range(0, int(X.shape[0]), batch_size)):
            for layer in norms:
                layer.momentum = 1.0 / (t + 1.0)
            model.forward_unchecked(X[start:start + batch_size, ...])
    finally:
        for layer, momentum in zip(norms, momenta, strict=True):
            layer.momentum = momentum
        model.eval()
