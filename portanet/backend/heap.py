"""Keep large freed blocks in the process heap, so a training step does not fault its memory in
again on every step (glibc on Linux; a no-op elsewhere).

A step of a CNN allocates and frees tens of arrays of a few to tens of MiB. By default glibc
serves such blocks with ``mmap`` and returns them to the system when freed, or trims its heap
once a few of them are free, so the next step touches fresh pages: the kernel zeroes each page
on first touch, about a tenth of a NumPy CNN step (``cnn-fast`` on 2 vCPUs: 5.5-6.0 s -> 5.0-5.2 s
per epoch of 30,720 images, same peak memory). With ``M_MMAP_THRESHOLD`` at 64 MiB and
``M_TRIM_THRESHOLD`` at 1 GiB, freed blocks stay in the heap and the next step reuses them.

The setting is process-wide: freed memory up to 1 GiB is kept for reuse instead of returned.
``PORTANET_KEEP_HEAP=0`` leaves malloc as it is, and so does any ``MALLOC_MMAP_THRESHOLD_`` or
``MALLOC_TRIM_THRESHOLD_`` the user has set (their choice wins).
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 64 << 20
TRIM_THRESHOLD = 1 << 30

_done: bool | None = None


def keep_freed_memory() -> bool:
    """Tune glibc's malloc once per process (see the module docstring); whether it applies."""
    global _done
    if _done is None:
        _done = _tune()
    return _done


def _tune() -> bool:
    if os.environ.get("PORTANET_KEEP_HEAP", "1") == "0" or sys.platform != "linux":
        return False
    if any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc (musl, for one, has no such knobs)
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
