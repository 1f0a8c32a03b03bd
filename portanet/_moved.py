"""Old import paths of modules that moved in 0.2, kept working until 0.3.

``import portanet.io`` (and ``from portanet.io import save``) gives the module at its new
place, :mod:`portanet.saving.npz`, the same module object, with a :class:`DeprecationWarning`
naming that place. CHANGELOG.md lists the moves.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType

MOVED = {
    "portanet.datasets": "portanet.data",
    "portanet.seams": "portanet.backend.table",
    "portanet._cuda": "portanet.backend.cuda",
    "portanet._numpy_namespace": "portanet.backend.numpy_namespace",
    "portanet._heap": "portanet.backend.heap",
    "portanet.folding": "portanet.layers.folding",
    "portanet.inputs": "portanet.input_checks",
    "portanet._checks": "portanet.number_checks",
    "portanet._files": "portanet.files",
    "portanet.split": "portanet.parallel.engine",
    "portanet.distributed": "portanet.parallel.mpi",
    "portanet.images": "portanet.reader.digit",
    "portanet._ink": "portanet.reader.ink",
    "portanet.io": "portanet.saving.npz",
    "portanet.onnx_export": "portanet.saving.onnx_export",
    "portanet.cli": "portanet.app.cli",
    "portanet.options": "portanet.app.arg_types",
    "portanet.splits": "portanet.app.run_data",
    "portanet.report": "portanet.app.report",
    "portanet.plots": "portanet.app.plots",
    "portanet.progress": "portanet.app.progress",
    "portanet.metrics": "portanet.app.metrics",
    "portanet.recipes": "portanet.app.recipes",
    "portanet.draw": "portanet.app.draw",
    "portanet.draw.server": "portanet.app.draw.server",
}
"""Each old module path and its new one. (``portanet.check`` is the self-check function,
``pn.check()``, as before; its module is :mod:`portanet.app.self_check`.)"""

QUIET = {"portanet.metrics", "portanet.recipes"}
"""Old paths that are also public attributes (``pn.metrics``, ``pn.recipes``): no warning."""


class _Alias(importlib.abc.Loader):
    def __init__(self, new: str) -> None:
        self.new = new

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        if spec.name not in QUIET:
            warnings.warn(f"{spec.name} moved to {self.new}; import it from there (the old path "
                          "goes in portanet 0.3)", DeprecationWarning, stacklevel=2)
        module = importlib.import_module(self.new)
        self.own_spec = module.__spec__  # the import system sets __spec__ to the alias's
        return module

    def exec_module(self, module: ModuleType) -> None:
        module.__spec__ = self.own_spec


class MovedModuleFinder(importlib.abc.MetaPathFinder):
    """Finds an old module path and hands out the module from its new place."""

    def find_spec(self, fullname: str, path: object = None,
                  target: object = None) -> importlib.machinery.ModuleSpec | None:
        new = MOVED.get(fullname)
        return None if new is None else importlib.machinery.ModuleSpec(fullname, _Alias(new))


def install() -> None:
    """Put the finder on ``sys.meta_path`` once."""
    if not any(isinstance(f, MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, MovedModuleFinder())
