"""The docs stay readable and connected: the README is a front door (short), every relative link of the README
and docs/ (anchors included) resolves, prose lines of the reference pages stay short, and the status page's
cells stay a sentence or two (docs/decisions.md, "Reference pages state the present")."""

import functools
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Pages whose links must resolve: the README and every Markdown file under docs/ (result records included).
LINKED_PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
# Pages whose prose lines are limited: the README and docs/*.md (the records under docs/results/ are
# kept as they were written).
REFERENCE_PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 300
PROSE_MAX_CHARS = 120  # the prose is wrapped at about 110; tables and code blocks are not prose
STATUS_CELL_MAX_CHARS = 300
FENCE = re.compile(r"^\s*```")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def name(page: Path) -> str:
    return str(page.relative_to(ROOT))


def without_code(text: str) -> list[str]:
    """The page's lines outside fenced code blocks."""
    lines, inside = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            inside = not inside
        elif not inside:
            lines.append(line)
    return lines


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of every line outside code blocks and tables."""
    numbered, inside = [], False
    for number, line in enumerate(text.splitlines(), start=1):
        if FENCE.match(line):
            inside = not inside
        elif not inside and not line.lstrip().startswith("|"):
            numbered.append((number, line))
    return numbered


def links(page: Path) -> list[str]:
    """Markdown link and image targets outside code blocks that stay in the repository (not URLs)."""
    targets = LINK.findall("\n".join(without_code(page.read_text(encoding="utf-8"))))
    return [target for target in targets if not re.match(r"[a-z][a-z0-9+.-]*:", target)]


def relative_links(page: Path) -> list[str]:
    """The files those links point at (anchors dropped; a link to an anchor of the page itself drops out)."""
    return [target.split("#")[0] for target in links(page) if not target.startswith("#")]


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@functools.cache
def anchors(page: Path) -> set[str]:
    """Every heading's anchor on a page; a repeated heading gets -1, -2, … as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for line in without_code(page.read_text(encoding="utf-8")):
        match = re.match(r"#{1,6} (.+)", line)
        if match:
            base = slug(match.group(1))
            found.add(base if base not in seen else f"{base}-{seen[base]}")
            seen[base] = seen.get(base, 0) + 1
    return found


@pytest.mark.parametrize("page", LINKED_PAGES, ids=name)
def test_every_link_resolves(page):
    missing = [target for target in relative_links(page) if not (page.parent / target).exists()]
    assert not missing, f"{name(page)} links to missing files: {missing}"


@pytest.mark.parametrize("page", LINKED_PAGES, ids=name)
def test_every_anchor_resolves(page):
    broken = []
    for target in links(page):
        path, _, anchor = target.partition("#")
        linked = (page.parent / path) if path else page
        if anchor and linked.suffix == ".md" and linked.is_file() and anchor not in anchors(linked):
            broken.append(target)
    assert not broken, f"{name(page)} links to headings that do not exist: {broken}"


@pytest.mark.parametrize("page", REFERENCE_PAGES, ids=name)
def test_prose_lines_are_short(page):
    long = [
        f"line {number}: {len(line)} characters"
        for number, line in prose_lines(page.read_text(encoding="utf-8"))
        if len(line) > PROSE_MAX_CHARS
    ]
    assert not long, f"{name(page)} has prose lines over {PROSE_MAX_CHARS} characters (wrap them): {long}"


def test_status_cells_are_a_sentence_or_two():
    long = []
    for line in (ROOT / "docs" / "status.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("|") and not set(line) <= set("|- "):
            cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
            long += [
                f"{cells[0]}: {len(cell)} characters" for cell in cells if len(cell) > STATUS_CELL_MAX_CHARS
            ]
    assert not long, (
        f"docs/status.md cells over {STATUS_CELL_MAX_CHARS} characters (history goes to history.md): {long}"
    )


def test_readme_is_a_front_door():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines (≤ {README_MAX_LINES}: the rest in docs/)"


def test_the_checks_see_what_they_check(tmp_path):
    """The link finder, the anchor slugs and the prose filter themselves (else the tests above cannot
    fail)."""
    assert "docs/design.md" in relative_links(ROOT / "README.md")
    assert slug('2026-12-02: `make repro` on one Ray runtime, issue 13\'s "not slower"') == (
        "2026-12-02-make-repro-on-one-ray-runtime-issue-13s-not-slower"
    )
    page = tmp_path / "page.md"
    page.write_text(
        "# A\n\n## B\n\n## B\n\n```\n" + "x" * 200 + " [c](missing.md)\n```\n| " + "y" * 200 + " |\nz\n"
    )
    assert anchors(page) == {"a", "b", "b-1"}
    assert relative_links(page) == []
    assert [line for _, line in prose_lines(page.read_text())] == ["# A", "", "## B", "", "## B", "", "z"]
