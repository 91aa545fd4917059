"""The docs stand alone: nothing in the repository points at a file outside it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from conftest import ROOT

OUTSIDE = re.compile(r"\.\./shared|shared/agent-facts|agent-facts\.md|/work/shared")
"""Files of the workspace this project was written in, which a clone does not have."""


def tracked() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [ROOT / name for name in listed.split("\0") if name]


def test_no_file_points_outside_the_repository() -> None:
    """Issue 21: docs, code and dist/ cited shared/agent-facts.md, which a clone does not have (docs/agent.md)."""
    offenders = []
    for path in tracked():
        if path == Path(__file__) or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        offenders += [
            f"{path.relative_to(ROOT)}:{n}" for n, line in enumerate(text.splitlines(), 1) if OUTSIDE.search(line)
        ]
    assert offenders == []


def markdown_links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return [m for m in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"[a-z][a-z0-9+.-]*:", m)]


def test_every_relative_link_of_the_docs_resolves_inside_the_repository() -> None:
    pages = [p for p in tracked() if p.suffix == ".md" and not p.is_relative_to(ROOT / "tests")]
    assert ROOT / "README.md" in pages and any(p.parent == ROOT / "docs" for p in pages)
    broken = []
    for page in pages:
        for link in markdown_links(page):
            target = (page.parent / link.split("#")[0]).resolve()
            if not target.is_relative_to(ROOT) or not target.exists():
                broken.append(f"{page.relative_to(ROOT)}: {link}")
    assert broken == []
