"""The CuPy half of the backend, tested without a GPU against a fake ``cupy`` module.

The fake reproduces the CuPy behaviour portanet relies on (checked against CuPy 13/14's
sources): a process-wide *current* device that ``with cupy.cuda.Device(n):`` changes and that
creation functions and generators use; ``Device()`` meaning the current device; a device count
from ``cuda.runtime``; the text of CuPy's import failure; memory-pool hooks called with keyword
arguments. Tests that need the real library are marked ``gpu`` (tests/test_backend.py and the
backend fixture run everything on CuPy where a device is usable).
"""

from __future__ import annotations

import sys
import types
from typing import Any

import numpy as np
import pytest

import portanet as pn
from portanet import backend as backend_module
from portanet.backend import cuda as _cuda
from portanet.backend import table as seams

# The text CuPy 14 raises when its compiled core cannot load (cupy/__init__.py), as captured.
CUPY_IMPORT_FAILURE = """
================================================================
Failed to import CuPy.

If you installed CuPy via wheels (cupy-cudaXXX or cupy-rocm-X-X), make sure that the package \
matches with the version of CUDA or ROCm installed.

On Linux, you may need to set LD_LIBRARY_PATH environment variable depending on how you \
installed CUDA/ROCm.
On Windows, try setting CUDA_PATH environment variable.

Check the Installation Guide for details:
  https://docs.cupy.dev/en/latest/install.html

Original error:
  ImportError: libcudart.so.12: cannot open shared object file: No such file or directory
================================================================
"""

# NVRTC's log when the CUDA headers of the toolkit are absent (driver-only host, plain wheel).
COMPILE_LOG = """/tmp/tmpabc/kern.cu(1): catastrophic error: cannot open source file "cuda_fp16.h"
  #include <cuda_fp16.h>
                        ^

1 catastrophic error detected in the compilation of "/tmp/tmpabc/kern.cu".
Compilation terminated.
""" + "extern \"C\" __global__ void cupy_add(...) { ... }\n" * 40


class CompileException(Exception):
    """Stands for cupy.cuda.compiler.CompileException (same name, a multi-line log)."""


@pytest.fixture(autouse=True)
def fresh_probe() -> Any:
    """Every test probes CUDA afresh, and leaves no cached answer from a fake behind."""
    _cuda._status = None
    yield
    _cuda._status = None


class FakeCupy:
    """Just enough of CuPy: devices with a current one, a runtime, kernels, a generator."""

    def __init__(self, count: int = 2, current: int = 0) -> None:
        fake = self
        self.count, self.current = count, current
        self.probes = 0
        self.compile_error: Exception | None = None
        self.sync_error: Exception | None = None
        self.count_error: Exception | None = None
        self.generators_made_on: list[int] = []

        class Device:
            def __init__(self, device: int | None = None) -> None:
                self.id = fake.current if device is None else int(device)
                self._stack: list[int] = []  # CuPy keeps one per Device object, so it nests

            def __enter__(self) -> Device:
                self._stack.append(fake.current)
                fake.current = self.id
                return self

            def __exit__(self, *exc: object) -> None:
                fake.current = self._stack.pop()

            def synchronize(self) -> None:
                pass

        def get_device_count() -> int:
            fake.probes += 1
            if fake.count_error is not None:
                raise fake.count_error
            return fake.count

        def device_synchronize() -> None:
            if fake.sync_error is not None:
                raise fake.sync_error

        class Generator:
            def __init__(self, seed: int) -> None:
                fake.generators_made_on.append(fake.current)
                self.rng = np.random.default_rng(seed)

            def random(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
                return self.rng.random(shape, dtype=dtype)

        class Probe:
            def __add__(self, other: float) -> Probe:
                if fake.compile_error is not None:
                    raise fake.compile_error
                return self

            def sum(self) -> Any:
                return types.SimpleNamespace(get=lambda: np.float32(2.0))

        class MemoryHook:
            def __enter__(self) -> MemoryHook:
                return self

            def __exit__(self, *exc: object) -> None:
                pass

        runtime = types.SimpleNamespace(getDeviceCount=get_device_count,
                                        deviceSynchronize=device_synchronize)
        self.module = types.ModuleType("cupy")
        self.module.cuda = types.SimpleNamespace(Device=Device, runtime=runtime,
                                                 MemoryHook=MemoryHook)
        self.module.float32 = np.float32
        self.module.zeros = lambda shape, dtype: Probe()
        self.module.random = types.SimpleNamespace(default_rng=Generator)
        self.module.ndarray = type("ndarray", (), {"__module__": "cupy"})
        # array-api-compat's CuPy namespace, reduced to what Backend reads at creation
        self.compat = types.ModuleType("array_api_compat.cupy")
        self.compat.float32, self.compat.float64 = np.float32, np.float64


@pytest.fixture
def fake_cupy(monkeypatch: pytest.MonkeyPatch) -> FakeCupy:
    import importlib.util

    fake = FakeCupy()

    original = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "cupy" else original(name, *a))
    monkeypatch.setitem(sys.modules, "cupy", fake.module)
    monkeypatch.setitem(sys.modules, "array_api_compat.cupy", fake.compat)
    return fake


# --- cuda_status: one useful line ----------------------------------------------------------


def test_cupy_not_installed_gives_the_ctk_install_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(pn.BackendUnavailableError,
                       match=r"CuPy is not installed.*portanet\[cuda12-ctk\]"):
        pn.get_backend("cupy")


def test_import_failure_shows_the_original_error_not_the_banner(fake_cupy: FakeCupy) -> None:
    fake_cupy.count_error = RuntimeError(CUPY_IMPORT_FAILURE)
    usable, why = pn.backend.cuda_status()
    assert not usable and "\n" not in why
    assert "ImportError: libcudart.so.12: cannot open shared object file" in why
    assert "=====" not in why and "Failed to import CuPy" not in why
    with pytest.raises(pn.BackendUnavailableError, match="cannot use a CUDA device"):
        pn.get_backend("cupy")


def test_no_device_says_so(fake_cupy: FakeCupy) -> None:
    fake_cupy.count_error = RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")
    usable, why = pn.backend.cuda_status()
    assert not usable and "cudaErrorNoDevice: no CUDA-capable device is detected" in why


def test_compile_failure_is_summarised_with_the_ctk_advice(fake_cupy: FakeCupy) -> None:
    fake_cupy.compile_error = CompileException(COMPILE_LOG)
    usable, why = pn.backend.cuda_status()
    assert not usable and "\n" not in why and len(why) < 700
    assert 'cannot open source file "cuda_fp16.h"' in why
    assert "cupy-cuda12x[ctk]" in why and "__global__" not in why


def test_an_asynchronous_fault_is_caught_by_the_synchronised_probe(fake_cupy: FakeCupy) -> None:
    fake_cupy.sync_error = RuntimeError("cudaErrorIllegalAddress: an illegal memory access was "
                                        "encountered")
    usable, why = pn.backend.cuda_status()
    assert not usable and "cudaErrorIllegalAddress" in why


def test_auto_probes_once_per_process(fake_cupy: FakeCupy,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PORTANET_BACKEND", raising=False)
    first = pn.get_backend("auto")
    second = pn.get_backend("auto")
    assert first.name == second.name == "cupy" and "CuPy can use 2 CUDA device(s)" in first.note
    assert fake_cupy.probes == 1
    assert pn.backend.cuda_status(refresh=True)[0] and fake_cupy.probes == 2


def test_error_summary_keeps_a_plain_first_line() -> None:
    assert _cuda.error_summary(ValueError("bad thing\nmore")) == "ValueError: bad thing"
    assert _cuda.error_summary(RuntimeError("x" * 500)).endswith("...")


# --- the device: current by default, validated, entered ------------------------------------


def test_default_device_is_the_current_device(fake_cupy: FakeCupy) -> None:
    fake_cupy.current = 1
    assert pn.get_backend("cupy").device.id == 1


@pytest.mark.parametrize("given, expected", [(0, 0), (1, 1), ("cuda:1", 1), (np.int64(1), 1)])
def test_device_ordinals(fake_cupy: FakeCupy, given: Any, expected: int) -> None:
    assert pn.get_backend("cupy", device=given).device.id == expected


@pytest.mark.parametrize("given", [2, -1, "cuda:7", "gpu", True, 1.5])
def test_a_device_that_does_not_exist_is_refused(fake_cupy: FakeCupy, given: Any) -> None:
    with pytest.raises(ValueError, match="CUDA device"):
        pn.get_backend("cupy", device=given)


def test_out_of_range_message_lists_the_visible_devices(fake_cupy: FakeCupy) -> None:
    with pytest.raises(ValueError, match=r"CuPy sees 2 device\(s\), numbered 0\.\.1"):
        pn.get_backend("cupy", device=3)


def test_activate_enters_the_device_and_restores_the_current_one(fake_cupy: FakeCupy) -> None:
    b = pn.get_backend("cupy", device=1)
    assert fake_cupy.current == 0
    with b.activate():
        assert fake_cupy.current == 1
        with b.activate():
            assert fake_cupy.current == 1
    assert fake_cupy.current == 0
    assert isinstance(pn.get_backend("numpy").activate().__enter__(), type(None))


def test_fit_and_friends_run_inside_the_device(fake_cupy: FakeCupy) -> None:
    b = pn.get_backend("cupy", device=1)
    seen = []

    @pn.backend.on_model_device
    def work(model: Any, x: int) -> int:
        seen.append(fake_cupy.current)
        return x + 1

    assert work(types.SimpleNamespace(backend=b), 1) == 2 and seen == [1]
    assert fake_cupy.current == 0


def test_device_generator_is_made_on_the_backends_device(fake_cupy: FakeCupy) -> None:
    b = pn.get_backend("cupy", device=1, seed=0)
    b.uniform((3,))
    b.uniform((3,))
    assert fake_cupy.generators_made_on == [1]
    forked = b.fork(5)
    forked.uniform((2,))
    assert fake_cupy.generators_made_on == [1, 1]  # a fork has its own generator
    assert forked.rng is not b.rng


def test_cupy_keeps_weights_in_in_out_order(fake_cupy: FakeCupy) -> None:
    assert not pn.get_backend("cupy").weights_transposed
    assert pn.get_backend("numpy").weights_transposed


# --- per-sample SGD stays on the CPU ---------------------------------------------------------


def test_auto_keeps_per_sample_work_on_the_cpu(fake_cupy: FakeCupy,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PORTANET_BACKEND", raising=False)
    b = pn.get_backend("auto", per_sample=True)
    assert b.name == "numpy" and "per-sample" in b.note and "CuPy can use" in b.note
    assert pn.get_backend("auto").name == "cupy"
    cupy_backend = pn.get_backend("cupy")
    assert "--backend numpy" in cupy_backend.workload_advice(1)
    assert cupy_backend.workload_advice(256) is None
    assert pn.get_backend("numpy").workload_advice(1) is None


# --- host conversion of device arrays ---------------------------------------------------------


def test_a_cupy_array_is_never_converted_implicitly(fake_cupy: FakeCupy) -> None:
    def refuse(self: Any, *a: Any, **k: Any) -> Any:  # what cupy.ndarray.__array__ does
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use "
                        "`.get()` to construct a NumPy array explicitly.")

    fake_cupy.module.ndarray.__array__ = refuse
    array = fake_cupy.module.ndarray()
    with pytest.raises(ValueError, match=r"state\['0.W'\] is a cupy.ndarray.*to_host"):
        pn.backend.host_array(array, "state['0.W']")
    with pytest.raises(ValueError, match=r"backend.asarray is a cupy.ndarray"):
        pn.get_backend("numpy").asarray(array)


def test_host_array_wraps_other_refusals() -> None:
    class Stubborn:
        def __array__(self, *a: Any, **k: Any) -> Any:
            raise RuntimeError("no host copy for you")

    with pytest.raises(ValueError, match=r"X is a .*Stubborn.*no host copy for you.*to_host"):
        pn.backend.host_array(Stubborn(), "X")
    host = np.arange(3)
    assert pn.backend.host_array(host) is host
    assert pn.backend.host_array([1, 2]).tolist() == [1, 2]


# --- peak memory of the pool ------------------------------------------------------------------


def test_pool_peak_is_the_high_water_mark_of_live_blocks(fake_cupy: FakeCupy) -> None:
    with _cuda.PoolPeak(device_id=0) as peak:
        hook = peak._hook
        hook.malloc_postprocess(device_id=0, size=90, mem_size=100, mem_ptr=1, pmem_id=11)
        hook.malloc_postprocess(device_id=0, size=200, mem_size=200, mem_ptr=2, pmem_id=12)
        hook.malloc_postprocess(device_id=1, size=999, mem_size=1024, mem_ptr=3, pmem_id=13)
        hook.free_postprocess(device_id=0, mem_size=100, mem_ptr=1, pmem_id=11)
        hook.malloc_postprocess(device_id=0, size=50, mem_size=64, mem_ptr=4, pmem_id=14)
        hook.malloc_postprocess(device_id=0, size=1, mem_size=0, mem_ptr=0, pmem_id=0)  # failed
        assert peak.peak_bytes == 300 and peak.current == 264
        peak.mark()
        hook.malloc_postprocess(device_id=0, size=30, mem_size=36, mem_ptr=5, pmem_id=15)
        hook.free_postprocess(device_id=0, mem_size=36, mem_ptr=5, pmem_id=15)
        hook.free_postprocess(device_id=0, mem_size=200, mem_ptr=2, pmem_id=12)
    assert peak.peak_above_mark == 36 and peak.current == 64


# --- the seam table ----------------------------------------------------------------------------


def test_every_backend_name_has_a_row() -> None:
    assert set(backend_module.BACKEND_NAMES) - {"auto"} == set(seams.SEAMS)
    for name, seam in seams.SEAMS.items():
        assert seam.name == name
    assert seams.SEAMS["numpy"].available() == (True, "installed")


# --- defects a careful read found: device arrays in metrics, read-backs, dropout's generator -----


def test_metrics_refuse_a_device_array_with_portanets_error(fake_cupy: FakeCupy) -> None:
    def refuse(self: Any, *a: Any, **k: Any) -> Any:  # what cupy.ndarray.__array__ does
        raise TypeError("Implicit conversion to a NumPy array is not allowed.")

    fake_cupy.module.ndarray.__array__ = refuse
    on_device = fake_cupy.module.ndarray()
    with pytest.raises(ValueError, match=r"y_pred is a cupy.ndarray.*to_host"):
        pn.metrics.confusion_matrix(np.array([0, 1]), on_device)
    with pytest.raises(ValueError, match=r"y_true is a cupy.ndarray.*to_host"):
        pn.metrics.classification_report(on_device, np.array([0, 1]))


def test_fit_checks_the_finished_model_with_one_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """The end-of-fit check (weights and outputs finite) is one device-to-host read for the
    whole model, not one per parameter (each read is a synchronisation on a GPU), and no
    array is turned into a Python bool on the way. Counted on array-api-strict."""
    pytest.importorskip("array_api_strict")
    from types import SimpleNamespace

    from array_api_strict._array_object import Array

    from portanet import train
    from portanet.parallel.mpi import Local

    model = pn.Sequential([pn.Dense(6, 5), pn.ReLU(), pn.Dense(5, 4), pn.ReLU(),
                           pn.Dense(4, 3)], backend="array_api_strict", seed=0)
    run = SimpleNamespace(last=model.backend.asarray(np.ones((4, 6))), comm=Local())
    reads: list[str] = []
    to_numpy, to_bool = model.backend.to_numpy, Array.__bool__
    monkeypatch.setattr(model.backend, "to_numpy", lambda a: reads.append("read") or to_numpy(a))
    monkeypatch.setattr(Array, "__bool__", lambda self: reads.append("bool") or to_bool(self))
    assert train._finished_cause(model, run) is None and reads == ["read"]


def _shuffles_after_fit(dropout: tuple[float, ...]) -> dict[str, Any]:
    """The model generator's state after 3 epochs of fit, for a model with these Dropout rates."""
    from tests.helpers import separable_data

    X, y = separable_data(n=64, features=8, classes=3)
    layers: list[pn.Layer] = [pn.Dense(8, 16), pn.ReLU()]
    layers += [pn.Dropout(rate) for rate in dropout]
    model = pn.Sequential([*layers, pn.Dense(16, 3)], backend="numpy", seed=4)
    pn.fit(model, X, y, epochs=3, batch_size=16)
    return model.backend.rng.bit_generator.state


def test_dropout_never_draws_from_the_models_generator() -> None:
    """The model's generator draws the shuffles (and augmentation shifts) only, so the data
    order is the same with or without dropout, and so the same on CuPy (masks on the device)
    as on NumPy (masks on the host)."""
    plain = _shuffles_after_fit(())
    assert _shuffles_after_fit((0.5,)) == plain
    assert _shuffles_after_fit((0.2, 0.5)) == plain


def test_each_dropout_layer_has_its_own_mask_stream() -> None:
    """Two Dropout layers of one width draw different masks (a generator per layer, not one
    seed shared by all), and the same seed draws the same masks again."""

    def model() -> pn.Sequential:
        return pn.Sequential([pn.Dense(8, 32), pn.Dropout(0.5), pn.Dropout(0.5),
                              pn.Dense(32, 2)], backend="numpy", seed=1)

    first = model()
    assert first.layers[1].backend.rng is not first.backend.rng
    ones = np.ones((4, 32), dtype=np.float32)
    masks = [layer.forward(ones) for layer in first.layers[1:3]]
    assert not np.array_equal(masks[0], masks[1])
    again = [layer.forward(ones) for layer in model().layers[1:3]]
    np.testing.assert_array_equal(again[0], masks[0])
    np.testing.assert_array_equal(again[1], masks[1])
