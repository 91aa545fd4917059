#!/usr/bin/env python3
"""Markdown summary of how a change alters the synthesized manifests, per environment.

    scripts/dist_diff_summary.py BASE [HEAD]     (default HEAD: the working tree's HEAD)

Reads ``git diff BASE HEAD -- dist/ docs/environments/`` and prints one section
per environment folder: a table of added/changed/removed objects with line
counts, then the diff itself in a collapsed block. Output stays under GitHub's
comment limit (65,536 characters) by truncating the diffs, never the tables.
The first line is a marker the PR workflow uses to update its comment in place.
Standard library only, so it runs on a bare CI runner.
"""

from __future__ import annotations

import subprocess
import sys
from collections import defaultdict

MARKER = "<!-- kga-dist-diff -->"
PATHS = ("dist/", "docs/environments/")
LIMIT = 60_000
_STATUS = {"A": "added", "M": "changed", "D": "removed", "R": "renamed", "T": "changed"}


def git(*args: str) -> str:
    return subprocess.run(["git", *args], check=True, capture_output=True, text=True).stdout


def group(path: str) -> str:
    """``dist/dev/x.yaml`` -> ``dev``; ``docs/environments/dev/capacity.md`` -> ``dev``."""
    parts = path.split("/")
    return parts[2] if parts[0] == "docs" and len(parts) > 2 else parts[1] if len(parts) > 1 else path


def summary(base: str, head: str) -> str:
    status = {
        line.split("\t")[-1]: _STATUS.get(line[0], line[0])
        for line in git("diff", "--name-status", base, head, "--", *PATHS).splitlines()
        if line
    }
    counts: dict[str, tuple[str, str]] = {}
    for line in git("diff", "--numstat", base, head, "--", *PATHS).splitlines():
        added, removed, path = line.split("\t", 2)
        counts[path] = (added, removed)
    if not status:
        return f"{MARKER}\n### Manifest diff\n\nNo change to `dist/` or `docs/environments/`.\n"

    by_env: dict[str, list[str]] = defaultdict(list)
    for path in sorted(status):
        by_env[group(path)].append(path)

    out = [
        MARKER,
        "### Manifest diff",
        "",
        f"`git diff {base[:12]} {head[:12]} -- {' '.join(PATHS)}`, by environment.",
        "",
    ]
    budget = LIMIT - sum(len(p) + 80 for p in status) - 2_000
    for env in sorted(by_env):
        paths = by_env[env]
        out += [f"#### `{env}`: {len(paths)} file(s)", "", "| file | change | + | - |", "|---|---|---:|---:|"]
        for path in paths:
            added, removed = counts.get(path, ("", ""))
            out.append(f"| `{path}` | {status[path]} | {added} | {removed} |")
        diff = git("diff", "--no-color", base, head, "--", *paths)
        share = max(budget // max(len(by_env), 1), 0)
        if len(diff) > share:
            diff = diff[:share] + "\n... (truncated; run the git diff above for the rest)\n"
        # four backticks: the generated docs contain ``` fences of their own
        out += ["", "<details><summary>diff</summary>", "", "````diff", diff.rstrip("\n"), "````", "", "</details>", ""]
    return "\n".join(out)


def main(argv: list[str]) -> int:
    if not 1 <= len(argv) <= 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    base, head = argv[0], argv[1] if len(argv) == 2 else "HEAD"
    sys.stdout.write(summary(base, head))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
