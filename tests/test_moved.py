"""Old import paths (before the 0.2 layout) keep working until 0.3: the very same module from
its new place, with a DeprecationWarning that names it (CHANGELOG.md, portanet/_moved.py)."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import portanet as pn
from portanet._moved import MOVED, QUIET

ROOT = Path(__file__).resolve().parents[1]


def fresh(code: str) -> subprocess.CompletedProcess[str]:
    """``code`` in a new interpreter (imports, warnings and sys.modules start clean)."""
    return subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-c", code],
                          capture_output=True, text=True, cwd=ROOT)


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_path_is_the_new_module(old: str) -> None:
    new = MOVED[old]
    sys.modules.pop(old, None)  # as if imported for the first time
    with pytest.warns(DeprecationWarning, match=f"{old} moved to {new}") if old not in QUIET \
            else _no_warning():
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)
    assert module.__spec__.name == new  # the module keeps its own spec


class _no_warning:
    def __enter__(self) -> None:
        import warnings
        self._catch = warnings.catch_warnings()
        self._catch.__enter__()
        warnings.simplefilter("error", DeprecationWarning)

    def __exit__(self, *exc: object) -> None:
        self._catch.__exit__(*exc)


def test_every_new_place_exists() -> None:
    for new in MOVED.values():
        importlib.import_module(new)


def test_from_an_old_path_imports_names_with_a_warning_naming_the_new_place() -> None:
    result = fresh("from portanet.distributed import world")
    assert result.returncode == 1
    assert "portanet.distributed moved to portanet.parallel.mpi" in result.stderr


def test_the_new_paths_and_the_public_face_do_not_warn() -> None:
    result = fresh("import portanet as pn, portanet.parallel.mpi, portanet.saving.npz; "
                   "pn.recipes, pn.metrics, pn.data, pn.check, pn.fit, pn.save")
    assert result.returncode == 0, result.stderr


def test_check_stays_the_function_whatever_is_imported() -> None:
    import portanet.app.self_check  # noqa: F401

    assert callable(pn.check) and pn.check.__module__ == "portanet.app.self_check"
    result = fresh("import portanet.app.self_check, portanet as pn; "
                   "assert callable(pn.check), pn.check")
    assert result.returncode == 0, result.stderr
