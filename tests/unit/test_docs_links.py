"""Every relative link in the documentation resolves: to a file or directory of this repository, and with an
anchor, to a heading (or an explicit `id`) of the Markdown file it points at.

Links and headings come from markdown-it-py, the same way a renderer finds them (a `[x](y)` inside a code block
is no link). Heading anchors follow GitHub's rule: the heading's text lower-cased, every character that is not a
letter, digit, space, `-` or `_` dropped, spaces turned into `-`, and `-1`, `-2`, ... added to repeats.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from markdown_it import MarkdownIt

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted({ROOT / "README.md", ROOT / "helm" / "uaip-hub" / "README.md", *(ROOT / "docs").glob("**/*.md")})
HTML_ID = re.compile(r"""\b(?:id|name)\s*=\s*["']([^"']+)["']""")

_markdown = MarkdownIt("commonmark").enable("table")


def slug(text: str) -> str:
    kept = "".join(ch for ch in text.strip().lower() if ch.isalnum() or ch in " -_")
    return kept.replace(" ", "-")


def _plain_text(inline) -> str:
    return "".join(child.content if child.type in ("text", "code_inline") else " " if child.type == "softbreak" else ""
                   for child in inline.children or [])


def _walk(tokens):
    for token in tokens:
        yield token
        yield from _walk(token.children or [])


def anchors(path: Path) -> set[str]:
    tokens = _markdown.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    seen: dict[str, int] = {}
    for index, token in enumerate(tokens):
        if token.type == "heading_open":
            base = slug(_plain_text(tokens[index + 1]))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    for token in _walk(tokens):
        if token.type in ("html_block", "html_inline"):
            found.update(HTML_ID.findall(token.content))
    return found


def links(path: Path) -> list[tuple[int, str]]:
    """(line, target) for every link and image in the file."""
    found = []
    for block in _markdown.parse(path.read_text(encoding="utf-8")):
        line = block.map[0] + 1 if block.map else 0
        for token in _walk([block]):
            target = token.attrGet("href") if token.type == "link_open" else (
                token.attrGet("src") if token.type == "image" else None)
            if target is not None:
                found.append((line, str(target)))
    return found


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    problems = []
    for line, target in links(path):
        parts = urlsplit(target)
        if parts.scheme or parts.netloc:
            continue  # http(s), mailto: not ours to check offline
        where = f"{path.relative_to(root)}:{line}: {target}"
        file_part, anchor = unquote(parts.path), unquote(parts.fragment)
        resolved = (path.parent / file_part).resolve() if file_part else path
        if root.resolve() not in (resolved, *resolved.parents):
            problems.append(f"{where} leaves the repository")
        elif not resolved.exists():
            problems.append(f"{where} names a file that does not exist")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            problems.append(f"{where} names no heading of {resolved.relative_to(root.resolve())}")
    return problems


@pytest.mark.parametrize("doc", DOCS, ids=lambda path: str(path.relative_to(ROOT)))
def test_relative_links_resolve(doc):
    assert doc.exists()
    assert not broken_links(doc), "\n".join(broken_links(doc))


# --- the checker itself ---------------------------------------------------------------------------------------


def test_slugs_follow_githubs_rule():
    assert slug("Commands and the relay") == "commands-and-the-relay"
    assert slug("The relay (uaip-hub relay)") == "the-relay-uaip-hub-relay"
    assert slug("Health, readiness and shutdown") == "health-readiness-and-shutdown"
    assert slug("Kubernetes: preStop, drain file and grace period") == "kubernetes-prestop-drain-file-and-grace-period"
    assert slug("snake_case & more") == "snake_case--more"


def test_checker_finds_broken_links_and_anchors(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "api.md").write_text("# API\n\n## Errors\n\n## Errors\n\n<a id=\"custom\"></a>\n")
    readme = tmp_path / "README.md"
    readme.write_text(
        "# Hub\n\n## The relay (`uaip-hub relay`)\n\n"
        "[ok](docs/api.md) [ok](docs/api.md#errors) [ok](docs/api.md#errors-1) [ok](docs/api.md#custom)\n"
        "[ok](#the-relay-uaip-hub-relay) [ok](docs/) [ok](https://example.com/x#y)\n"
        "[bad](docs/missing.md) [bad](docs/api.md#nothing) [bad](#nowhere) [bad](../outside.md)\n\n"
        "```\n[not a link](docs/missing.md)\n```\n"
    )
    problems = broken_links(readme, root=tmp_path)
    assert [p.split(": ", 1)[1] for p in problems] == [
        "docs/missing.md names a file that does not exist",
        "docs/api.md#nothing names no heading of docs/api.md",
        "#nowhere names no heading of README.md",
        "../outside.md leaves the repository",
    ]
