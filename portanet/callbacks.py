"""What a :func:`portanet.fit` run reports and how it ends: the per-epoch :class:`History`,
:class:`Callback` hooks, :class:`DivergedError` and the Ctrl-C and SIGTERM handling."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class History:
    """Per-epoch figures of a :func:`fit` run (validation lists stay empty without val data).

    ``loss`` is the epoch's mean data loss plus, with ``l2``, the penalty at the epoch's end.
    """

    loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    samples_per_second: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    interrupted: bool = False

    @property
    def epochs(self) -> int:
        """Number of epochs run (an interrupted epoch counts)."""
        return len(self.loss)

    def as_dict(self) -> dict[str, Any]:
        """The history as a JSON-serialisable dict."""
        return asdict(self)


class DivergedError(ArithmeticError):
    """Training diverged: an epoch's loss, the validation loss, the final weights or the final
    model's outputs are not finite.

    Raised by :func:`fit` at the end of that epoch (or of training). The model computes
    non-finite values: do not save it. Attributes: ``epoch`` (1-based), ``lr`` (the learning
    rate in force), ``loss``, ``history`` (the figures up to and including that epoch) and
    ``cause`` (what is not finite, as the message says it).
    """

    def __init__(self, epoch: int, epochs: int, lr: float, loss: float, history: History,
                 cause: str | None = None) -> None:
        self.epoch, self.lr, self.loss, self.history = epoch, lr, loss, history
        self.cause = cause if cause is not None else f"the loss is {loss}"
        super().__init__(
            f"training diverged in epoch {epoch} of {epochs} at learning rate {lr:g}: "
            f"{self.cause} (the model must not be saved); lower the learning rate "
            f"(e.g. to {lr / 10:g}) or its schedule and train again"
        )


class Callback:
    """Hooks called by :func:`fit`. Override what you need; all default to doing nothing."""

    def on_epoch_begin(self, epoch: int, epochs: int, num_batches: int) -> None:
        """Before the first batch of ``epoch`` (0-based)."""

    def on_batch_end(self, batch: int, running: Callable[[], tuple[float, float]]) -> None:
        """After each step. ``running()`` returns (mean loss, accuracy) so far in this epoch;
        calling it reads the device, so call it only now and then (e.g. to redraw a bar)."""

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        """After each epoch, with that epoch's loss, accuracy, val figures, seconds and lr."""


class PrintEpochs(Callback):
    """Prints one line per epoch (what ``fit(..., verbose=True)`` uses)."""

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        line = f"epoch {epoch + 1}: loss {logs['loss']:.4f}  accuracy {logs['accuracy']:.4f}"
        if "val_accuracy" in logs:
            line += f"  val_loss {logs['val_loss']:.4f}  val_accuracy {logs['val_accuracy']:.4f}"
        line += f"  {logs['seconds']:.2f}s  {logs['samples_per_second']:,.0f} samples/s"
        print(line, flush=True)


class Terminated(KeyboardInterrupt):
    """SIGTERM (what ``timeout``, Slurm, ``docker stop`` and systemd send), raised by the
    handler :func:`sigterm_raises` installs. A :class:`KeyboardInterrupt`, so every ``finally``
    block and every cleanup of an interrupted write runs as for Ctrl-C."""

    def __init__(self) -> None:
        super().__init__("terminated (SIGTERM)")


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """While active (main thread only), SIGTERM raises :class:`Terminated` instead of ending
    the process at once, so partial files are removed and :func:`portanet.fit` stops after
    the current step as for Ctrl-C. The ``portanet`` command runs inside it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class StopOnInterrupt:
    """While active, the first Ctrl-C asks the loop to stop after the current step; a second
    Ctrl-C interrupts at once. SIGTERM does the same where :func:`sigterm_raises` is active
    (elsewhere it keeps its own handling). Only in the main thread (signals can't be caught
    elsewhere). :attr:`last_signal` is the signal of the latest stop request in this process."""

    last_signal: int | None = None

    def __init__(self, enabled: bool) -> None:
        self.requested = False
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True
        StopOnInterrupt.last_signal = signum
        self._restore()  # a second signal acts at once

    def _restore(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}

    def __enter__(self) -> StopOnInterrupt:
        if self.enabled:
            StopOnInterrupt.last_signal = None
            self._previous[signal.SIGINT] = signal.signal(signal.SIGINT, self._handle)
            if signal.getsignal(signal.SIGTERM) is _raise_terminated:
                self._previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        self._restore()
