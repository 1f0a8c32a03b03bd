"""How a ``portanet`` command ends: with its exit status and, on failure, one line.

:func:`run` wraps every command. Within it:

- SIGTERM (``timeout``, Slurm, ``docker stop``, systemd) raises :class:`~portanet.callbacks.
  Terminated`, a ``KeyboardInterrupt``: training stops after the current step as for Ctrl-C,
  partial files are removed, and the status is 143 (130 for Ctrl-C);
- standard output that fails (a reader such as ``head`` that stopped reading, a full disk) no
  longer stops the work: the rest of the output is dropped, the work goes on (a model is still
  saved), and the command ends quietly with 141 for a broken pipe, or with one line on standard
  error and status 1 for any other failure;
- an error is one line naming the problem and the fix: 2 for a bad argument or input
  (permission denied included), 1 for a failed write or any other system error.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
from collections.abc import Callable
from typing import Any, TextIO

from portanet.callbacks import StopOnInterrupt, Terminated, sigterm_raises
from portanet.files import DiskFullError

__all__ = ["Run", "StdoutGuard", "interrupted_status", "run"]

BROKEN_PIPE_STATUS = 141
"""128 + SIGPIPE: what a shell reports for a program that a closed pipe ended."""


class Run:
    """What :func:`run` knows of the command: its name for messages, set once it is parsed."""

    def __init__(self) -> None:
        self.name = "portanet"


class StdoutGuard:
    """``sys.stdout`` during a command: the first failure to write is kept, later output is
    dropped, and the file descriptor is pointed at ``os.devnull`` so that no flush (not even
    the interpreter's last one) fails again."""

    def __init__(self, inner: TextIO) -> None:
        self.inner = inner
        self.failure: OSError | None = None

    def write(self, text: str) -> int:
        if self.failure is None:
            try:
                return self.inner.write(text)
            except OSError as exc:
                self._failed(exc)
        return len(text)

    def flush(self) -> None:
        if self.failure is None:
            try:
                self.inner.flush()
            except OSError as exc:
                self._failed(exc)

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding, ...
        return getattr(self.inner, name)

    def _failed(self, exc: OSError) -> None:
        self.failure = exc
        with contextlib.suppress(OSError, ValueError, AttributeError):
            fd = self.inner.fileno()
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, fd)
            os.close(devnull)

    def outcome(self, status: int, name: str) -> int:
        """The exit status once the command returned ``status``: a broken pipe ends quietly
        (the reader wanted no more), another failure says so in one line."""
        if self.failure is None:
            return status
        if self.failure.errno == errno.EPIPE:
            return status or BROKEN_PIPE_STATUS
        why = self.failure.strerror or str(self.failure)
        print(f"{name}: cannot write to standard output ({why}), so its output was cut short "
              f"(the work itself went on); send the output to a place with room, e.g. "
              f"> file on another disk", file=sys.stderr)
        return status or 1


def interrupted_status() -> int:
    """The exit status of a run that stopped early on request: 143 for SIGTERM, 130 for
    Ctrl-C."""
    return 128 + (StopOnInterrupt.last_signal or signal.SIGINT)


def run(work: Callable[[Run], int], one_line: tuple[type[BaseException], ...] = ()) -> int:
    """Run a command, ``work(run)``, as the module docstring says; its exit status.

    Args:
        work: parses and runs the command, setting ``run.name`` once it knows it.
        one_line: the errors (besides ``ValueError`` and ``FileNotFoundError``) that mean a bad
            argument or input: printed as one line, status 2.
    """
    state = Run()
    guard = StdoutGuard(sys.stdout)
    sys.stdout = guard  # type: ignore[assignment]
    try:
        with sigterm_raises():
            try:
                status = _ended(work, state, one_line)
            finally:
                guard.flush()
    finally:
        sys.stdout = guard.inner
    return guard.outcome(status, state.name)


def _ended(work: Callable[[Run], int], state: Run,
           one_line: tuple[type[BaseException], ...]) -> int:
    """``work``'s status, or the status of the error it raised, printed as one line."""
    try:
        return work(state)
    except DiskFullError as exc:  # after the work: what was written before it is kept
        print(f"{state.name}: {exc}", file=sys.stderr)
        return 1
    except (*one_line, FileNotFoundError, ValueError) as exc:
        print(f"{state.name}: {exc}", file=sys.stderr)
        return 2
    except PermissionError as exc:
        where = exc.filename if exc.filename is not None else "a file or folder it needs"
        print(f"{state.name}: cannot use {where}: permission denied; give this user access to "
              f"it (chmod: r for a file, r and x for a folder) or choose another path",
              file=sys.stderr)
        return 2
    except Terminated:
        print(f"\n{state.name}: terminated (SIGTERM)", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print(f"\n{state.name}: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # a system error the command does not expect: still one line
        where = f" {exc.filename}" if exc.filename is not None else ""
        print(f"{state.name}: cannot go on:{where} {exc.strerror or exc}; check that path "
              f"and the system's state (disk, network, limits), then try again", file=sys.stderr)
        return 1
