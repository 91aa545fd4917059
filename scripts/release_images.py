#!/usr/bin/env python3
"""Record released image digests in environments/releases/images.yaml (the release workflow's step).

    scripts/release_images.py ghcr.io/acme/kgbackup:0.1.0@sha256:<64 hex> ...
    scripts/release_images.py --check ghcr.io/acme/kgbackup@sha256:<64 hex> ...

Each argument is ``REPOSITORY:VERSION@sha256:HEX`` of an image the workflow has
pushed, whose signature scripts/verify_release.py has checked and whose VERSION it
read from the image itself (its ``org.opencontainers.image.version`` label): a
digest is recorded under the version it was built as and under no other, so moving
one environment to a new tag never re-points another's pin. ``--check`` only
refuses repositories that no environment deploys (the workflow pushes to
``ghcr.io/<owner>``; the environments must name that owner). The file is rewritten
sorted, with its header, so a release is a one-line diff per image. Exit 0 done,
2 a malformed argument or file, or a repository no environment deploys.
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


def deployed_repositories(environments: Path) -> set[str]:
    """Repositories of the images the environment files deploy."""
    repositories = set()
    for path in environments.glob("*.yaml"):
        images = (yaml.safe_load(path.read_text()) or {}).get("images") or {}
        repositories |= {str(i["repository"]) for i in images.values() if isinstance(i, dict) and "repository" in i}
    return repositories


def _parse(text: str, deployed: set[str]) -> re.Match[str]:
    match = _REF.match(text)
    if not match:
        raise ReleasesError(f"{text!r}: expected REPOSITORY:VERSION@sha256:<64 hex>")
    repository = match["repository"]
    if repository not in deployed:
        name = repository.rpartition("/")[2]
        named = sorted(r for r in deployed if r.rpartition("/")[2] == name)
        hint = f"; they name {', '.join(named)}" if named else ""
        raise ReleasesError(
            f"{text!r}: no environment deploys {repository}{hint}. The workflow pushes to ghcr.io/<repository owner>: "
            "set images.*.repository in environments/*.yaml to that owner's repositories (docs/deployment.md)"
        )
    return match


def check(environments: Path, refs: list[str]) -> None:
    """Refuse a malformed reference or a repository that no environment deploys."""
    deployed = deployed_repositories(environments)
    for text in refs:
        _parse(text, deployed)


def record(environments: Path, refs: list[str]) -> Path:
    path = environments / RELEASES_FILE
    releases = load_releases(environments)
    deployed = deployed_repositories(environments)
    matches = [_parse(text, deployed) for text in refs]  # all checked before anything is written
    for text, match in zip(refs, matches, strict=True):
        if not match["tag"]:
            raise ReleasesError(
                f"{text!r}: name the version the image was built as (REPOSITORY:VERSION@sha256:HEX); "
                "scripts/verify_release.py reads it from the image"
            )
    for match in matches:
        releases.setdefault(match["repository"], {})[match["tag"]] = match["digest"]
    header = "".join(line for line in path.read_text().splitlines(keepends=True) if line.startswith("#"))
    body = yaml.safe_dump({r: dict(sorted(t.items())) for r, t in sorted(releases.items())}, sort_keys=False)
    path.write_text(header + body)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("refs", nargs="+", metavar="REPOSITORY:VERSION@sha256:HEX")
    parser.add_argument("--environments", type=Path, default=ROOT / "environments")
    parser.add_argument("--check", action="store_true", help="only refuse what could not be recorded")
    args = parser.parse_args(argv)
    try:
        if args.check:
            check(args.environments, args.refs)
            return 0
        path = record(args.environments, args.refs)
    except ReleasesError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"recorded {len(args.refs)} image(s) in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
