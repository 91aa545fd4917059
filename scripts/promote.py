#!/usr/bin/env python3
"""Promote by commit: point an environment at the commit its source environment was validated on.

    argocd app get kga-staging -o json | scripts/promote.py prod -

The environment (``environments/prod.yaml``) names its source in ``gitops.promotedFrom``.
The Argo CD status given (a file, or ``-`` for stdin) must be that source's Application,
synced from the same repository and path ``dist/<source>``, ``Synced`` and ``Healthy``; its
``status.sync.revision`` is the commit validated. That full commit becomes
``gitops.targetRevision`` of the environment, so its Application deploys exactly the commit
the source ran, never what a branch holds at sync time. Then ``make synth`` and a pull request.
Exit 0 written, 2 refused (nothing written).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


class PromotionError(ValueError):
    """Why the commit cannot be promoted; nothing was written."""


def validated_commit(status: dict[str, Any], source: str, repo_url: str) -> str:
    """The commit the source environment's Application is synced and healthy on."""
    spec = status.get("spec") or {}
    app = (spec.get("source") or {}) if isinstance(spec, dict) else {}
    name = (status.get("metadata") or {}).get("name", "?")
    if app.get("path") != f"dist/{source}" or app.get("repoURL") != repo_url:
        raise PromotionError(
            f"Application {name} syncs {app.get('repoURL')} {app.get('path')}, not {repo_url} dist/{source}: "
            f"give the status of {source}'s Application"
        )
    state = status.get("status") or {}
    sync, health = state.get("sync") or {}, (state.get("health") or {}).get("status")
    if sync.get("status") != "Synced" or health != "Healthy":
        raise PromotionError(f"{name} is {sync.get('status')} and {health}: only a synced, healthy {source} validates")
    revision = str(sync.get("revision") or "")
    if not _COMMIT.match(revision):
        raise PromotionError(f"{name}: status.sync.revision {revision!r} is not a full commit")
    return revision


def with_target_revision(text: str, revision: str) -> str:
    """``text`` of an environment file with ``gitops.targetRevision`` set; comments and order kept."""
    out, inside, done = [], False, False
    for line in text.splitlines(keepends=True):
        if inside and line.strip() and not line.startswith((" ", "#")):
            inside = False
        if inside and re.match(r"^\s+targetRevision:", line):
            indent = line[: len(line) - len(line.lstrip())]
            out.append(f"{indent}targetRevision: {revision}\n")
            done = True
            continue
        if line.rstrip() == "gitops:":
            inside = True
        out.append(line)
    if not done:
        raise PromotionError("gitops.targetRevision: not found in the file; add it under gitops:")
    return "".join(out)


def promote(environments: Path, name: str, status: dict[str, Any], repository: Path | None) -> tuple[str, str]:
    path = environments / f"{name}.yaml"
    gitops = (yaml.safe_load(path.read_text()) or {}).get("gitops") or {}
    source = gitops.get("promotedFrom")
    if not source:
        raise PromotionError(f"{path}: gitops.promotedFrom: not set; this environment is not promoted by commit")
    revision = validated_commit(status, str(source), str(gitops.get("repoURL")))
    if repository is not None:
        known = subprocess.run(
            ["git", "-C", str(repository), "cat-file", "-e", f"{revision}^{{commit}}"], capture_output=True, check=False
        )
        if known.returncode != 0:
            raise PromotionError(f"{revision}: not a commit of {repository}; fetch it first")
        for folder in (f"dist/{source}", f"dist/{name}"):
            present = subprocess.run(
                ["git", "-C", str(repository), "cat-file", "-e", f"{revision}:{folder}"],
                capture_output=True,
                check=False,
            )
            if present.returncode != 0:
                raise PromotionError(f"{revision}: has no {folder}; {name} cannot deploy it")
    old = str(gitops.get("targetRevision"))
    path.write_text(with_target_revision(path.read_text(), revision))
    return old, revision


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("environment", help="the environment to promote (its file names promotedFrom)")
    parser.add_argument("status", help="`argocd app get <source Application> -o json` output; - for stdin")
    parser.add_argument("--environments", type=Path, default=ROOT / "environments")
    parser.add_argument("--repository", type=Path, default=ROOT, help="the Git checkout holding the commit")
    args = parser.parse_args(argv)
    try:
        status = json.loads(sys.stdin.read() if args.status == "-" else Path(args.status).read_text())
        old, new = promote(args.environments, args.environment, status, args.repository)
    except (PromotionError, json.JSONDecodeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"{args.environments / args.environment}.yaml: gitops.targetRevision: {old} -> {new}; "
        "run `make synth` and open a pull request: merging it points the Application at that commit"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
