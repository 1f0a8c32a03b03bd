"""Backends: which array library the math runs on, on which device, in which float dtype.

A :class:`Backend` is the one place where portanet touches a concrete array library. Everything
else is written against its ``xp`` namespace (the Python array API standard, through
array-api-compat), so the same code runs on NumPy, CuPy, array-api-strict and PyTorch.

Conversions happen only here, at the boundary: host NumPy arrays go in with
:meth:`Backend.asarray` and come out with :meth:`Backend.to_numpy`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

BACKEND_NAMES = ("auto", "numpy", "cupy", "array_api_strict", "torch")
DTYPE_NAMES = ("float32", "float64")
ENV_VAR = "PORTANET_BACKEND"

CUPY_INSTALL_HINT = (
    'install CuPy for your CUDA version: pip install "portanet[cuda12]" (CUDA 12, e.g. Colab) '
    'or pip install "portanet[cuda13]" (CUDA 13)'
)


class BackendUnavailableError(RuntimeError):
    """The requested backend cannot run here (library missing, or no usable device)."""


@dataclass(eq=False)
class Backend:
    """What the math needs: array namespace, device, float dtype and a seeded host generator.

    Attributes:
        name: ``"numpy"``, ``"cupy"``, ``"array_api_strict"`` or ``"torch"``.
        xp: the array-API namespace (from array-api-compat, or array-api-strict itself).
        device: the device arrays are created on (``xp.asarray(..., device=device)``).
        dtype: the float dtype of parameters and activations, an ``xp`` dtype object.
        rng: the host random generator; random numbers are drawn here and copied to the device,
            so the same seed gives the same numbers on every backend.
        note: a human-readable line on how this backend was chosen (``"auto"`` explains itself).
    """

    name: str
    xp: ModuleType
    device: Any
    dtype: Any
    rng: np.random.Generator = field(repr=False)
    note: str = ""

    @property
    def dtype_name(self) -> str:
        """The float dtype as a string, ``"float32"`` or ``"float64"``."""
        return "float64" if self.dtype == self.xp.float64 else "float32"

    @property
    def device_name(self) -> str:
        """A short description of the device, e.g. ``"cpu"`` or ``"cuda:0 (NVIDIA H100)"``."""
        if self.name == "cupy":
            return cuda_device_label(self.device.id)
        return str(self.device)

    def with_dtype(self, dtype: str) -> Backend:
        """This backend (same namespace, device and generator) computing in ``dtype``."""
        if dtype not in DTYPE_NAMES:
            raise ValueError(f"unknown dtype {dtype!r}; choose 'float32' or 'float64'")
        if dtype == self.dtype_name:
            return self
        _check_dtype_supported(self.name, self.xp, self.device, dtype)
        return dataclasses.replace(self, dtype=getattr(self.xp, dtype))

    def asarray(self, host: Any, dtype: Any = None) -> Any:
        """Copy a host array (NumPy or nested lists) onto this backend's device.

        ``dtype`` defaults to the backend's float dtype for floating input and keeps integer and
        boolean input as it is.
        """
        host = np.asarray(host)
        if dtype is None:
            dtype = self.dtype if host.dtype.kind in "fc" else self.from_numpy_dtype(host.dtype)
        host = np.ascontiguousarray(host, dtype=self.to_numpy_dtype(dtype))
        return self.xp.asarray(host, device=self.device)

    def to_numpy(self, array: Any) -> np.ndarray:
        """Copy an array of this backend to a new host NumPy array (never a view)."""
        self.check_array(array, "array")
        if self.name == "numpy":
            return np.array(array, copy=True)
        if self.name == "cupy":
            return array.get()
        if self.name == "torch":
            return array.detach().cpu().numpy().copy()
        if self.name == "array_api_strict":
            import array_api_strict

            on_cpu = array.to_device(array_api_strict.Device("CPU_DEVICE"))
            return np.array(on_cpu, copy=True)
        return np.asarray(np.from_dlpack(array)).copy()

    def to_numpy_dtype(self, dtype: Any) -> np.dtype:
        """The NumPy dtype with the same name as an ``xp`` dtype (or a name / NumPy dtype)."""
        if isinstance(dtype, str):
            return np.dtype(dtype)
        for name in ("float32", "float64", "int64", "int32", "uint8", "bool"):
            if dtype == getattr(self.xp, name, None):
                return np.dtype(name)
        return np.dtype(dtype)

    def from_numpy_dtype(self, dtype: np.dtype) -> Any:
        """The ``xp`` dtype with the same name as a NumPy dtype."""
        return getattr(self.xp, np.dtype(dtype).name)

    def owns(self, array: Any) -> bool:
        """True when ``array`` is an array of this backend's namespace."""
        try:
            namespace = namespace_of(array)
        except TypeError:
            return False
        return namespace is self.xp or namespace is getattr(self.xp, "base_namespace", None)

    def check_array(self, array: Any, what: str) -> None:
        """Raise a ValueError naming ``what`` when ``array`` belongs to another backend."""
        if self.owns(array):
            return
        kind = type(array).__module__.split(".")[0] + "." + type(array).__name__
        raise ValueError(
            f"{what} is a {kind}, but this model lives on the {self.name!r} backend; "
            f"portanet never copies between backends silently. Convert it once with "
            f"backend.asarray(host_numpy_array), or move the model with portanet.load(path, "
            f"backend=...)."
        )

    def uniform(self, shape: tuple[int, ...]) -> Any:
        """Uniform [0, 1) random numbers of the backend dtype on the device.

        On CuPy they are drawn by CuPy's own generator (seeded from the host generator), which
        avoids a host-to-device copy for every dropout mask; everywhere else they come from the
        host generator.
        """
        if self.name == "cupy":
            if self._device_rng is None:
                import cupy

                self._device_rng = cupy.random.default_rng(int(self.rng.integers(2**63)))
            with self.device:
                return self._device_rng.random(shape, dtype=self.to_numpy_dtype(self.dtype))
        host = self.rng.random(shape, dtype=np.float32)
        return self.asarray(host)

    _device_rng: Any = field(default=None, repr=False, compare=False)


def namespace_of(array: Any) -> ModuleType:
    """The array-API namespace of ``array`` (array-api-compat's wrapper for NumPy and CuPy)."""
    import array_api_compat

    return array_api_compat.array_namespace(array)


def cuda_status() -> tuple[bool, str]:
    """Whether CuPy can use a CUDA device here, and a sentence saying why (not)."""
    if importlib.util.find_spec("cupy") is None:
        return False, f"CuPy is not installed; {CUPY_INSTALL_HINT}"
    try:
        import cupy

        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # no driver, no device, or a CUDA mismatch: all say "unusable"
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return False, (
            f"CuPy is installed but cannot use a CUDA device ({first_line}); check the NVIDIA "
            f"driver and that the cupy-cuda package matches its CUDA version"
        )
    if count < 1:
        return False, "CuPy is installed but no CUDA device is visible (CUDA_VISIBLE_DEVICES?)"
    try:
        cupy.zeros(1, dtype=cupy.float32) + 1  # the first real CUDA call
    except Exception as exc:
        return False, f"CuPy sees {count} CUDA device(s) but cannot run on them ({exc})"
    return True, f"CuPy can use {count} CUDA device(s)"


def cuda_device_label(ordinal: int) -> str:
    """``"cuda:N (GPU name, memory)"`` for a CUDA device CuPy can use."""
    import cupy

    props = cupy.cuda.runtime.getDeviceProperties(ordinal)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    return f"cuda:{ordinal} ({name}, {props['totalGlobalMem'] / 2**30:.0f} GiB)"


def _namespace_for(name: str, device: Any) -> tuple[ModuleType, Any]:
    if name == "numpy":
        from portanet import _numpy_namespace as xp

        return xp, "cpu"
    if name == "cupy":
        usable, why = cuda_status()
        if not usable:
            raise BackendUnavailableError(f"the 'cupy' backend is unavailable: {why}.")
        import array_api_compat.cupy as xp
        import cupy

        return xp, cupy.cuda.Device(0 if device is None else int(device))
    if name == "array_api_strict":
        if importlib.util.find_spec("array_api_strict") is None:
            raise BackendUnavailableError(
                "the 'array_api_strict' backend needs array-api-strict: "
                "pip install array-api-strict (or pip install 'portanet[test]')"
            )
        import array_api_strict as xp

        return xp, xp.Device(device or "CPU_DEVICE")
    if name == "torch":
        if importlib.util.find_spec("torch") is None:
            raise BackendUnavailableError(
                "the 'torch' backend needs PyTorch: pip install torch"
            )
        import array_api_compat.torch as xp
        import torch

        return xp, torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    raise AssertionError(f"unhandled backend {name!r}")


def get_backend(
    name: str | Backend | Any | None = None,
    dtype: str = "float32",
    *,
    seed: int | None = None,
    device: Any = None,
) -> Backend:
    """Select a backend by name, or the backend of an array already in hand.

    Args:
        name: ``"auto"`` (CuPy when a CUDA device is usable, else NumPy), ``"numpy"``, ``"cupy"``,
            ``"array_api_strict"``, ``"torch"``, a :class:`Backend` (returned as is), or any
            array (its namespace and device are used). ``None`` reads the ``PORTANET_BACKEND``
            environment variable, else ``"auto"``.
        dtype: ``"float32"`` (default) or ``"float64"``, the dtype of parameters and activations.
        seed: seed of the host random generator (``None``: fresh entropy).
        device: a device for the namespace, e.g. a CUDA ordinal for CuPy or
            ``"no_float64"`` for array-api-strict's device without float64.

    Raises:
        ValueError: unknown backend or dtype name.
        BackendUnavailableError: the backend's library is missing or it has no usable device.
    """
    if isinstance(name, Backend):
        return name
    if dtype not in DTYPE_NAMES:
        raise ValueError(f"unknown dtype {dtype!r}; choose 'float32' or 'float64'")
    rng = np.random.default_rng(seed)
    if name is not None and not isinstance(name, str):
        return _backend_of_array(name, dtype, rng)
    note = ""
    if name is None:
        name = os.environ.get(ENV_VAR, "").strip() or "auto"
        if name != "auto":
            note = f"{name} (from {ENV_VAR})"
    given, name = name, name.lower().replace("-", "_")
    if name not in BACKEND_NAMES:
        raise ValueError(
            f"unknown backend {given!r}; choose one of {', '.join(BACKEND_NAMES)} "
            f"(or pass an array to use its backend)"
        )
    if name == "auto":
        usable, why = cuda_status()
        name = "cupy" if usable else "numpy"
        note = f"auto chose {name}: {why}"
    xp, dev = _namespace_for(name, device)
    _check_dtype_supported(name, xp, dev, dtype)
    return Backend(name=name, xp=xp, device=dev, dtype=getattr(xp, dtype), rng=rng,
                   note=note or name)


def _check_dtype_supported(name: str, xp: ModuleType, device: Any, dtype: str) -> None:
    if dtype == "float64" and hasattr(xp, "__array_namespace_info__"):
        if "float64" not in xp.__array_namespace_info__().dtypes(device=device):
            raise ValueError(f"the {name} device {device} has no float64; use dtype='float32'")


def _backend_of_array(array: Any, dtype: str, rng: np.random.Generator) -> Backend:
    import array_api_compat

    try:
        xp = namespace_of(array)
    except TypeError as exc:
        raise ValueError(
            f"cannot pick a backend from a {type(array).__name__}; pass a backend name "
            f"({', '.join(BACKEND_NAMES)}) or an array"
        ) from exc
    if array_api_compat.is_numpy_array(array):
        name = "numpy"
    elif array_api_compat.is_cupy_array(array):
        name = "cupy"
    elif array_api_compat.is_torch_array(array):
        name = "torch"
    elif array_api_compat.is_array_api_strict_namespace(xp):
        name = "array_api_strict"
    else:
        name = xp.__name__
    dev = array_api_compat.device(array)
    return Backend(name=name, xp=xp, device=dev, dtype=getattr(xp, dtype), rng=rng,
                   note=f"{name} (from the array given)")
