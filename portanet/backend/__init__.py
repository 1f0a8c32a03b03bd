"""Backends: which array library the math runs on, on which device, in which float dtype.

A :class:`Backend` is the one place where portanet touches a concrete array library. Everything
else is written against its ``xp`` namespace (the Python array API standard, through
array-api-compat), so the same code runs on NumPy, CuPy, array-api-strict and PyTorch.

What differs between the libraries is one table, :data:`portanet.backend.table.SEAMS`: per backend,
how to load it, move an array to the host, wait for the device, describe the device, enter the
device (CuPy runs every kernel on the *current* CUDA device), and the weight layout its kernels
like. ``Backend``, ``portanet info``, ``portanet check`` and the benchmarks read it instead of
branching on the name.

Conversions happen only at the boundary: host NumPy arrays go in with :meth:`Backend.asarray`
and come out with :meth:`Backend.to_numpy`; a device array never turns into a NumPy array
implicitly (:func:`host_array` says how to convert it instead).

What is reproducible where (same seed):
- initial weights, shuffling order, augmentation shifts and the host data: identical on every
  backend (drawn on the host by NumPy, then copied);
- dropout masks: each Dropout layer has a generator of its own (``model.own_mask_generators``),
  so masks never change the shuffles. They are identical on NumPy, array-api-strict and PyTorch
  (drawn on the host); on CuPy they come from CuPy's own generator on the GPU (seeded from the
  layer's host generator), so they are repeatable run to run on the same GPU and CuPy version,
  but differ from the CPU backends';
- results: bitwise repeatable within one backend, device and library version; across backends
  they agree to float32 rounding (``portanet check`` compares one step with NumPy's).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, TypeVar

import numpy as np

from portanet.backend.cuda import CUPY_INSTALL_HINT, cuda_status
from portanet.backend.cuda import device_label as cuda_device_label
from portanet.backend.table import (
    _OTHER,
    PORTABLE,
    SEAMS,
    BackendUnavailableError,
    Capabilities,
    Seam,
)

__all__ = ["BACKEND_NAMES", "CUPY_INSTALL_HINT", "Backend", "BackendUnavailableError", "SEAMS",
           "Seam", "cuda_device_label", "cuda_status", "get_backend", "host_array",
           "namespace_of", "on_model_device", "to_host"]

BACKEND_NAMES = ("auto", *SEAMS)
DTYPE_NAMES = ("float32", "float64")
ENV_VAR = "PORTANET_BACKEND"
PER_SAMPLE_NOTE = (
    "per-sample SGD (batch 1) launches about 20 small kernels per sample, so on a GPU it is "
    "bound by launch overhead (tens of microseconds per kernel from Python) and the CPU is "
    "expected to be faster; tools/gpu_check.sh measures both"
)


# --- host arrays ------------------------------------------------------------------------------


def _kind(array: Any) -> str:
    return type(array).__module__.split(".")[0] + "." + type(array).__name__


def host_array(value: Any, what: str = "the array") -> np.ndarray:
    """``value`` as a host NumPy array (NumPy arrays, lists, scalars, CPU tensors), never by an
    implicit copy from a GPU: a CuPy array or a CUDA tensor raises a ValueError naming ``what``
    and the explicit conversion (:func:`to_host`)."""
    if isinstance(value, np.ndarray):
        return value
    import array_api_compat

    on_gpu = array_api_compat.is_cupy_array(value) or (
        array_api_compat.is_torch_array(value) and value.device.type != "cpu")
    problem = None
    if not on_gpu:
        try:
            return np.asarray(value)
        except (TypeError, ValueError, RuntimeError) as exc:
            problem = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    where = f" on {value.device}" if hasattr(value, "device") else ""
    raise ValueError(
        f"{what} is a {_kind(value)}{where}, and portanet copies device arrays to the host only "
        f"when asked" + (f" ({problem})" if problem else "") + ": convert it explicitly with "
        "portanet.backend.to_host(array) (or backend.to_numpy(array)), or pass the host array "
        "it came from"
    )


def to_host(array: Any) -> np.ndarray:
    """A new host NumPy array from an array of any backend (the explicit device-to-host copy)."""
    if isinstance(array, np.ndarray):
        return np.array(array, copy=True)
    return get_backend(array).to_numpy(array)


def namespace_of(array: Any) -> ModuleType:
    """The array-API namespace of ``array`` (array-api-compat's wrapper for NumPy and CuPy)."""
    import array_api_compat

    return array_api_compat.array_namespace(array)


# --- the backend ------------------------------------------------------------------------------


@dataclass(eq=False)
class Backend:
    """What the math needs: array namespace, device, float dtype and a seeded host generator.

    Attributes:
        name: ``"numpy"``, ``"cupy"``, ``"array_api_strict"`` or ``"torch"``.
        xp: the array-API namespace (from array-api-compat, or array-api-strict itself).
        device: the device arrays are created on (``xp.asarray(..., device=device)``); for CuPy
            a ``cupy.cuda.Device`` (default: the current device when the backend was made).
        dtype: the float dtype of parameters and activations, an ``xp`` dtype object.
        rng: the host random generator. Initial weights and shuffles are drawn here, so the same
            seed gives the same numbers on every backend; see the module docstring for dropout.
        note: a human-readable line on how this backend was chosen (``"auto"`` explains itself).
    """

    name: str
    xp: ModuleType
    device: Any
    dtype: Any
    rng: np.random.Generator = field(repr=False)
    note: str = ""
    _device_rng: Any = field(default=None, repr=False, compare=False)
    fast_paths: bool = field(default=True, repr=False)

    @property
    def capabilities(self) -> Capabilities:
        """What this backend allows beyond the standard (its seam row's ``capabilities``); the
        portable answers when ``fast_paths`` is off (what the parity tests compare with)."""
        return self.seam.capabilities if self.fast_paths else PORTABLE

    def portable(self) -> Backend:
        """This backend (same namespace, device, dtype and generator) without fast paths."""
        return dataclasses.replace(self, fast_paths=False)

    def add_to_slice(self, target: Any, key: tuple[Any, ...], value: Any) -> Any:
        """``target[key] + value`` written into ``target``, returning the updated array.

        In place through the view where the backend allows it (about twice as fast on NumPy),
        else by ``__setitem__`` with the sum; a library whose arrays are immutable would rebind
        here, so callers always use the returned array.
        """
        if self.capabilities.in_place:
            view = target[key]
            view += value
        else:
            target[key] = target[key] + value
        return target

    @property
    def seam(self) -> Seam:
        """This backend's row of :data:`SEAMS`."""
        return SEAMS.get(self.name, _OTHER)

    @property
    def dtype_name(self) -> str:
        """The float dtype as a string, ``"float32"`` or ``"float64"``."""
        return "float64" if self.dtype == self.xp.float64 else "float32"

    @property
    def device_name(self) -> str:
        """A short description of the device, e.g. ``"cpu"`` or ``"cuda:0 (NVIDIA H100)"``."""
        return self.seam.describe(self.device)

    @property
    def weights_transposed(self) -> bool:
        """Whether Dense keeps W (shape (in, out)) in (out, in) memory order, a transposed view.

        True on the CPU backends: NumPy's per-sample outer product and ``dout.T @ X`` run fastest
        that way and the gradient comes out in the same order (measured: per-sample 1.85x ->
        1.4x the reference loop). False on CuPy: its elementwise kernels walk a Fortran-ordered
        2-D array in C order (uncoalesced loads) and its temporaries are C-ordered, so the
        update ``p -= lr * g`` and weight decay would mix layouts on every step.
        """
        return self.seam.transposed_weights

    @property
    def inference_batch(self) -> int:
        """The batch ``evaluate``, ``predict`` and validation use unless told (see
        :attr:`portanet.backend.table.Seam.inference_batch`): 256 on a CPU, 2,048 on a GPU."""
        return self.seam.inference_batch(self.device)

    def activate(self) -> contextlib.AbstractContextManager[Any]:
        """A context in which the library computes on this backend's device.

        CuPy runs every kernel and creates every array on the *current* CUDA device, whatever
        device its inputs live on, so ``fit``/``evaluate``/``predict`` run inside it; anything
        else you compute by hand on a device other than the current one belongs inside it too::

            with backend.activate():
                logits = model.forward(X)

        A no-op on the other backends. Contexts nest.
        """
        return self.seam.activate(self.device)

    def synchronize(self) -> None:
        """Wait until the device has finished all queued work (a no-op on the CPU)."""
        self.seam.synchronize(self.device)

    def fork(self, seed: int | np.random.SeedSequence) -> Backend:
        """This backend with its own host generator seeded ``seed`` and its own device
        generator (made on first use): what a model keeps, so models don't share random state."""
        return dataclasses.replace(self, rng=np.random.default_rng(seed), _device_rng=None)

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
        boolean input as it is. An array already of this backend is converted on its device;
        a device array of another library raises a ValueError (see :func:`host_array`).
        """
        if not self.seam.host_arrays and self.owns(host):
            if dtype is None:
                dtype = self.dtype if self.xp.isdtype(host.dtype, "real floating") else host.dtype
            with self.activate():
                return self.xp.asarray(host, dtype=dtype, device=self.device)
        host = host_array(host, "the array given to backend.asarray")
        if dtype is None:
            dtype = self.dtype if host.dtype.kind in "fc" else self.from_numpy_dtype(host.dtype)
        host = np.ascontiguousarray(host, dtype=self.to_numpy_dtype(dtype))
        with self.activate():
            return self.xp.asarray(host, device=self.device)

    def to_numpy(self, array: Any) -> np.ndarray:
        """Copy an array of this backend to a new host NumPy array (never a view)."""
        self.check_array(array, "array")
        return self.seam.to_host(array)

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
        raise ValueError(
            f"{what} is a {_kind(array)}, but this model lives on the {self.name!r} backend; "
            f"portanet never copies between backends silently. Convert it once with "
            f"backend.asarray(host_numpy_array), or move the model with portanet.load(path, "
            f"backend=...)."
        )

    def uniform(self, shape: tuple[int, ...]) -> Any:
        """Uniform [0, 1) random numbers of the backend dtype on the device.

        Where the seam has a device generator (CuPy) they are drawn on the device (by a
        generator seeded once from the host generator, created on this backend's device), which
        avoids a host-to-device copy for every dropout mask; everywhere else they come from the
        host generator.
        """
        make_generator = self.seam.device_generator
        if make_generator is not None:
            with self.activate():
                if self._device_rng is None:
                    self._device_rng = make_generator(self.device, int(self.rng.integers(2**63)))
                return self._device_rng.random(shape, dtype=self.to_numpy_dtype(self.dtype))
        host = self.rng.random(shape, dtype=np.float32)
        return self.asarray(host)

    def workload_advice(self, batch_size: int | None) -> str | None:
        """A sentence when this backend is a poor fit for training at ``batch_size`` (per-sample
        SGD on a GPU), else None. ``portanet train`` prints it."""
        if batch_size == 1 and self.seam.launch_bound:
            return f"note: {PER_SAMPLE_NOTE}; try --backend numpy"
        return None


F = TypeVar("F", bound=Callable[..., Any])


def on_model_device(fn: F) -> F:
    """Decorator for ``fn(model, ...)``: run it inside ``model.backend.activate()``.

    ``fit``, ``evaluate``, ``predict`` and ``predict_proba`` use it, so every kernel of a call,
    the optimizer step included, runs on the model's device.
    """

    @functools.wraps(fn)
    def inside(model: Any, *args: Any, **kwargs: Any) -> Any:
        with model.backend.activate():
            return fn(model, *args, **kwargs)

    return inside  # type: ignore[return-value]


# --- choosing a backend -------------------------------------------------------------------------


def get_backend(
    name: str | Backend | Any | None = None,
    dtype: str = "float32",
    *,
    seed: int | None = None,
    device: Any = None,
    per_sample: bool = False,
) -> Backend:
    """Select a backend by name, or the backend of an array already in hand.

    Args:
        name: ``"auto"`` (CuPy when a CUDA device is usable, else NumPy), ``"numpy"``, ``"cupy"``,
            ``"array_api_strict"``, ``"torch"``, a :class:`Backend` (returned as is), or any
            array (its namespace and device are used). ``None`` reads the ``PORTANET_BACKEND``
            environment variable, else ``"auto"``.
        dtype: ``"float32"`` (default) or ``"float64"``, the dtype of parameters and activations.
        seed: seed of the host random generator (``None``: fresh entropy).
        device: a device for the namespace: for CuPy a CUDA ordinal (``1``, ``"cuda:1"``;
            default: the current device), for array-api-strict e.g. ``"no_float64"`` (its
            device without float64).
        per_sample: the work is per-sample SGD (batch 1); ``"auto"`` then picks NumPy, which is
            expected to beat a GPU there (see :data:`PER_SAMPLE_NOTE`).

    Raises:
        ValueError: unknown backend or dtype name, or a CUDA ordinal that does not exist.
        BackendUnavailableError: the backend's library is missing or it has no usable device.
    """
    if isinstance(name, Backend):
        return name
    if dtype not in DTYPE_NAMES:
        raise ValueError(f"unknown dtype {dtype!r}; choose 'float32' or 'float64'")
    rng = np.random.default_rng(seed)
    if name is not None and not isinstance(name, str):
        return _backend_of_array(name, dtype, rng)
    note, source = "", ""
    if name is None:
        name = os.environ.get(ENV_VAR, "").strip() or "auto"
        if name != "auto":
            note, source = f"{name} (from {ENV_VAR})", f" (from the environment variable {ENV_VAR})"
    given, name = name, name.lower().replace("-", "_")
    if name not in BACKEND_NAMES:
        fix = f"set {ENV_VAR} to" if source else "choose"
        raise ValueError(
            f"unknown backend {given!r}{source}; {fix} one of {', '.join(BACKEND_NAMES)} "
            f"(or pass an array to use its backend)"
        )
    if name == "auto":
        name, note = auto_choice(per_sample)
    try:
        xp, dev = SEAMS[name].load(device)
    except BackendUnavailableError as exc:
        if not source:
            raise
        raise BackendUnavailableError(f"{ENV_VAR}={given}: {exc} (or unset the environment "
                                      f"variable {ENV_VAR}, or set it to numpy)") from None
    _check_dtype_supported(name, xp, dev, dtype)
    return Backend(name=name, xp=xp, device=dev, dtype=getattr(xp, dtype), rng=rng,
                   note=note or name)


def auto_choice(per_sample: bool = False) -> tuple[str, str]:
    """The backend ``"auto"`` picks here and a line saying why: CuPy on a usable CUDA device,
    else NumPy; NumPy for per-sample work (see :data:`PER_SAMPLE_NOTE`)."""
    usable, why = cuda_status()
    if usable and per_sample:
        return "numpy", f"auto chose numpy although {why}: {PER_SAMPLE_NOTE}"
    name = "cupy" if usable else "numpy"
    return name, f"auto chose {name}: {why}"


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
