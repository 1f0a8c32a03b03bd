"""The backend seam as one table, :data:`SEAMS`: per array library, how to load it, move an
array to the host, wait for the device, describe the device, enter the device, and what differs
between libraries as capabilities (weight layout, host arrays, a device generator, launch-bound
kernels, fast paths). :mod:`portanet.backend`, the training loop, ``portanet info``,
``portanet check``, the tests and the benchmarks read this table instead of branching on the
backend's name.

To add a backend, add a row here; :data:`portanet.backend.BACKEND_NAMES` follows the table.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from portanet.backend import cuda
from portanet.backend.cuda import cuda_status
from portanet.backend.heap import keep_freed_memory


class BackendUnavailableError(RuntimeError):
    """The requested backend cannot run here (library missing, or no usable device)."""


# --- speed capabilities: what a backend's arrays allow beyond the standard ---------------------
# Layers and optimizers ask for a capability and never test a backend's name; each Seam row
# carries its own, and a row without any gets the portable answers (no fast path).


@dataclass(frozen=True)
class Capabilities:
    """What the layers and optimizers may use beyond the standard on one backend.

    Attributes:
        in_place: arrays can be written in place, and a basic-indexing view written in place
            updates the array it views (NumPy, CuPy, PyTorch; not JAX, not guaranteed by the
            standard, so array-api-strict takes the portable path and keeps it tested).
        subtract_scaled: ``(p, g, factor, state) -> p`` doing ``p -= factor * g`` in place
            without a temporary (``state``: the caller's dict for reusable buffers); None for
            the portable form.
        split_batch: its elementwise operations run on one core and release the GIL, so
            ``fit(threads=None)`` shares a convolutional step among threads where it pays
            (:mod:`portanet.parallel.engine`; NumPy).
    """

    in_place: bool = False
    subtract_scaled: Callable[[Any, Any, float, dict[str, Any]], Any] | None = None
    split_batch: bool = False


SCRATCH_MIN_SIZE = 1 << 16
"""Below this many elements NumPy's temporary comes from its small-block cache, and the
scratch buffer's bookkeeping would cost more than it saves (per-sample SGD)."""


def _numpy_subtract_scaled(p: Any, g: Any, factor: float, state: dict[str, Any]) -> Any:
    """``factor * g`` into a scratch buffer kept in ``state`` (laid out like ``g``), subtracted
    in place: a step allocates nothing, and the arithmetic is the portable form's, bit for bit.
    """
    if g.size < SCRATCH_MIN_SIZE or not p.flags.writeable:
        p -= factor * g
        return p
    buf = state.get("scratch")
    if buf is None or buf.shape != g.shape or buf.dtype != g.dtype or buf.strides != g.strides:
        buf = state["scratch"] = np.empty_like(g)
    np.multiply(g, factor, out=buf)
    np.subtract(p, buf, out=p)
    return p


def _torch_subtract_scaled(p: Any, g: Any, factor: float, state: dict[str, Any]) -> Any:
    if p.requires_grad:
        p -= factor * g
        return p
    return p.sub_(g, alpha=factor)  # one fused pass (one rounding, not two)


CPU_INFERENCE_BATCH = 256
GPU_INFERENCE_BATCH = 2048


def _cpu_batch(device: Any) -> int:
    return CPU_INFERENCE_BATCH


def _torch_batch(device: Any) -> int:
    return GPU_INFERENCE_BATCH if getattr(device, "type", None) == "cuda" else CPU_INFERENCE_BATCH


PORTABLE = Capabilities()
"""No fast path: what array-api-strict runs, and what the parity tests compare against."""


@dataclass(frozen=True)
class Seam:
    """How portanet talks to one array library: one row of :data:`SEAMS`.

    Attributes:
        name: the backend name.
        module: the module that must be importable.
        requirement: what to ``pip install`` when it is not.
        load: ``device -> (xp, device)``; raises BackendUnavailableError or ValueError.
        to_host: ``array -> new NumPy array`` (an explicit copy from the device).
        synchronize: ``device -> None``: wait until the device has finished its queued work.
        describe: ``device -> str``, e.g. ``"cpu"`` or ``"cuda:0 (NVIDIA H100, 80 GiB)"``.
        activate: ``device -> context manager`` in which the library computes on that device.
        transposed_weights: keep Dense weights in (out, in) memory order (see
            :attr:`Backend.weights_transposed`).
        host_arrays: its arrays are host NumPy arrays (no copy to or from the device).
        device_generator: ``(device, seed) -> generator`` with a ``random(shape, dtype)``
            method drawing on the device, or None to draw on the host and copy.
        launch_bound: a GPU library whose small kernels are bound by launch overhead, so
            per-sample SGD is expected to run faster on the CPU.
        probe: ``() -> (usable, why)`` where importing the module is not enough (a device
            must be usable); None: usable when the module can be found.
        distributions: the pip distributions that may provide the module, for its version.
        capabilities: the fast paths its arrays allow (:class:`Capabilities`).
        inference_batch: ``device -> int``, the batch ``evaluate`` and ``predict`` use unless
            told: small on a CPU, where a batch's activations then stay in cache (measured on
            NumPy, ``cnn``: 256 images per batch take half the time of 2,048), large on a GPU,
            which needs many images at once to fill it.
    """

    name: str
    module: str
    requirement: str
    load: Callable[[Any], tuple[ModuleType, Any]]
    to_host: Callable[[Any], np.ndarray]
    synchronize: Callable[[Any], None]
    describe: Callable[[Any], str]
    activate: Callable[[Any], contextlib.AbstractContextManager[Any]]
    transposed_weights: bool
    host_arrays: bool = False
    device_generator: Callable[[Any, int], Any] | None = None
    launch_bound: bool = False
    probe: Callable[[], tuple[bool, str]] | None = None
    distributions: tuple[str, ...] = ()
    capabilities: Capabilities = PORTABLE
    inference_batch: Callable[[Any], int] = lambda device: GPU_INFERENCE_BATCH

    def available(self) -> tuple[bool, str]:
        """Whether this backend can run here, and one line saying why (not)."""
        if self.probe is not None:
            return self.probe()
        if importlib.util.find_spec(self.module) is None:
            return False, f"not installed (pip install {self.requirement})"
        return True, "installed"

    def version(self) -> str | None:
        """The installed library's version, or None."""
        import importlib.metadata

        for dist in self.distributions or (self.requirement,):
            try:
                return importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                pass
        return None


def _nothing(device: Any) -> None:
    return None


def _no_context(device: Any) -> contextlib.AbstractContextManager[Any]:
    return contextlib.nullcontext()


def _load_numpy(device: Any) -> tuple[ModuleType, Any]:
    if device not in (None, "cpu"):
        raise ValueError(f"the numpy backend runs on the CPU only, got device {device!r}")
    from portanet.backend import numpy_namespace as xp
    keep_freed_memory()  # a tenth of a CNN step was the kernel zeroing fresh pages
    return xp, "cpu"


def _load_cupy(device: Any) -> tuple[ModuleType, Any]:
    usable, why = cuda_status()
    if not usable:
        raise BackendUnavailableError(f"the 'cupy' backend is unavailable: {why}.")
    import array_api_compat.cupy as xp

    return xp, cuda.device(device)


def _load_strict(device: Any) -> tuple[ModuleType, Any]:
    if importlib.util.find_spec("array_api_strict") is None:
        raise BackendUnavailableError(
            "the 'array_api_strict' backend needs array-api-strict: "
            "pip install array-api-strict (or pip install 'portanet[test]')"
        )
    import array_api_strict as xp

    return xp, xp.Device(device or "CPU_DEVICE")


def _load_torch(device: Any) -> tuple[ModuleType, Any]:
    if importlib.util.find_spec("torch") is None:
        raise BackendUnavailableError("the 'torch' backend needs PyTorch: pip install torch")
    import array_api_compat.torch as xp
    import torch

    return xp, torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def _strict_to_host(array: Any) -> np.ndarray:
    import array_api_strict

    return np.array(array.to_device(array_api_strict.Device("CPU_DEVICE")), copy=True)


def _strict_describe(device: Any) -> str:
    text = str(device)  # "array_api_strict.Device('CPU_DEVICE')"
    return text.split("'")[1] if text.count("'") == 2 else text


def _cupy_generator(device: Any, seed: int) -> Any:
    import cupy

    return cupy.random.default_rng(seed)


def _torch_sync(device: Any) -> None:
    if getattr(device, "type", None) == "cuda":
        import torch

        torch.cuda.synchronize(device)


def _torch_describe(device: Any) -> str:
    if getattr(device, "type", None) == "cuda":
        import torch

        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return str(device)


SEAMS: dict[str, Seam] = {
    "numpy": Seam("numpy", "numpy", "numpy", _load_numpy,
                  to_host=lambda a: np.array(a, copy=True), synchronize=_nothing,
                  describe=lambda d: "cpu", activate=_no_context, transposed_weights=True,
                  host_arrays=True,
                  capabilities=Capabilities(in_place=True,
                                            subtract_scaled=_numpy_subtract_scaled,
                                            split_batch=True),
                  inference_batch=_cpu_batch),
    # CuPy: kernels run on the current device, so the backend enters its device around work.
    "cupy": Seam("cupy", "cupy", "portanet[cuda12-ctk]", _load_cupy,
                 to_host=lambda a: a.get(), synchronize=lambda d: d.synchronize(),
                 describe=lambda d: cuda.device_label(d.id), activate=lambda d: d,
                 transposed_weights=False, device_generator=_cupy_generator,
                 launch_bound=True, probe=cuda_status,
                 distributions=("cupy-cuda13x", "cupy-cuda12x", "cupy"),
                 capabilities=Capabilities(in_place=True)),
    "array_api_strict": Seam("array_api_strict", "array_api_strict", "array-api-strict",
                             _load_strict, to_host=_strict_to_host, synchronize=_nothing,
                             describe=_strict_describe, activate=_no_context,
                             transposed_weights=True, inference_batch=_cpu_batch),
    # PyTorch places each operation on its operands' device; no context is needed.
    "torch": Seam("torch", "torch", "torch", _load_torch,
                  to_host=lambda a: a.detach().cpu().numpy().copy(), synchronize=_torch_sync,
                  describe=_torch_describe, activate=_no_context, transposed_weights=True,
                  capabilities=Capabilities(in_place=True,
                                            subtract_scaled=_torch_subtract_scaled),
                  inference_batch=_torch_batch),
}
"""The backend seam, one row per backend (``auto`` resolves to one of these)."""

_OTHER = Seam("other", "", "", _load_numpy,
              to_host=lambda a: np.asarray(np.from_dlpack(a)).copy(), synchronize=_nothing,
              describe=str, activate=_no_context, transposed_weights=True)
