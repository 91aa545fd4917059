#!/usr/bin/env python3
"""Print the Chroma release the agent image must pin its ``chromadb`` client to.

The release is not typed here: it is read from the Chroma StatefulSets in
``dist/<env>/`` (what we ship, synthesized from ``images.chroma``). One agent
image runs in every environment, so every environment must deploy the same
Chroma release; a mismatch is an error. Standard library only, so the release
workflow can run it before any Python environment exists:

    docker build --build-arg CHROMADB_VERSION="$(python3 docker/agent/chroma_release.py)" ...
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

DIST = Path(__file__).resolve().parents[2] / "dist"
# The server container's image line, as app.py writes it: repository:tag@digest.
_IMAGE = re.compile(
    r"^\s*image:\s*\S*/chromadb/chroma:(?P<tag>[0-9][0-9A-Za-z.+-]*)(?:@sha256:[0-9a-f]{64})?\s*$", re.M
)


def releases(dist: Path = DIST) -> dict[str, str]:
    """``{dist file: Chroma release}`` for every environment that deploys Chroma."""
    found: dict[str, str] = {}
    for path in sorted(dist.glob("*/statefulset-*-chroma.yaml")):
        tags = {m.group("tag") for m in _IMAGE.finditer(path.read_text(encoding="utf-8"))}
        if len(tags) != 1:
            raise SystemExit(f"{path}: expected one chromadb/chroma image, found {sorted(tags) or 'none'}")
        found[str(path.relative_to(dist.parent))] = tags.pop()
    return found


def release(dist: Path = DIST) -> str:
    """The one Chroma release every environment deploys (the client pin of the agent image)."""
    found = releases(dist)
    if not found:
        raise SystemExit(f"no Chroma StatefulSet under {dist}: run the synth first")
    if len(set(found.values())) != 1:
        detail = ", ".join(f"{path}: {tag}" for path, tag in found.items())
        raise SystemExit(f"one agent image serves every environment, but the Chroma releases differ: {detail}")
    return next(iter(found.values()))


if __name__ == "__main__":
    print(release())
    sys.exit(0)
