"""The documentation stays true to the code: the architecture page's module map names every
module of the package (and only those, each on its floor), README stays a short front page whose
relative links all lead somewhere, and the MkDocs site builds with no warning.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "portanet"
ARCHITECTURE = ROOT / "docs" / "architecture.md"
README = ROOT / "README.md"
README_MAX_LINES = 250

MODULE_PATH = re.compile(r"portanet/[\w/]*?\w+\.py\b")
MAP_ROW = re.compile(r"^\|\s*`(portanet/[^`]+\.py)`\s*\|\s*([^|]+?)\s*\|")
PUBLIC_FACE = {"portanet/__init__.py", "portanet/__main__.py", "portanet/_moved.py"}
# [text](target) and ![alt](target), the text possibly over several lines; a target has no
# spaces (an optional "title" after it is ignored).
LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
DOCS_PACKAGES = {"mkdocs": "mkdocs", "material": "mkdocs-material", "mkdocstrings": "mkdocstrings",
                 "mkdocstrings_handlers.python": "mkdocstrings-python"}


def package_modules() -> set[str]:
    return {p.relative_to(ROOT).as_posix() for p in PACKAGE.rglob("*.py")
            if "__pycache__" not in p.parts}


def floor_of(path: str) -> str:
    if path in PUBLIC_FACE:
        return "public face"
    return "application" if path.startswith("portanet/app/") else "core"


def map_rows(text: str) -> dict[str, str]:
    """The module map's rows: each module path named in a table row's first cell, and its
    floor (the second cell)."""
    rows: dict[str, str] = {}
    for line in text.splitlines():
        match = MAP_ROW.match(line)
        if match:
            assert match[1] not in rows, f"{match[1]} has two rows in the module map"
            rows[match[1]] = match[2]
    return rows


def relative_links(markdown: str) -> list[str]:
    """Every link target in ``markdown`` outside code blocks that is not a URL or an anchor
    on the same page, without its #fragment."""
    targets = []
    for target in LINK.findall(FENCE.sub("", markdown)):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith("#"):
            continue  # http:, https:, mailto: ... or an anchor here
        targets.append(target.split("#", 1)[0])
    return targets


def test_the_architecture_page_names_only_modules_that_exist() -> None:
    named = set(MODULE_PATH.findall(ARCHITECTURE.read_text(encoding="utf-8")))
    assert named, "docs/architecture.md names no portanet/...py module"
    missing = sorted(path for path in named if not (ROOT / path).is_file())
    assert not missing, (f"docs/architecture.md names modules that do not exist: {missing}; "
                         f"rename or drop them on the page")


def test_the_architecture_map_names_every_module_on_its_floor() -> None:
    rows = map_rows(ARCHITECTURE.read_text(encoding="utf-8"))
    unnamed = sorted(package_modules() - set(rows))
    assert not unnamed, (f"docs/architecture.md's module map has no row for {unnamed}: add "
                         f"one line each on what it does and its floor")
    wrong = {path: (floor, floor_of(path)) for path, floor in rows.items()
             if path in package_modules() and floor != floor_of(path)}
    assert not wrong, f"modules on the wrong floor in the map (given, true): {wrong}"


def test_readme_is_a_short_front_page() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines, over {README_MAX_LINES}: move the detail to docs/")


def test_readme_holds_the_test_command_ci_runs() -> None:
    """.ci/run runs README's install-and-test command exactly; both must say the same."""
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    command = next(line for line in ci.splitlines() if line.endswith("-m pytest -q"))
    assert command in README.read_text(encoding="utf-8").splitlines()


def test_readme_relative_links_lead_to_files() -> None:
    links = relative_links(README.read_text(encoding="utf-8"))
    assert any(link.startswith("docs/") for link in links), "README links no docs page"
    broken = sorted({link for link in links if not (ROOT / link).exists()})
    assert not broken, f"README.md links to paths that do not exist: {broken}"


def test_the_link_and_map_readers_see_what_they_must() -> None:
    """The helpers above on known text, so a regex that stops matching cannot pass silently."""
    text = ("see [a](docs/a.md#x), ![pic\nover lines](docs/p.png) and [b](https://x.org/y.md)"
            " or [c](#here)\n```\n[d](not/a/link.md)\n```\n")
    assert relative_links(text) == ["docs/a.md", "docs/p.png"]
    rows = map_rows("| module | floor |\n|---|---|\n| `portanet/a.py` | core | x |\n"
                    "| `portanet/app/b.py` | application | y |\n")
    assert rows == {"portanet/a.py": "core", "portanet/app/b.py": "application"}


def test_the_documentation_site_builds_without_warnings(tmp_path: Path) -> None:
    absent = [pip for module, pip in DOCS_PACKAGES.items()
              if importlib.util.find_spec(module.split(".")[0]) is None
              or importlib.util.find_spec(module) is None]
    if absent:
        pytest.skip(f"the docs extra is not installed ({', '.join(absent)} missing): "
                    f"pip install \".[docs]\" to build the site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env=env,
    )
    assert proc.returncode == 0, (f"mkdocs build --strict failed:\n{proc.stdout[-3000:]}"
                                  f"{proc.stderr[-5000:]}")
    assert (tmp_path / "site" / "index.html").is_file()
