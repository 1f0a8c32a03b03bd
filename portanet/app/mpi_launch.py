"""The ``portanet`` command under mpiexec: the world it trains in, and its guard that stops
every rank when one fails.

The communicator itself, and what :func:`portanet.fit` does with it, is
:mod:`portanet.parallel.mpi`; this is only the command line's use of it.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any

from portanet.parallel import mpi


def abort_on_error(command: Callable[..., int]) -> Callable[..., int]:
    """Wrap a command-line command: under mpiexec, an exception on one rank prints
    ``portanet: rank r of K: ...`` and aborts every rank (exit status 2), since the others
    would wait for it forever; without mpi4py it prints what to install. Outside MPI the
    command runs unchanged."""

    @functools.wraps(command)
    def guarded(*args: Any, **kwargs: Any) -> int:
        if not mpi.launched_by_mpi():
            return command(*args, **kwargs)
        try:
            return command(*args, **kwargs)
        except mpi.MPIUnavailableError as exc:
            print(f"portanet: {exc}", file=sys.stderr)
            return 2
        except BaseException as exc:
            comm = mpi.started_world()
            clean_exit = isinstance(exc, SystemExit) and not exc.code
            if comm is None or comm.size == 1 or clean_exit \
                    or getattr(exc, "on_every_rank", False):
                raise
            kind = "" if isinstance(exc, (ValueError, KeyboardInterrupt)) \
                else f"{type(exc).__name__}: "
            print(f"portanet: rank {comm.rank} of {comm.size}: {kind}{exc}; stopping every "
                  f"rank", file=sys.stderr)
            comm.abort(2)
            raise

    return guarded


def command_line_world() -> mpi.Communicator:
    """For ``portanet train``: the world; when launched by mpiexec, after printing its size
    (rank 0) and silencing standard output on the other ranks."""
    comm = mpi.world()
    if not mpi.launched_by_mpi():
        return comm
    if comm.is_root:
        print(f"MPI world: {comm.describe()}; --batch-size is the global batch, split across "
              f"the processes", flush=True)
    else:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    return comm
