#!/usr/bin/env python3
"""Synthesize every environment in environments/ into dist/<env>/.

Usage:
  python app.py [--environments DIR] [--outdir DIR]
  python app.py restore ENV STORE [--backup-id ID] [--force]   # prints a restore Job

Exit codes: 0 done, 2 a bad environment file or argument, 1 an inconsistent stack.
On any error dist/ is left exactly as it was.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
# jsii needs a supported Node LTS; the set-up links one here when the machine's is too old.
_PROJECT_NODE = ROOT / ".tools" / "jsii-node"
if "JSII_NODE" not in os.environ and _PROJECT_NODE.exists():
    os.environ["JSII_NODE"] = str(_PROJECT_NODE)

import cdk8s  # noqa: E402  (after JSII_NODE is chosen)
from pydantic import ValidationError  # noqa: E402

from kgstack import AgentStack, EnvironmentError, load_environment, load_environments  # noqa: E402
from kgstack.backup_schedule import restore_job  # noqa: E402
from kgstack.gitops_chart import GitOpsChart, GitOpsTarget  # noqa: E402
from kgstack.publish import SynthError, render, synth_objects, to_yaml, write_tree  # noqa: E402
from kgstack.reports import render_docs  # noqa: E402
from kgstack.schema import check_objects  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["restore"]:
        return restore(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--environments", type=Path, default=ROOT / "environments")
    parser.add_argument("--outdir", type=Path, default=ROOT / "dist")
    parser.add_argument(
        "--docs",
        type=Path,
        default=None,
        help="generated architecture and capacity pages (default: <outdir>/../docs/environments)",
    )
    args = parser.parse_args(argv)

    try:
        environments = load_environments(args.environments)
    except EnvironmentError as exc:
        return _fail(exc.problems, 2)

    charts = []
    for env in environments:
        try:
            # One App per environment: environments share nothing, and cdk8s validates per app.
            charts.append(AgentStack(cdk8s.App(), env))
        except ValidationError as exc:
            return _fail([f"environment {env.name}: {e['msg']}" for e in exc.errors()], 1)
    for chart in charts:
        for notice in chart.edge.notices:
            print(f"environment {chart.node.id}: {notice}", file=sys.stderr)
    versions = {env.name: env.kubernetes_version for env in environments}
    try:
        objects = synth_objects(
            charts,
            checks=[
                lambda env, objects: check_objects(env, objects, versions[env]),
            ],
        )
        # Argo CD Applications live beside the environments, never inside the folder they sync.
        targets = [GitOpsTarget.of(env, env.gitops) for env in environments if env.gitops]
        gitops = synth_objects([GitOpsChart(cdk8s.App(), targets)]) if targets else {}
    except SynthError as exc:
        return _fail([f"environment {p}" for p in exc.problems], 1)

    rendered = {name: render(files) for name, files in {**objects, **gitops}.items()}
    write_tree(rendered, args.outdir)
    write_tree(render_docs(objects), args.docs or args.outdir.parent / "docs" / "environments")
    # `cdk8s synth` wipes its own output folder first, so it points at a scratch folder
    # (cdk8s.yaml) and gets a copy; dist/ is only ever replaced by the swap above.
    cli_outdir = os.environ.get("CDK8S_OUTDIR")
    if cli_outdir and Path(cli_outdir).resolve() != args.outdir.resolve():
        write_tree(rendered, Path(cli_outdir))
    print(f"synthesized {', '.join(versions)} into {args.outdir}")
    return 0


def restore(argv: list[str]) -> int:
    """Print the Job that restores one store of one environment (not part of dist/)."""
    parser = argparse.ArgumentParser(prog="app.py restore", description=restore.__doc__)
    parser.add_argument("environment")
    parser.add_argument("store", choices=["redis", "chroma", "memgraph"])
    parser.add_argument("--backup-id", help="a backup id from `kgbackup list`; default: the latest")
    parser.add_argument("--force", action="store_true", help="replace data in a non-empty store")
    parser.add_argument("--environments", type=Path, default=ROOT / "environments")
    args = parser.parse_args(argv)
    try:
        env = load_environment(args.environments / f"{args.environment}.yaml")
        job = restore_job(AgentStack(cdk8s.App(), env).backups, args.store, backup_id=args.backup_id, force=args.force)
    except EnvironmentError as exc:
        return _fail(exc.problems, 2)
    except ValueError as exc:
        return _fail([f"environment {args.environment}: {exc}"], 2)
    print(to_yaml(job), end="")
    return 0


def _fail(problems: list[str], code: int) -> int:
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    print(f"{len(problems)} problem(s); nothing was written.", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
