"""The docs stand alone: nothing in the repository points at a file outside it."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from conftest import ROOT

CLIMB = re.compile(r"(?<![\w/>])(?:\.\./)+[\w-][\w.-]*")
"""A relative path that starts by going up: it must still land inside the repository."""
WORKSPACE = re.compile(r"/work/(?!main\b)\w")
"""An absolute path into the workspace this project was written in, which a clone does not have."""
PAGE = re.compile(r"(?<![\w./:$\\{-])((?:[\w-][\w.-]*/)+[\w-][\w.-]*\.md)\b")
"""A page named by its path (``docs/agent.md``), not a URL, a variable or an escape."""
APP_SCAN = ROOT / "docker" / "agent" / "app-imports.json"
"""The app's checkout as scripts/app_imports.py scanned it: its paths are the app's, not ours."""


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


def test_every_page_a_file_names_is_in_the_repository() -> None:
    """Issue 21: docs and code cited a facts page kept outside the repository, a path no clone has. A page named
    by its path, relative to the file or to the repository's root, must exist."""
    missing = []
    for path in tracked():
        if path in (Path(__file__), APP_SCAN) or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        missing += [
            f"{path.relative_to(ROOT)}:{n}: {page}"
            for n, line in enumerate(text.splitlines(), 1)
            for page in PAGE.findall(line)
            if not (path.parent / page).exists() and not (ROOT / page).exists()
        ]
    assert missing == []


APP = json.loads(APP_SCAN.read_text(encoding="utf-8"))
"""The app's checkout at the pinned commit, as scripts/app_imports.py scanned it: files, definitions."""
WRITTEN_BY_THE_APP = {"indexed_commits.json"}
"""Files docs/agent.md names that the app creates at run time (CommitTracker's default storage_path)."""
SOURCE = r"`((?:[\w.-]+/)*[\w.-]+\.py)`"
NAME = r"`([A-Z]\w*(?:\.\w+)?|_?[a-z]\w*)`"
"""A class, ``Class.method`` or function of the app (not a dotted module path or a file name)."""


def _defines(source: str, name: str) -> bool:
    names = APP["definitions"].get(source, [])
    return name in names or any(defined.endswith(f".{name}") for defined in names)


def test_the_agent_facts_cite_their_sources_at_the_pinned_commit() -> None:
    """Issue 21: the facts the stack relies on lived outside the repository. docs/agent.md holds them, each
    with its source at the pinned commit: every file it names is in that checkout (or ours), and every name
    it pairs with a source file, `name` (`file`) or (`file`, `name`), is defined in that file."""
    text = (ROOT / "docs" / "agent.md").read_text(encoding="utf-8")
    assert APP["commit"] in text
    files = set(APP["files"])
    named = set(re.findall(r"`((?:[\w.-]+/)*[\w.-]+\.(?:py|json|txt|toml|cfg|ya?ml))`", text))
    unknown = sorted(p for p in named if p not in files and not (ROOT / p).exists() and p not in WRITTEN_BY_THE_APP)
    assert unknown == []
    flat = " ".join(text.split())
    pairs = re.findall(NAME + r" \(" + SOURCE, flat)
    pairs += [(name, source) for source, name in re.findall(r"\(" + SOURCE + ", " + NAME, flat)]
    assert len(pairs) >= 10
    undefined = [f"{name} ({source})" for name, source in pairs if not _defines(source, name)]
    assert undefined == []
