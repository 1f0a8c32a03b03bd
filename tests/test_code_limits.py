"""The house limits on size: no module under ``portanet/`` over 450 lines, no function or method
over 60 lines (from its ``def`` line to its last line, its docstring not counted).

One test per module, so a failure names the module; each lists every function of that module
over the limit with its length, and every module is checked, so one run shows all offenders.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "portanet"
MODULE_LINES = 450
FUNCTION_LINES = 60
MODULES = sorted(PACKAGE.rglob("*.py"))


def module_id(path: Path) -> str:
    return path.relative_to(PACKAGE.parent).as_posix()


def docstring_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """How many lines the docstring of ``node`` takes (0 without one)."""
    first = node.body[0]
    if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)):
        return first.end_lineno - first.lineno + 1
    return 0


def function_lengths(source: str) -> list[tuple[str, int]]:
    """Every function and method in ``source`` (nested ones too) by qualified name, with its
    length: from the ``def`` line (not its decorators) to its last line, less its docstring."""
    found: list[tuple[str, int]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = child.end_lineno - child.lineno + 1 - docstring_lines(child)
                found.append((f"{prefix}{child.name}", length))
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return found


def test_there_are_modules_to_check() -> None:
    assert len(MODULES) > 20 and PACKAGE / "app" / "cli.py" in MODULES


@pytest.mark.parametrize("path", MODULES, ids=module_id)
def test_module_length(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MODULE_LINES, (
        f"{module_id(path)} has {lines} lines, over the limit of {MODULE_LINES}: move a "
        f"concern to a module of its own")


@pytest.mark.parametrize("path", MODULES, ids=module_id)
def test_function_lengths(path: Path) -> None:
    long = [f"{name} ({length} lines)"
            for name, length in function_lengths(path.read_text(encoding="utf-8"))
            if length > FUNCTION_LINES]
    assert not long, (
        f"{module_id(path)}: over {FUNCTION_LINES} lines (docstring not counted): "
        + ", ".join(long))


def test_the_measure_counts_from_def_to_the_end_less_the_docstring() -> None:
    source = '''
@decorator
def outer(x):
    """Two lines
    of docstring."""
    y = x

    def inner():
        return y
    return inner


class Thing:
    async def method(self):
        """One line."""
        pass
'''
    assert function_lengths(source) == [("outer", 6), ("outer.inner", 2), ("Thing.method", 2)]
