"""Module names say what they do and cannot be confused: none is named like a standard-library
module, no two differ by a single letter, and a "private" (underscored) module is imported by
one other module at most (the public face, ``portanet/__init__.py``, for ``_moved``)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "portanet"


def names() -> dict[str, list[Path]]:
    """Each module or package name under portanet/ and where it stands."""
    found: dict[str, list[Path]] = {}
    for path in PACKAGE.rglob("*.py"):
        name = path.parent.name if path.stem == "__init__" else path.stem
        if name != "__main__":
            found.setdefault(name, []).append(path)
    return found


def one_letter_apart(a: str, b: str) -> bool:
    a, b = a.replace("_", ""), b.replace("_", "")
    if a == b:
        return True
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b, strict=True)) == 1
    short, long_ = sorted((a, b), key=len)
    return any(long_[:i] + long_[i + 1:] == short for i in range(len(long_)))


def test_no_module_is_named_like_a_standard_library_module() -> None:
    clash = sorted(set(names()) & set(sys.stdlib_module_names))
    assert not clash, f"named like the standard library's: {clash}"


def test_no_two_module_names_differ_by_one_letter() -> None:
    found = sorted(set(names()) - {"__init__"})
    pairs = [(a, b) for i, a in enumerate(found) for b in found[i + 1:] if one_letter_apart(a, b)]
    assert not pairs, f"confusable module names: {pairs}"


def test_the_comparison_sees_confusable_names() -> None:
    assert one_letter_apart("split", "splits") and one_letter_apart("check", "_checks")
    assert one_letter_apart("input", "inputs") and not one_letter_apart("init", "ink")


def importers_of(module: str) -> set[Path]:
    found = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module is not None:
                targets = {node.module} | {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                targets = {a.name for a in node.names}
            else:
                continue
            if module in targets:
                found.add(path)
    return found


def test_a_private_module_serves_one_module() -> None:
    private = [p for p in PACKAGE.rglob("_*.py") if not p.stem.startswith("__")]
    wide = {}
    for path in private:
        dotted = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        users = importers_of(dotted)
        if len(users) > 1:
            wide[dotted] = sorted(str(u.relative_to(PACKAGE.parent)) for u in users)
    assert not wide, f"'private' modules imported by several modules: {wide}"
