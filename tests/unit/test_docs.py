"""The repository's documentation stands on its own: the README stays a front door that leads to every document
in docs/, the architecture page draws its diagrams in Mermaid, and no file points at notes outside the repository.

(Relative links and anchors are checked by test_docs_links.py.)
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.asserting import nonempty
from tests.unit.test_docs_links import links

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MAX_README_CHARACTERS = 25_000

# Team notes that live beside a clone, not in it: no file may send a reader there. Written as a pattern that
# does not match its own source text.
OUTSIDE_NOTES = re.compile(r"\.\./shared|\b(?:CONTRACT|DESIGN)\.md")
# Directories that are not the repository's own files (virtualenvs, caches, build output, benchmark results).
NOT_OURS = re.compile(r"^(?:\.(?!ci$).*|__pycache__|build|dist|venv|rendered|results|node_modules|.*\.egg-info)$")
TEXT_SUFFIXES = {".py", ".md", ".sql", ".sh", ".cfg", ".toml", ".yaml", ".yml", ".tpl", ".txt", ".json", ".lock", ""}
MERMAID_BLOCK = re.compile(r"^```mermaid\n(.*?)^```", re.M | re.S)
MERMAID_KINDS = ("flowchart", "graph", "sequenceDiagram")


def repository_files(root: Path = ROOT) -> list[Path]:
    found = []
    for path in sorted(root.iterdir()):
        if path.is_dir():
            if not NOT_OURS.match(path.name):
                found.extend(repository_files(path))
        elif path.suffix in TEXT_SUFFIXES or path.name in {"Dockerfile", ".dockerignore", ".gitignore", ".helmignore"}:
            found.append(path)
    return found


def test_the_readme_is_a_front_door_not_a_manual():
    size = len(README.read_text(encoding="utf-8"))
    assert size <= MAX_README_CHARACTERS, f"README.md has {size} characters; move detail into docs/"


@pytest.mark.parametrize("document", sorted(DOCS.glob("*.md")), ids=lambda path: path.name)
def test_the_readme_links_every_document(document):
    targets = {target.split("#", 1)[0] for _, target in links(README)}
    assert f"docs/{document.name}" in targets, f"README.md does not link docs/{document.name}"


def test_the_architecture_page_draws_its_diagrams_in_mermaid():
    blocks = MERMAID_BLOCK.findall((DOCS / "architecture.md").read_text(encoding="utf-8"))
    kinds = [block.split(None, 1)[0] for block in blocks]
    assert kinds.count("sequenceDiagram") >= 2 and "flowchart" in kinds, kinds  # a request, a command; the layers
    assert all(kind in MERMAID_KINDS for kind in nonempty(kinds)), kinds


def test_no_file_points_at_notes_outside_the_repository():
    offenders = []
    for path in repository_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        offenders += [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
                      for number, line in enumerate(text.splitlines(), 1) if OUTSIDE_NOTES.search(line)]
    assert not offenders, "\n".join(offenders)


# --- the checks themselves ------------------------------------------------------------------------------------


def test_the_outside_notes_pattern_finds_what_it_should():
    dot_md = ".md"  # split, so that this file does not name them itself
    assert OUTSIDE_NOTES.search("see ../" + "shared/x") and OUTSIDE_NOTES.search(f"(CONTRACT{dot_md} §5)")
    assert OUTSIDE_NOTES.search(f"DESIGN{dot_md} decision 3")
    assert not OUTSIDE_NOTES.search("docs/decisions.md and docs/api.md")


def test_repository_files_leave_out_virtualenvs_and_caches(tmp_path):
    for name in ("app/a.py", ".venv/lib/x.py", ".ci/run", "app/__pycache__/a.pyc", "bench/results/r.json",
                 "uaip_hub.egg-info/PKG-INFO", "docs/api.md", "Dockerfile"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    found = {str(path.relative_to(tmp_path)) for path in repository_files(tmp_path)}
    assert found == {"app/a.py", ".ci/run", "docs/api.md", "Dockerfile"}
