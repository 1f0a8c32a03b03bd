"""The two floors, by folder: the numerical core never imports the application on top of it.

The application is ``portanet/app/`` (the command line, its argument types and data splits,
recipes (presets), reports with their metrics and plots, ``portanet check``, progress bars and
the draw page). The public face (``portanet/__init__.py``, ``__main__``) may load both. Every
other module under ``portanet/`` is the core.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "portanet"
APP_FOLDER = PACKAGE / "app"
PUBLIC_FACE = {"portanet", "portanet.__main__", "portanet._moved"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_application(name: str) -> bool:
    return name == "portanet.app" or name.startswith("portanet.app.")


def imported_modules(path: Path) -> set[str]:
    """Every portanet module ``path`` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:  # a submodule, or a name the module defines
                name = f"{node.module}.{alias.name}"
                found.add(name if is_module(name) else node.module)
    return {name for name in found if name.split(".")[0] == "portanet"}


def is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


ALL = sorted(PACKAGE.rglob("*.py"))
APPLICATION = sorted(p for p in ALL if APP_FOLDER in p.parents)
CORE = sorted(p for p in ALL if APP_FOLDER not in p.parents
              and module_name(p) not in PUBLIC_FACE)


def test_the_folders_hold_the_floors() -> None:
    app = {module_name(p) for p in APPLICATION}
    assert {"portanet.app.cli", "portanet.app.recipes", "portanet.app.draw.server"} <= app
    assert {"portanet.train", "portanet.data", "portanet.layers.dense",
            "portanet.backend.table"} <= {module_name(p) for p in CORE}


@pytest.mark.parametrize("path", CORE, ids=module_name)
def test_core_module_imports_nothing_from_the_application(path: Path) -> None:
    imported = imported_modules(path)
    upward = {name for name in imported if is_application(name)}
    assert not upward, f"{module_name(path)} imports {upward}"
    assert "portanet" not in imported, (
        f"{module_name(path)} imports the package itself; import the core module it needs")


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from portanet.app.recipes import PRESETS\nimport portanet.app.cli\n")
    assert {n for n in imported_modules(bad) if is_application(n)} == {
        "portanet.app.recipes", "portanet.app.cli"}


def loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sys.modules))"
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True,
                         text=True, check=True, cwd=PACKAGE.parent).stdout
    return {name for name in out.split() if name.startswith("portanet")}


def test_importing_the_data_loaders_does_not_load_the_training_loop() -> None:
    loaded = loaded_after("import portanet.data")
    assert "portanet.data.loaders" in loaded
    assert not loaded & {"portanet.train", "portanet.model", "portanet.layers",
                         "portanet.parallel.mpi"}


def test_importing_portanet_loads_no_application() -> None:
    assert not {n for n in loaded_after("import portanet") if is_application(n)}
    loaded = loaded_after("import portanet as pn; pn.fit; pn.data; pn.save; pn.export_onnx")
    assert "portanet.train" in loaded
    assert not {n for n in loaded if is_application(n)}
