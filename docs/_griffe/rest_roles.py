"""A griffe extension for the API pages: portanet's docstrings are Google style with a few
reST constructs, which Markdown would show as they are written. Before rendering, this turns

- roles (``:func:`fit```, ``:class:`~portanet.optim.Adam```, ``:mod:`portanet.data```) into
  code that links to the object where the site documents it (optional cross-references: a
  name the site does not document stays plain code, never a broken link);
- reST links (```ndonnx <https://...>`_``) into Markdown links;
- a paragraph ending in ``::`` (a reST literal block follows) into one ending in ``:``;
- doctest lines (``>>> ...``) outside code blocks into ``pycon`` code blocks, not quotes;
- a line of a ``Raises:`` section that continues an item but is indented like one (it names no
  exception before its colon) into a continuation line, as the Google style wants.

The library's docstrings are not changed; only what the site shows.
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|data|attr|exc|obj|const):`([^`]+)`")
REST_LINK = re.compile(r"`([^`<]+?)\s*<(https?://[^>]+)>`_")
DOCTEST = re.compile(r"^(\s*)>>> ")
LITERAL = re.compile(r"(?<=\S)::\n")
SECTION = re.compile(r"^(\s*)[A-Z][A-Za-z ]*:\s*$")
RAISES_ITEM = re.compile(r"^[A-Za-z_][\w.]*(\s*/\s*[A-Za-z_][\w.]*)*\s*:")


def _target(obj: Any, name: str) -> str | None:
    """The full path of ``name`` as seen from ``obj``'s docstring, if griffe can tell."""
    if name.startswith("portanet"):
        return name
    head, _, rest = name.partition(".")
    for scope in (obj, getattr(obj, "parent", None), getattr(obj, "module", None)):
        if scope is None:
            continue
        try:
            found = scope.resolve(head)
        except Exception:  # noqa: BLE001 (any failure: leave the name unlinked)
            continue
        return f"{found}.{rest}" if rest else found
    return None


def _role(obj: Any, match: re.Match[str]) -> str:
    text = match.group(1).strip()
    shown = None
    if "<" in text and text.endswith(">"):  # :func:`title <target>`
        shown, text = (part.strip() for part in text[:-1].split("<", 1))
    short = text.startswith("~")
    text = text.lstrip("~").lstrip(".")
    if shown is None:
        shown = text.rsplit(".", 1)[-1] if short else text
    code = f"<code>{html.escape(shown)}</code>"
    target = _target(obj, text)
    if target is None:
        return code
    return f'<autoref identifier="{html.escape(target)}" optional>{code}</autoref>'


def _doctests(text: str) -> str:
    lines, out, i = text.split("\n"), [], 0
    fenced = False
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith("```"):
            fenced = not fenced
        match = None if fenced else DOCTEST.match(line)
        if match is None:
            out.append(line)
            i += 1
            continue
        indent = match.group(1)
        block = []
        while i < len(lines) and lines[i].strip() and lines[i].startswith(indent):
            block.append(lines[i][len(indent):])
            i += 1
        out += [f"{indent}```pycon", *(indent + b for b in block), f"{indent}```"]
    return "\n".join(out)


def _raises(text: str) -> str:
    lines = text.split("\n")
    item_indent = None
    for i, line in enumerate(lines):
        if SECTION.match(line):
            item_indent = None if line.strip() != "Raises:" else ""
            continue
        if item_indent is None or not line.strip():
            continue
        indent = line[: len(line) - len(line.lstrip())]
        if item_indent == "":
            item_indent = indent
        if indent == item_indent and not RAISES_ITEM.match(line.lstrip()):
            lines[i] = "    " + line
        elif len(indent) < len(item_indent):
            item_indent = None
    return "\n".join(lines)


def rewrite(obj: Any, text: str) -> str:
    """The docstring ``text`` of ``obj`` with its reST constructs made Markdown."""
    text = REST_LINK.sub(r"[\1](\2)", text)
    text = LITERAL.sub(":\n", text)
    text = ROLE.sub(lambda match: _role(obj, match), text)
    return _raises(_doctests(text))


class RestRoles(griffe.Extension):
    """Rewrite reST roles, links and doctest lines in every docstring of a loaded package."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        seen: set[int] = set()
        stack: list[Any] = [pkg]
        while stack:
            obj = stack.pop()
            if id(obj) in seen or obj.is_alias:
                continue
            seen.add(id(obj))
            if obj.docstring is not None:
                obj.docstring.value = rewrite(obj, obj.docstring.value)
            stack.extend(obj.members.values())
