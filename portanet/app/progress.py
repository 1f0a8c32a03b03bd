"""Progress on a terminal for the command line: a bar per training epoch, redrawn in place a
few times a second at most (output that is not a terminal gets only the epoch summary lines).
The downloader's byte counter is :class:`portanet.data.download.DownloadBar`.
"""

from __future__ import annotations

import time
from typing import Any, TextIO

from portanet.callbacks import Callback


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
