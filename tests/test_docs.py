"""The documentation holds together: every relative link in README.md, docs/*.md and benchmarks/README.md
names a file that exists, every #anchor names a heading of its target, the README stays a front door, and
no page points at anything a user of the repository does not have.

Anchors follow GitHub's rule: the heading's text, lower-cased, without punctuation other than '-' and
spaces (letters, digits and '_' stay), spaces turned into '-'; a repeated heading gets '-1', '-2', ...
"""
from __future__ import annotations

import re
import sys
from functools import lru_cache
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 260

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
# [text](target) and ![alt](target); the target ends at the first space (a title may follow) or ')'.
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+[\"'][^)]*[\"'])?\s*\)")
HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=[\"']([^\"']+)[\"']", re.I)
# What a reader of the repository does not have: the development workplace's material and its issue numbers.
FORBIDDEN = [(re.compile(r"original_code_reference", re.I), "original_code_reference"),
             (re.compile(r"\.\./shared"), "../shared"),
             (re.compile(r"\bissues?\s*#?\s*\d+", re.I), "an issue number")]


def doc_files() -> List[Path]:
    """The pages checked: the README, every page in docs/ and the benchmarks' README."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "README.md"]


def prose_lines(path: Path) -> Iterator[Tuple[int, str]]:
    """(line number, line) of the lines outside fenced code blocks, with inline code spans blanked out."""
    fenced = False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, INLINE_CODE.sub(lambda m: " " * len(m.group(0)), line)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading's text (inline markup removed first)."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = "".join(c for c in text if c.isalnum() or c in "-_ ")
    return text.replace(" ", "-")


@lru_cache(maxsize=None)
def anchors(path: Path) -> Set[str]:
    """Every anchor a page defines: its headings' (numbered when repeated) and explicit <a name/id>."""
    found: Set[str] = set()
    seen: Dict[str, int] = {}
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if fenced:
            continue
        found.update(HTML_ANCHOR.findall(line))
        m = HEADING.match(line)
        if m:
            base = slug(m.group(2))
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
    return found


def links(path: Path) -> Iterator[Tuple[int, str]]:
    """(line number, target) of every link on the page outside code, web addresses left out."""
    text_lines = dict(prose_lines(path))
    for number, line in text_lines.items():
        for target in LINK.findall(line):
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto: ...
                yield number, target


def broken_links(path: Path) -> List[str]:
    problems = []
    for number, target in links(path):
        file_part, _, anchor = target.partition("#")
        dest = path if not file_part else (path.parent / file_part).resolve()
        where = f"{path.relative_to(ROOT)}:{number}: {target}"
        if not dest.exists():
            problems.append(f"{where}: no such file {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{where}: no heading with anchor #{anchor} in {dest.relative_to(ROOT)}")
    return problems


@pytest.mark.parametrize("page", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_links_resolve(page):
    assert page.exists(), f"{page} is missing"
    problems = broken_links(page)
    assert not problems, "\n".join(problems)


def test_every_doc_is_reachable_from_the_readme():
    """A page that nothing links to is a page nobody finds."""
    readme = ROOT / "README.md"
    targets = {(ROOT / t.partition("#")[0]).resolve() for _, t in links(readme) if t.partition("#")[0]}
    unlinked = [str(p.relative_to(ROOT)) for p in doc_files() if p != readme and p.resolve() not in targets]
    assert not unlinked, f"README.md links to none of: {unlinked}"


def test_readme_is_short():
    n = len((ROOT / "README.md").read_text(encoding="utf-8").splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines; at most {README_MAX_LINES}: move the detail to docs/"


@pytest.mark.parametrize("page", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_pointers_outside_the_repository(page):
    hits = [f"{page.relative_to(ROOT)}:{number}: mentions {name}: {line.strip()}"
            for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1)
            for pattern, name in FORBIDDEN if pattern.search(line)]
    assert not hits, "\n".join(hits)


# The checker itself, on cases whose answer is known.

def test_slug_follows_githubs_rule():
    assert slug("1. Frames: `data/extract_frame.py`") == "1-frames-dataextract_framepy"
    assert slug("Cross-dataset: CASIA-MFSD ↔ Replay-Attack") == "cross-dataset-casia-mfsd--replay-attack"
    assert slug("Two modes: ISO/IEC 30107-3 and the original code") == "two-modes-isoiec-30107-3-and-the-original-code"
    assert slug("1. LightCNN weights (needed for the paper's identity losses)") == \
        "1-lightcnn-weights-needed-for-the-papers-identity-losses"


def test_checker_finds_a_broken_file_and_anchor(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "other.md").write_text("# Title\n\n## A section\n\n## A section\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](other.md#a-section) [ok2](other.md#a-section-1) [self](#top)\n"
                    "# Top\n"
                    "[gone](missing.md) [bad](other.md#nowhere) [web](https://example.org/#x)\n"
                    "`[in code](missing2.md)`\n```\n[fenced](missing3.md)\n```\n")
    problems = broken_links(page)
    assert len(problems) == 2, problems
    assert "page.md:3: missing.md" in problems[0] and "#nowhere" in problems[1]
