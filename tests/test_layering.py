"""The two floors: the numerical core never imports the application on top of it.

The application is the command line and what only it and the public face use: its options and
data splits, recipes (presets), the report with its metrics and plots, ``portanet check`` and the
progress bars. Everything else under ``portanet/`` is the core.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "portanet"

COMMAND_LINE = {"portanet.__main__", "portanet.cli", "portanet.options", "portanet.splits",
                "portanet.report", "portanet.plots", "portanet.progress", "portanet.draw",
                "portanet.draw.server"}
APPLICATION = COMMAND_LINE | {"portanet.recipes", "portanet.metrics", "portanet.check"}
PUBLIC_FACE = "portanet"  # __init__: re-exports both floors, loading each on first use


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


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


CORE = sorted(p for p in PACKAGE.rglob("*.py")
              if module_name(p) not in APPLICATION | {PUBLIC_FACE})


def test_the_floors_cover_the_package() -> None:
    names = {module_name(p) for p in PACKAGE.rglob("*.py")}
    assert APPLICATION <= names
    assert {"portanet.train", "portanet.data", "portanet.layers.dense"} <= {
        module_name(p) for p in CORE}


@pytest.mark.parametrize("path", CORE, ids=module_name)
def test_core_module_imports_nothing_from_the_application(path: Path) -> None:
    imported = imported_modules(path)
    assert not imported & APPLICATION, f"{module_name(path)} imports {imported & APPLICATION}"
    assert PUBLIC_FACE not in imported, (
        f"{module_name(path)} imports the package itself; import the core module it needs")


def loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=PACKAGE.parent).stdout
    return {name for name in out.split() if name.startswith("portanet")}


def test_importing_the_data_loaders_does_not_load_the_training_loop() -> None:
    loaded = loaded_after("import portanet.data")
    assert "portanet.data.loaders" in loaded
    assert not loaded & {"portanet.train", "portanet.model", "portanet.layers",
                         "portanet.distributed"}


def test_importing_portanet_does_not_load_the_command_line() -> None:
    assert not loaded_after("import portanet") & COMMAND_LINE
    loaded = loaded_after("import portanet as pn; pn.fit; pn.recipes; pn.datasets; pn.save")
    assert "portanet.train" in loaded
    assert not loaded & COMMAND_LINE
