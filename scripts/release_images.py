#!/usr/bin/env python3
"""Record released image digests in environments/releases/images.yaml (the release workflow's step).

    scripts/release_images.py ghcr.io/acme/kgbackup[:0.1.0]@sha256:<64 hex> ...

Each argument is ``REPOSITORY[:TAG]@sha256:HEX`` of an image the workflow has just
pushed and then looked up again by digest in the registry; the script only
records it, under TAG or, without one, under every tag of REPOSITORY that an
environment file names. The file is rewritten sorted, with its header, so a release is a
one-line diff per image. Exit 0 done, 2 a malformed argument or file.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "constructs"))

from kgstack.releases import RELEASES_FILE, ReleasesError, load_releases  # noqa: E402

_REF = re.compile(
    r"^(?P<repository>[a-z0-9][a-z0-9./_-]*)(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?@(?P<digest>sha256:[a-f0-9]{64})$"
)


def named_tags(environments: Path, repository: str) -> set[str]:
    """Tags of ``repository`` that the environment files deploy."""
    tags = set()
    for path in environments.glob("*.yaml"):
        images = (yaml.safe_load(path.read_text()) or {}).get("images") or {}
        tags |= {str(i["tag"]) for i in images.values() if isinstance(i, dict) and i.get("repository") == repository}
    return tags


def record(environments: Path, refs: list[str]) -> Path:
    path = environments / RELEASES_FILE
    releases = load_releases(environments)
    for text in refs:
        match = _REF.match(text)
        if not match:
            raise ReleasesError(f"{text!r}: expected REPOSITORY[:TAG]@sha256:<64 hex>")
        tags = {match["tag"]} if match["tag"] else named_tags(environments, match["repository"])
        if not tags:
            raise ReleasesError(f"{text!r}: no environment deploys {match['repository']}; name the tag")
        for tag in tags:
            releases.setdefault(match["repository"], {})[tag] = match["digest"]
    header = "".join(line for line in path.read_text().splitlines(keepends=True) if line.startswith("#"))
    body = yaml.safe_dump({r: dict(sorted(t.items())) for r, t in sorted(releases.items())}, sort_keys=False)
    path.write_text(header + body)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("refs", nargs="+", metavar="REPOSITORY[:TAG]@sha256:HEX")
    parser.add_argument("--environments", type=Path, default=ROOT / "environments")
    args = parser.parse_args(argv)
    try:
        path = record(args.environments, args.refs)
    except ReleasesError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"recorded {len(args.refs)} image(s) in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
