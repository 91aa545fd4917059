"""Released digests of our own images: one file, written only by the release workflow.

``environments/releases/images.yaml`` maps ``repository -> {tag: digest}``. An
environment file names our images by repository and tag only; the digest comes
from here, so no hand-typed (or invented) digest can reach ``dist/``. A tag with
no entry was never released: the environment still synthesizes, with the tag
alone, and its Argo CD Application is rendered without automated sync.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from .environment import OWN_IMAGES, Environment
from .model import ImageRef

RELEASES_FILE = Path("releases") / "images.yaml"
"""Relative to the environments folder."""
_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")

Releases = dict[str, dict[str, str]]


class ReleasesError(ValueError):
    """The releases file is malformed; the message names the file and the field."""


def load_releases(environments: Path) -> Releases:
    path = environments / RELEASES_FILE
    if not path.exists():
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ReleasesError(f"{path}: (file): expected a mapping of repository to {{tag: digest}}")
    for repository, tags in data.items():
        if not isinstance(tags, dict):
            raise ReleasesError(f"{path}: {repository}: expected a mapping of tag to digest")
        for tag, digest in tags.items():
            if not isinstance(digest, str) or not _DIGEST.match(digest):
                raise ReleasesError(f"{path}: {repository}.{tag}: {digest!r} is not a sha256 digest")
    return {str(r): {str(t): str(d) for t, d in tags.items()} for r, tags in data.items()}


def own_digest_problems(env: Environment, source: str) -> list[str]:
    """An environment file must not pin our own images itself."""
    return [
        f"{source}: images.{name}.digest: digests of our own images come from environments/{RELEASES_FILE}, "
        "written by the release workflow; remove it"
        for name in OWN_IMAGES
        if getattr(env.images, name).digest is not None
    ]


def with_releases(env: Environment, releases: Releases) -> Environment:
    """``env`` with each of our images pinned to its released digest, where it was released."""
    images = {}
    for name in OWN_IMAGES:
        ref: ImageRef = getattr(env.images, name)
        digest = releases.get(ref.repository, {}).get(ref.tag)
        images[name] = ref.model_copy(update={"digest": digest})
    return env.model_copy(update={"images": env.images.model_copy(update=images)})


def unreleased(env: Environment) -> list[str]:
    """``name repository:tag`` of our images that ``env`` deploys but that were never released."""
    return [
        f"{name} {ref.repository}:{ref.tag}" for name in OWN_IMAGES if (ref := getattr(env.images, name)).digest is None
    ]
