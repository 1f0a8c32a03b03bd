"""Backend selection, conversions at the boundary, and the errors a user sees."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import portanet as pn
from portanet import backend as backend_module


def test_numpy_backend_basics() -> None:
    b = pn.get_backend("numpy")
    assert b.name == "numpy" and b.dtype_name == "float32" and b.device == "cpu"
    x = b.asarray(np.arange(6, dtype=np.float64).reshape(2, 3))
    assert x.dtype == b.xp.float32
    labels = b.asarray(np.array([1, 2], dtype=np.uint8))
    assert labels.dtype == b.xp.uint8  # integer input keeps its dtype


def test_to_numpy_returns_a_copy(backend: pn.Backend) -> None:
    x = backend.asarray(np.ones(3))
    host = backend.to_numpy(x)
    host[0] = 5.0
    assert backend.to_numpy(x)[0] == 1.0


def test_float64_backend() -> None:
    b = pn.get_backend("numpy", "float64")
    assert b.asarray([1.0]).dtype == b.xp.float64


def test_unknown_names() -> None:
    with pytest.raises(ValueError, match="unknown backend 'jax-gpu'"):
        pn.get_backend("jax-gpu")
    with pytest.raises(ValueError, match="unknown dtype"):
        pn.get_backend("numpy", "float16")


def test_backend_from_an_array() -> None:
    b = pn.get_backend(np.zeros(2))
    assert b.name == "numpy"
    strict = pytest.importorskip("array_api_strict")
    assert pn.get_backend(strict.asarray([1.0])).name == "array_api_strict"
    with pytest.raises(ValueError, match="cannot pick a backend"):
        pn.get_backend(object())


def test_environment_variable_picks_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("array_api_strict")
    monkeypatch.setenv("PORTANET_BACKEND", "array_api_strict")
    assert pn.get_backend().name == "array_api_strict"
    model = pn.Sequential([pn.Dense(2, 2)])
    assert model.backend.name == "array_api_strict"


def test_auto_falls_back_to_numpy_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PORTANET_BACKEND", raising=False)
    monkeypatch.setattr(backend_module, "cuda_status", lambda: (False, "no GPU here"))
    b = pn.get_backend("auto")
    assert b.name == "numpy" and "no GPU here" in b.note


def test_float64_on_a_device_without_it() -> None:
    pytest.importorskip("array_api_strict")
    with pytest.raises(ValueError, match="no float64"):
        pn.get_backend("array_api_strict", "float64", device="no_float64")


def test_uniform_draws_are_seeded(backend_spec) -> None:
    name, device = backend_spec
    a = pn.get_backend(name, seed=3, device=device)
    b = pn.get_backend(name, seed=3, device=device)
    np.testing.assert_array_equal(a.to_numpy(a.uniform((5,))), b.to_numpy(b.uniform((5,))))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int8, np.uint8, np.int64])
@pytest.mark.parametrize("axis", [None, 0, 1, (0, 1)])
@pytest.mark.parametrize("keepdims", [False, True])
def test_numpy_namespace_reductions_match_array_api_compat(dtype, axis, keepdims) -> None:
    """The NumPy backend's direct ufunc reductions agree with array-api-compat's, dtype too."""
    import array_api_compat.numpy as compat

    from portanet.backend import numpy_namespace as fast
    x = (np.random.default_rng(0).normal(size=(4, 5)) * 50).astype(dtype)
    x[1, 2] = 0
    for name in ("sum", "max"):
        got = getattr(fast, name)(x, axis=axis, keepdims=keepdims)
        expected = getattr(compat, name)(x, axis=axis, keepdims=keepdims)
        assert np.asarray(got).dtype == np.asarray(expected).dtype
        np.testing.assert_array_equal(got, expected)
    assert np.isnan(fast.max(np.array([1.0, np.nan]))) and fast.sum(x, dtype=np.float64).dtype \
        == np.float64
    np.testing.assert_array_equal(fast.reshape(x, (5, 4)), compat.reshape(x, (5, 4)))
    assert np.shares_memory(fast.reshape(x, (5, 4), copy=False), x)  # a view, as asked
    assert not np.shares_memory(fast.reshape(x, (5, 4), copy=True), x)
    for idx, ax in ((np.array([3, 0, 3]), 0), (np.array([4, 1]), 1), (np.array([7, 19]), None)):
        np.testing.assert_array_equal(fast.take(x, idx, axis=ax), compat.take(x, idx, axis=ax))
    with pytest.raises(ValueError):
        fast.reshape(x.T, (20,), copy=False)  # a transpose cannot be flattened without a copy


def test_numpy_backend_owns_plain_numpy_arrays() -> None:
    b = pn.get_backend("numpy")
    assert b.owns(np.zeros(3)) and not b.owns([1, 2])


def test_model_dtype_overrides_a_backend_object() -> None:
    b32 = pn.get_backend("numpy")
    model = pn.Sequential([pn.Dense(2, 2)], backend=b32, dtype="float64")
    assert model.backend.dtype_name == "float64" and b32.dtype_name == "float32"
    assert all(p.dtype == np.float64 for _, p, _ in model.named_parameters())
    assert pn.Sequential([pn.Dense(2, 2)], backend=model.backend).backend.dtype_name == "float64"
    pytest.importorskip("array_api_strict")
    strict = pn.get_backend("array_api_strict", device="no_float64")
    with pytest.raises(ValueError, match="no float64"):
        pn.Sequential([pn.Dense(2, 2)], backend=strict, dtype="float64")


def test_only_the_seam_table_branches_on_backend_names() -> None:
    package = Path(pn.__file__).parent
    names = "|".join(backend_module.SEAMS)
    branch = re.compile(rf'(name|backend)\s*(==|!=|in)\s*\(?"({names})"')
    allowed = {package / "backend" / "table.py"}
    found = [f"{path.relative_to(package)}:{number}: {line.strip()}"
             for path in sorted(package.rglob("*.py")) if path not in allowed
             for number, line in enumerate(path.read_text().splitlines(), start=1)
             if branch.search(line)]
    assert not found, "branch on a capability of the seam instead:\n" + "\n".join(found)


def test_numpy_backend_keeps_freed_memory_unless_told_not_to(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """glibc's malloc is asked once to keep large freed blocks (64 MiB mmap, 1 GiB trim
    thresholds); PORTANET_KEEP_HEAP=0 or the user's own MALLOC_* settings leave it alone."""
    import ctypes

    from portanet.backend import heap as _heap
    calls: list[tuple[int, int]] = []

    class FakeLibc:
        class mallopt:  # noqa: N801 (ctypes' function object, faked)
            argtypes: Any = None
            restype: Any = None

            def __new__(cls, option: int, value: int) -> int:  # type: ignore[misc]
                calls.append((option, value))
                return 1

    monkeypatch.setattr(ctypes, "CDLL", lambda name: FakeLibc)
    monkeypatch.setattr(_heap.sys, "platform", "linux")
    for env, applies in ((None, True), ({"PORTANET_KEEP_HEAP": "0"}, False),
                         ({"MALLOC_TRIM_THRESHOLD_": "0"}, False)):
        calls.clear()
        monkeypatch.delenv("PORTANET_KEEP_HEAP", raising=False)
        monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
        monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
        for key, value in (env or {}).items():
            monkeypatch.setenv(key, value)
        monkeypatch.setattr(_heap, "_done", None)
        assert _heap.keep_freed_memory() is applies
        assert calls == ([(_heap.M_MMAP_THRESHOLD, 64 << 20), (_heap.M_TRIM_THRESHOLD, 1 << 30)]
                         if applies else [])
        assert _heap.keep_freed_memory() is applies and len(calls) == (2 if applies else 0)
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_")
    monkeypatch.setattr(_heap, "_done", None)
    pn.get_backend("numpy")  # the numpy seam row's loader asks for it
    assert _heap._done is True
