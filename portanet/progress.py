"""Progress on a terminal: a byte counter for downloads and a bar per training epoch.

Both draw a single line that is redrawn in place, a few times a second at most, and stay silent
when not enabled (output that is not a terminal gets only the epoch summary lines).
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any, TextIO

from portanet.train import Callback


class DownloadBar:
    """A one-line progress bar on a text stream; does nothing when not ``enabled``."""

    def __init__(self, label: str, total: int | None, enabled: bool, stream: IO[str] | None = None):
        self.label = label
        self.total = total
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self._last = 0.0

    def update(self, done: int, *, force: bool = False) -> None:
        """Show that ``done`` bytes have arrived (redrawn at most ten times a second)."""
        now = time.monotonic()
        if not self.enabled or (not force and now - self._last < 0.1):
            return
        self._last = now
        mb = done / 1e6
        if self.total:
            frac = min(done / self.total, 1.0)
            bar = "#" * int(frac * 30)
            line = f"{self.label} [{bar:<30}] {frac:4.0%} {mb:6.1f}/{self.total / 1e6:.1f} MB"
        else:
            line = f"{self.label} {mb:6.1f} MB"
        self.stream.write("\r" + line)
        self.stream.flush()

    def close(self, done: int) -> None:
        """Draw the final state and end the line."""
        if self.enabled:
            self.update(done, force=True)
            self.stream.write("\n")
            self.stream.flush()


class EpochProgress(Callback):
    """A one-line progress bar per epoch with running loss and accuracy (on a terminal only),
    and one summary line per epoch."""

    def __init__(self, stream: TextIO, bar: bool, epochs_total: int) -> None:
        self.stream = stream
        self.bar = bar
        self.epochs_total = epochs_total
        self._last_draw = 0.0

    def on_epoch_begin(self, epoch: int, epochs: int, num_batches: int) -> None:
        self.epoch, self.num_batches = epoch, num_batches
        self._start = time.perf_counter()
        self._last_draw = 0.0

    def on_batch_end(self, batch: int, running: Any) -> None:
        now = time.perf_counter()
        if not self.bar or (now - self._last_draw < 0.25 and batch + 1 < self.num_batches):
            return
        self._last_draw = now
        loss, accuracy = running()  # reads the device: only a few times a second
        done = (batch + 1) / self.num_batches
        filled = int(done * 30)
        self.stream.write(
            f"\r  epoch {self.epoch + 1}/{self.epochs_total} [{'#' * filled}{'.' * (30 - filled)}]"
            f" {done:4.0%}  loss {loss:.4f}  accuracy {accuracy:.2%}  {now - self._start:5.1f}s"
        )
        self.stream.flush()

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        if self.bar:
            self.stream.write("\r" + " " * 100 + "\r")
        line = (f"epoch {epoch + 1:>3}/{self.epochs_total}  loss {logs['loss']:.4f}  "
                f"train {logs['accuracy']:.2%}")
        if "val_accuracy" in logs:
            line += f"  val {logs['val_accuracy']:.2%}"
        line += (f"  lr {logs['lr']:.4g}  {logs['seconds']:.1f}s  "
                 f"{logs['samples_per_second']:,.0f} samples/s")
        print(line, flush=True)
