"""The docs stand alone: nothing in the repository points at a file outside it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from conftest import ROOT

CLIMB = re.compile(r"(?<![\w/>])(?:\.\./)+[\w-][\w.-]*")
"""A relative path that starts by going up: it must still land inside the repository."""
WORKSPACE = re.compile(r"/work/(?!main\b)\w")
"""An absolute path into the workspace this project was written in, which a clone does not have."""


def leaves_the_repository(path: Path, line: str) -> bool:
    if WORKSPACE.search(line):
        return True
    return any(ROOT not in (path.parent / m).resolve().parents for m in CLIMB.findall(line))


def tracked() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [ROOT / name for name in listed.split("\0") if name]


def test_no_file_points_outside_the_repository() -> None:
    """Issue 21: docs, code and dist/ cited a notes file outside the repository (now docs/agent.md)."""
    offenders = []
    for path in tracked():
        if path == Path(__file__) or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        offenders += [
            f"{path.relative_to(ROOT)}:{n}"
            for n, line in enumerate(text.splitlines(), 1)
            if leaves_the_repository(path, line)
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
