"""CuPy's side of the backend seam: is CUDA usable here, which device, and the messages a user sees.

Everything CuPy-specific that is not array math lives here, so that it can be tested with a fake
``cupy`` module on a machine without a GPU (see tests/test_cuda.py). Facts it relies on, from
CuPy 13/14's sources:

- ``import cupy`` can succeed on a machine with no driver or no GPU; the first CUDA call raises.
  When CuPy's compiled core cannot load, ``cupy`` raises a RuntimeError on first use whose text
  starts with a blank line and a row of ``=``, then a generic paragraph, then ``Original error:``
  and the line that matters.
- The plain ``cupy-cuda12x``/``cupy-cuda13x`` wheels of CuPy 14 expect a system CUDA toolkit
  (NVRTC, headers): with only the driver, ``import cupy`` and device queries work and the first
  elementwise kernel fails to compile. ``pip install "cupy-cuda12x[ctk]"`` brings the toolkit as
  wheels.
- ``cupy.cuda.Device()`` is the *current* device; ``Device(n)`` is not checked until entered.
  Arrays, kernels and ``cupy.random`` generators are created on the current device, so work
  meant for device n runs inside ``with cupy.cuda.Device(n):``.
- Kernel launches are asynchronous: a fault shows at the next synchronisation, so a probe must
  synchronise before it can say "usable".
"""

from __future__ import annotations

import importlib.util
import threading
from typing import Any

CUPY_INSTALL_HINT = (
    'install CuPy for your CUDA driver together with the CUDA toolkit libraries: '
    'pip install "portanet[cuda12-ctk]" (CUDA 12 driver, e.g. Colab) or '
    'pip install "portanet[cuda13-ctk]" (CUDA 13); the plain [cuda12]/[cuda13] extras expect a '
    'CUDA toolkit installed on the system'
)
CTK_HINT = (
    'CuPy could not compile a CUDA kernel, which usually means the CUDA toolkit (NVRTC and its '
    'headers) is missing: pip install "cupy-cuda12x[ctk]" (or "cupy-cuda13x[ctk]" for a CUDA 13 '
    'driver), i.e. pip install "portanet[cuda12-ctk]"'
)
MAX_LINE = 200

_status: tuple[bool, str] | None = None
_status_lock = threading.Lock()


def error_summary(exc: BaseException) -> str:
    """One useful line from a CuPy/CUDA exception: CuPy's banner and paragraphs dropped, the
    ``Original error:`` line kept, a compiler log cut to its first error."""
    text = str(exc)
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and set(line) - set("=-")]
    kind = type(exc).__name__
    line = ""
    for i, current in enumerate(lines):
        if current.lower().startswith("original error"):
            rest = current.split(":", 1)[1].strip()
            line = rest or (lines[i + 1] if i + 1 < len(lines) else "")
            break
    if not line and is_compile_failure(exc):
        errors = [x for x in lines if "error" in x.lower()]
        line = f"{kind}: " + (errors[0] if errors else (lines[0] if lines else "(no log)"))
    if not line:
        line = lines[0] if lines else kind
        if not line.startswith(kind):
            line = f"{kind}: {line}"
    return line if len(line) <= MAX_LINE else line[:MAX_LINE - 3] + "..."


def is_compile_failure(exc: BaseException) -> bool:
    """True for CuPy's kernel-compilation failures (NVRTC missing or failing, headers missing)."""
    text = f"{type(exc).__name__} {exc}".lower()
    return any(key in text for key in ("compileexception", "nvrtc", "cuda_fp16.h", "#include",
                                       "cannot open source file"))


def cuda_status(refresh: bool = False) -> tuple[bool, str]:
    """Whether CuPy can compute on a CUDA device here, and one line saying why (not).

    The probe (import, device count, one synchronised kernel on the current device) runs once
    per process; ``refresh=True`` runs it again.
    """
    global _status
    with _status_lock:
        if _status is None or refresh:
            _status = _probe()
        return _status


def _probe() -> tuple[bool, str]:
    if importlib.util.find_spec("cupy") is None:
        return False, f"CuPy is not installed; {CUPY_INSTALL_HINT}"
    try:
        import cupy

        count = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as exc:  # no driver, no device, a CUDA mismatch, a broken install
        return False, (f"CuPy is installed but cannot use a CUDA device ({error_summary(exc)}); "
                       f"check the NVIDIA driver (nvidia-smi) and that the cupy-cuda package "
                       f"matches its CUDA version: {CUPY_INSTALL_HINT}")
    if count < 1:
        return False, "CuPy is installed but no CUDA device is visible (CUDA_VISIBLE_DEVICES?)"
    try:
        with cupy.cuda.Device():  # the current device, where the work would run
            probe = cupy.zeros(2, dtype=cupy.float32) + 1  # compiles and launches a kernel
            cupy.cuda.runtime.deviceSynchronize()  # an asynchronous fault shows here
            value = float(probe.sum().get())
        if value != 2.0:
            return False, f"CuPy ran a test kernel on the GPU and got {value}, not 2.0"
    except Exception as exc:
        advice = CTK_HINT if is_compile_failure(exc) else "check the driver with nvidia-smi"
        return False, (f"CuPy sees {count} CUDA device(s) but cannot run on them "
                       f"({error_summary(exc)}); {advice}")
    return True, f"CuPy can use {count} CUDA device(s)"


def device(ordinal: Any = None) -> Any:
    """The ``cupy.cuda.Device`` to compute on: the current device for ``None``, else the
    ordinal (an int, ``"cuda:N"``, or a Device), checked against the visible devices."""
    import cupy

    if ordinal is None:
        return cupy.cuda.Device()
    if isinstance(ordinal, cupy.cuda.Device):
        ordinal = ordinal.id
    n = _ordinal(ordinal)
    count = int(cupy.cuda.runtime.getDeviceCount())
    if not 0 <= n < count:
        visible = f"0..{count - 1}" if count > 1 else "0"
        raise ValueError(
            f"there is no CUDA device {ordinal!r}: CuPy sees {count} device(s), numbered "
            f"{visible} (CUDA_VISIBLE_DEVICES renumbers them); pass one of those, or leave the "
            f"device unset to use the current device"
        )
    return cupy.cuda.Device(n)


def _ordinal(value: Any) -> int:
    text = value.strip().lower() if isinstance(value, str) else None
    if text is not None:
        text = text.removeprefix("cuda:").removeprefix("gpu:")
        if text.isdigit():
            return int(text)
    elif isinstance(value, int) and not isinstance(value, bool):
        return value
    elif hasattr(value, "__index__") and not isinstance(value, bool):
        return int(value.__index__())
    raise ValueError(f"a CUDA device is an ordinal like 0, 1 or 'cuda:1', got {value!r}")


def device_label(ordinal: int) -> str:
    """``"cuda:N (GPU name, memory)"`` for a CUDA device CuPy can use."""
    import cupy

    props = cupy.cuda.runtime.getDeviceProperties(ordinal)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    return f"cuda:{ordinal} ({name}, {props['totalGlobalMem'] / 2**30:.0f} GiB)"


class PoolPeak:
    """The peak bytes in use in CuPy's memory pool on one device while active, from a memory
    hook (every allocation from and every return to the pool), above what was in use on entry.

    CuPy's pool reports ``used_bytes()`` (now) and ``total_bytes()`` (held, including freed
    blocks kept for reuse); neither is a peak. ``total_bytes()`` after a run, having freed the
    cached blocks before it, is only an upper bound (blocks are split and rounded). This hook is
    the high-water mark of bytes handed out, comparable with tracemalloc's peak on NumPy.
    Hooks are per thread: allocations in other threads are not counted.

        with PoolPeak(device_id=0) as peak:
            ...                 # setup, e.g. input checks
            peak.mark()         # count from here
            fit(...)
        peak.peak_above_mark    # bytes
    """

    def __init__(self, device_id: int | None = None) -> None:
        import cupy

        self.device_id = cupy.cuda.Device().id if device_id is None else int(device_id)
        self.live: dict[int, int] = {}
        self.current = 0
        self.peak_bytes = 0
        self.marked = 0
        owner = self

        class _Hook(cupy.cuda.MemoryHook):
            name = "portanet.PoolPeak"

            def malloc_postprocess(self, **kw: Any) -> None:
                if kw.get("device_id") == owner.device_id and kw.get("mem_ptr"):
                    owner._add(int(kw["pmem_id"]), int(kw["mem_size"]))

            def free_postprocess(self, **kw: Any) -> None:
                if kw.get("device_id") == owner.device_id:
                    owner._remove(int(kw["pmem_id"]))

        self._hook = _Hook()

    def _add(self, key: int, size: int) -> None:
        self.current += size - self.live.get(key, 0)
        self.live[key] = size
        self.peak_bytes = max(self.peak_bytes, self.current)

    def _remove(self, key: int) -> None:
        self.current -= self.live.pop(key, 0)

    def mark(self) -> None:
        """Start the peak again from the bytes in use now (e.g. at the start of an epoch)."""
        self.marked = self.peak_bytes = self.current

    @property
    def peak_above_mark(self) -> int:
        """The peak bytes in use since :meth:`mark` (or entry), above those in use then."""
        return self.peak_bytes - self.marked

    def __enter__(self) -> PoolPeak:
        self._hook.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._hook.__exit__(*exc)
