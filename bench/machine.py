"""Machine facts recorded with every result, and the CPU-contention probes used while timing.

Nothing here changes a setting: BLAS threads, ``OPENBLAS_CORETYPE`` and friends are read and
reported as they are in force.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.metadata
import importlib.util
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ENV_VARS = (
    "OPENBLAS_CORETYPE",
    "OPENBLAS_NUM_THREADS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "MKL_ENABLE_INSTRUCTIONS",
    "OPENBLAS_VERBOSE",
    "GOTO_NUM_THREADS",
    "NVPL_BLAS_DEBUG_CPU_TYPE",
    "CUDA_VISIBLE_DEVICES",
    "PORTANET_BACKEND",
)

# --- load and contention -------------------------------------------------------------------------


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (empty where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def _busy_cpu_seconds() -> float | None:
    """CPU seconds all processes on the machine have used so far (from /proc/stat)."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    # user nice system idle iowait irq softirq steal ...
    ticks = [int(v) for v in fields[1:]]
    busy = sum(ticks[:3]) + sum(ticks[5:8])
    return busy / os.sysconf("SC_CLK_TCK")


class Contention:
    """How many cores other processes kept busy while a measurement ran.

    ``others_cores`` = (machine-wide busy CPU seconds - this process's CPU seconds) / wall
    seconds: 0 on a quiet machine, 1 when something else kept one core busy throughout.
    """

    def __init__(self) -> None:
        self.busy0 = _busy_cpu_seconds()
        self.own0 = time.process_time()
        self.wall0 = time.perf_counter()

    def others_cores(self) -> float | None:
        busy = _busy_cpu_seconds()
        wall = time.perf_counter() - self.wall0
        if busy is None or self.busy0 is None or wall <= 0:
            return None
        others = (busy - self.busy0) - (time.process_time() - self.own0)
        return round(max(others, 0.0) / wall, 2)


def others_cores_now(window: float = 2.0) -> float | None:
    """Cores other processes kept busy over the next ``window`` seconds (this one sleeps)."""
    watch = Contention()
    time.sleep(window)
    return watch.others_cores()


def wait_for_quiet(threshold: float, max_wait: float, poll: float = 5.0,
                   say: Any = print) -> dict[str, Any]:
    """Poll the 1-minute load average until it is below ``threshold`` or ``max_wait`` seconds
    have passed. Returns what happened (for the results)."""
    start = time.monotonic()
    first = load_average()
    load = first
    announced = False
    while load and load[0] >= threshold and time.monotonic() - start < max_wait:
        if not announced:
            say(f"waiting up to {max_wait:.0f}s for the 1-minute load average "
                f"({load[0]:.2f}) to fall below {threshold}")
            announced = True
        time.sleep(min(poll, max(max_wait - (time.monotonic() - start), 0.1)))
        load = load_average()
    waited = time.monotonic() - start
    quiet = bool(load) and load[0] < threshold
    if announced:
        say(f"load average now {load[0]:.2f} after {waited:.0f}s"
            + ("" if quiet else " (gave up waiting; timings may be inflated)"))
    return {"threshold": threshold, "max_wait_seconds": max_wait, "load_before_wait": first,
            "waited_seconds": round(waited, 1), "load_after_wait": load, "quiet": quiet}


# --- CPU, BLAS, versions -------------------------------------------------------------------------


def cpu_facts() -> dict[str, Any]:
    """CPU model, logical cores, the cores this process may use, and the SIMD flags."""
    model, flags = platform.processor() or "", []
    try:
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not model:
                model = value.strip()
            if key.strip() == "flags" and not flags:
                flags = value.split()
            if model and flags:
                break
    except OSError:
        pass
    simd = [f for f in ("avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile")
            if f in flags]
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
                break
    except OSError:
        pass
    return {"model": model or platform.machine(), "logical_cores": os.cpu_count(),
            "usable_cores": usable, "simd": simd, "memory_bytes": mem,
            "platform": platform.platform()}


def _loaded_blas_libraries() -> list[str]:
    """Paths of BLAS shared libraries mapped into this process (Linux)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return []
    seen: list[str] = []
    for line in maps.splitlines():
        path = line.split()[-1] if len(line.split()) >= 6 else ""
        name = os.path.basename(path).lower()
        if any(k in name for k in ("openblas", "libmkl_rt", "libblis", "libflexiblas")) \
                and path not in seen:
            seen.append(path)
    return seen


def _call(lib: ctypes.CDLL, names: tuple[str, ...], restype: Any) -> Any:
    for name in names:
        fn = getattr(lib, name, None)
        if fn is not None:
            fn.restype = restype
            fn.argtypes = []
            value = fn()
            return value.decode() if isinstance(value, bytes) else value
    return None


def _openblas_names(stem: str) -> tuple[str, ...]:
    """Symbol names an OpenBLAS build may export for ``openblas_<stem>``."""
    return tuple(f"{prefix}_{stem}{suffix}" for prefix in ("scipy_openblas", "openblas")
                 for suffix in ("64_", "_64", ""))


def openblas_runtime() -> dict[str, Any] | None:
    """What the OpenBLAS that NumPy loaded says about itself: core type picked at run time,
    thread count, build configuration (read through ctypes; nothing is changed)."""
    import numpy  # noqa: F401  (load NumPy's BLAS first)

    for path in _loaded_blas_libraries():
        if "openblas" not in os.path.basename(path).lower():
            continue
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        names = _openblas_names
        return {
            "library": path,
            "core": _call(lib, names("get_corename"), ctypes.c_char_p),
            "threads": _call(lib, names("get_num_threads"), ctypes.c_int),
            "parallel": {0: "sequential", 1: "pthreads", 2: "openmp"}.get(
                _call(lib, names("get_parallel"), ctypes.c_int)),
            "config": _call(lib, names("get_config"), ctypes.c_char_p),
        }
    return None


def threadpool_info() -> list[dict[str, Any]] | None:
    """threadpoolctl's view of the BLAS/OpenMP pools, when threadpoolctl is installed."""
    if importlib.util.find_spec("threadpoolctl") is None:
        return None
    try:
        import threadpoolctl

        return threadpoolctl.threadpool_info()
    except Exception as exc:  # report, never fail the benchmark over it
        return [{"error": repr(exc)}]


def numpy_blas() -> dict[str, Any]:
    """NumPy's BLAS: build configuration (``numpy.show_config``), run-time core and threads."""
    import numpy

    info: dict[str, Any] = {}
    try:
        config = numpy.show_config(mode="dicts")
        blas = config.get("Build Dependencies", {}).get("blas", {})
        info = {"name": blas.get("name"), "version": blas.get("version"),
                "build_config": blas.get("openblas configuration")}
        simd = config.get("SIMD Extensions", {})
        info["numpy_simd_found"] = simd.get("found")
    except Exception as exc:
        info = {"error": f"numpy.show_config(mode='dicts') failed: {exc!r}"}
    runtime = openblas_runtime()
    if runtime is not None:
        info["runtime"] = runtime
    pools = threadpool_info()
    if pools is not None:
        info["threadpoolctl"] = pools
    info["threads"] = blas_threads(info)
    return info


def blas_threads(info: dict[str, Any] | None = None) -> int:
    """Threads NumPy's BLAS uses (OpenBLAS via ctypes, threadpoolctl, env, else the cores)."""
    info = info if info is not None else {}
    runtime = info.get("runtime") or openblas_runtime()
    if runtime and isinstance(runtime.get("threads"), int) and runtime["threads"] > 0:
        return runtime["threads"]
    for pool in info.get("threadpoolctl") or []:
        if pool.get("user_api") == "blas" and pool.get("num_threads"):
            return int(pool["num_threads"])
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, Any]:
    """Python and library versions (``None`` for libraries that are not installed)."""
    import numpy

    import portanet

    out: dict[str, Any] = {
        "python": sys.version.split()[0],
        "numpy": numpy.__version__,
        "array_api_compat": _version("array-api-compat"),
        "array_api_strict": _version("array-api-strict"),
        "torch": None,
        "cupy": None,
        "portanet": portanet.__version__,
    }
    for dist in ("cupy-cuda13x", "cupy-cuda12x", "cupy-cuda11x", "cupy"):
        if _version(dist):
            out["cupy"] = f"{_version(dist)} ({dist})"
            break
    if importlib.util.find_spec("torch") is not None:
        out["torch"] = _version("torch")
    out["portanet_git"] = _git_describe()
    out["portanet_source_sha256"] = _source_digest(Path(portanet.__file__).parent)
    return out


def _source_digest(package: Path) -> str:
    """sha256 over the package's ``.py`` files (names and contents): identifies the exact code
    measured even when the checkout has uncommitted changes."""
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _git_describe() -> dict[str, Any] | None:
    """The checkout's commit and whether it has local changes (read-only git calls)."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10)
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                                 "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return {"commit": head.stdout.strip(), "tracked_changes": bool(status.stdout.strip())}


def torch_facts() -> dict[str, Any] | None:
    """PyTorch's threads and math libraries (only when it is already imported)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    facts: dict[str, Any] = {"threads": torch.get_num_threads(),
                             "interop_threads": torch.get_num_interop_threads(),
                             "cuda_available": bool(torch.cuda.is_available())}
    try:
        facts["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    except Exception:
        pass
    try:
        shown = torch.__config__.show()
        facts["blas"] = next((line.split("BLAS_INFO=")[1].split(",")[0]
                              for line in shown.splitlines() if "BLAS_INFO=" in line), None)
        facts["mkl"] = bool(torch.backends.mkl.is_available())
    except Exception:
        pass
    if facts["cuda_available"]:
        facts["cuda_device"] = torch.cuda.get_device_name(0)
        facts["cuda_version"] = torch.version.cuda
    return facts


def gpu_facts() -> dict[str, Any]:
    """GPU name, memory, driver and CUDA runtime as CuPy sees them, or why it sees none."""
    from portanet.backend import cuda_status

    usable, why = cuda_status()
    if not usable:
        return {"usable": False, "why": why}
    import cupy

    rt = cupy.cuda.runtime
    props = rt.getDeviceProperties(0)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    return {"usable": True, "why": why, "name": name, "devices": rt.getDeviceCount(),
            "memory_bytes": int(props.get("totalGlobalMem", 0)),
            "driver_version": rt.driverGetVersion(), "runtime_version": rt.runtimeGetVersion()}


def machine_facts() -> dict[str, Any]:
    """Everything about the machine a reader needs to interpret the figures."""
    return {
        "cpu": cpu_facts(),
        "numpy_blas": numpy_blas(),
        "env": {var: os.environ.get(var) for var in ENV_VARS},
        "gpu": gpu_facts(),
        "versions": versions(),
        "torch": torch_facts(),
        "hostname": platform.node(),
    }
