"""Counts CuPy's kernel compilations for tools/gpu_check.sh (on PYTHONPATH of its steps only).

When ``GPU_CHECK_KERNEL_LOG`` names a file, ``cupy.cuda.compiler.compile_using_nvrtc`` and
``compile_using_nvcc`` (module functions that CuPy 13/14 call by their global name on a kernel
cache miss) are wrapped once that module is imported, and at exit one JSON line
``{"count": N, "seconds": S}`` is appended to the file. Anything unexpected leaves CuPy alone.
A ``sitecustomize`` further down ``sys.path`` (a distribution's own) still runs.
"""

from __future__ import annotations

import atexit
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
import time
from typing import Any

_LOG = os.environ.get("GPU_CHECK_KERNEL_LOG", "")
_TARGET = "cupy.cuda.compiler"
_totals = {"count": 0, "seconds": 0.0}


def _chain_next_sitecustomize() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or ".") != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is not None and spec.loader is not None and spec.origin != __file__:
        try:
            spec.loader.exec_module(importlib.util.module_from_spec(spec))
        except Exception:
            pass


def _timed(function: Any) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            _totals["count"] += 1
            _totals["seconds"] += time.perf_counter() - started

    wrapper.__wrapped__ = function  # type: ignore[attr-defined]
    return wrapper


def wrap(module: Any) -> None:
    for name in ("compile_using_nvrtc", "compile_using_nvcc"):
        function = getattr(module, name, None)
        if callable(function) and not hasattr(function, "__wrapped__"):
            setattr(module, name, _timed(function))


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != _TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        loader, run = spec.loader, spec.loader.exec_module

        def exec_module(module: Any) -> None:
            run(module)
            try:
                wrap(module)
            except Exception:
                pass

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def _write() -> None:
    if _totals["count"]:
        try:
            with open(_LOG, "a", encoding="utf-8") as f:
                f.write(json.dumps(_totals) + "\n")
        except OSError:
            pass


if _LOG:
    sys.meta_path.insert(0, _Finder())
    atexit.register(_write)
_chain_next_sitecustomize()
