#!/usr/bin/env python3
"""Synthesize every environment in environments/ into dist/<env>/.

Usage (through make, which runs it in the project's venv):
  make synth                                   python app.py [--environments DIR] [--outdir DIR]
  make restore ENV= STORE= [BACKUP_ID=]        python app.py restore ENV STORE [--backup-id ID] [--force]
  make backups ENV= STORE=                     python app.py backups ENV STORE
The restore and backups commands print a Job to stdout (for `kubectl apply -f -`) and
what it will do, with its preconditions, to stderr. They never contact a cluster.

Exit codes: 0 done, 2 a bad environment file or argument, 1 an inconsistent stack.
On any error dist/ is left exactly as it was.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

ROOT = Path(__file__).resolve().parent
# This checkout's library, even when the venv has another checkout installed in editable mode.
sys.path.insert(0, str(ROOT / "constructs"))

# First: importing kgstack picks a Node that jsii supports (kgstack._node) before cdk8s starts it.
import kgstack  # noqa: E402, F401

# isort: split
import cdk8s  # noqa: E402
from pydantic import ValidationError  # noqa: E402

from kgstack import AgentStack, Environment, EnvironmentFileError, load_environment, load_environments  # noqa: E402
from kgstack.backup_schedule import (  # noqa: E402
    TRACKED_STORES,
    TRACKER_FROM_RESTORE_LOG,
    TRACKER_WRITE,
    BackupSchedule,
    list_job,
    restore_job,
)
from kgstack.cluster_platform import (  # noqa: E402
    ClusterPlatform,
    ClusterPlatformProps,
    PlatformGateway,
    install_procedure,
)
from kgstack.compose_gate import ComposeGate  # noqa: E402
from kgstack.compose_project import ComposeError, ComposeProject  # noqa: E402
from kgstack.cross_reference import ClusterGate, Platform  # noqa: E402
from kgstack.environment import OWN_IMAGES, TARGET_FOLDERS, Target, known_environments  # noqa: E402
from kgstack.gitops_chart import CHART_ID, PLATFORM_FOLDER, GitOpsChart, GitOpsTarget  # noqa: E402
from kgstack.image_policy import (  # noqa: E402
    WORKFLOW,
    ImagePolicyProps,
    SigningIdentity,
    SigningIdentityError,
    signing_identity,
)
from kgstack.model import Stage  # noqa: E402
from kgstack.object_patch import PatchError, apply_patches  # noqa: E402
from kgstack.publish import SynthError, render, synth_objects, to_yaml, write_tree  # noqa: E402
from kgstack.reindex_client import INDEX_REPOSITORY  # noqa: E402
from kgstack.releases import (  # noqa: E402
    ReleasesError,
    load_releases,
    own_digest_problems,
    unreleased,
    with_releases,
)
from kgstack.reports import render_docs  # noqa: E402
from kgstack.schema import check_objects  # noqa: E402
from kgstack.validation import locate  # noqa: E402
from kgstack.workload_settings import apply_to_manifest  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["restore"]:
        return restore(argv[1:])
    if argv[:1] == ["backups"]:
        return backups(argv[1:])
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

    envdir = _shown(args.environments)
    try:
        environments = pin_releases(envdir, load_environments(envdir))
        composed, compose_docs = compose_projects(environments, envdir)
        identity = workflow_identity()
    except EnvironmentFileError as exc:
        return _fail(exc.problems, 2)
    for env in environments:
        if missing := unreleased(env):
            then = "Argo CD will not sync it automatically" if env.on_kubernetes else "deployed by tag"
            print(f"note: {env.name}: never released: {', '.join(missing)}; {then}")
    sources = {env.name: str(envdir / f"{env.name}.yaml") for env in environments}
    every = environments
    environments = [env for env in every if env.on_kubernetes]

    charts = []
    for env in environments:
        try:
            # One App per environment: environments share nothing, and cdk8s validates per app.
            charts.append(AgentStack(cdk8s.App(), env))
        except ValidationError as exc:
            return _fail([f"{sources[env.name]}: {exc.title}.{_loc(e['loc'])}: {e['msg']}" for e in exc.errors()], 1)
    for chart in charts:
        for notice in chart.edge.notices:
            print(f"environment {chart.node.id}: {notice}", file=sys.stderr)
    versions = {env.name: env.kubernetes_version for env in environments}
    stacks = {chart.env.name: chart for chart in charts}
    try:
        objects = synth_objects(
            charts,
            transform=lambda env, objects: patched(stacks[env].env, objects),
            checks=[
                lambda env, objects: check_objects(env, objects, versions[env]),
                lambda env, objects: [f"{env}/{p}" for p in stacks[env].check_references(objects)],
            ],
        )
        layers = platform_layers(environments, objects, versions, identity)
        clouds = cloud_targets(every)
    except SynthError as exc:
        return _fail(locate(exc.problems, sources), 1)

    rendered = {name: render(files) for name, files in {**objects, **layers.folders}.items()} | composed | clouds
    prerequisites = {name: stack.secrets.prerequisites for name, stack in stacks.items()}
    flows = {name: stack.network.props.flows for name, stack in stacks.items()}
    # Everything is rendered before anything is written: an error leaves dist/ and the docs as they were.
    docs = render_docs(objects, prerequisites, flows) | layers.docs | compose_docs
    write_tree(rendered, args.outdir)
    write_tree(docs, args.docs or args.outdir.parent / "docs" / "environments")
    # `cdk8s synth` wipes its own output folder first, so it points at a scratch folder
    # (cdk8s.yaml) and gets a copy; dist/ is only ever replaced by the swap above.
    cli_outdir = os.environ.get("CDK8S_OUTDIR")
    if cli_outdir and Path(cli_outdir).resolve() != args.outdir.resolve():
        write_tree(rendered, Path(cli_outdir))
    names = sorted({*versions, *(folder.split("/")[0] for folder in (*composed, *clouds))})
    summary = f"synthesized {', '.join(names)} into {_shown(args.outdir)}"
    print(summary)
    # The cdk8s CLI hides the app's output; `make cdk8s-synth` prints this line itself.
    summary_file = os.environ.get("KGA_SUMMARY_FILE")
    if summary_file:
        Path(summary_file).write_text(summary + "\n", encoding="utf-8")
    return 0


def cloud_targets(environments: list[Environment]) -> dict[str, dict[str, str]]:
    """``dist/<env>/ecs/`` (CloudFormation) and ``dist/<env>/aci/`` (ARM) of the environments that target them.
    aws-cdk-lib is imported only when one does: Kubernetes-only synth never loads it."""
    out: dict[str, dict[str, str]] = {}
    for env in environments:
        targets = set(env.targets)
        if not targets & {Target.ECS, Target.ACI}:
            continue
        from kgstack.cloud_components import kubernetes_view

        view = kubernetes_view(env)
        if Target.ECS in targets:
            from kgstack.ecs_stack import render_ecs

            template = render_ecs(env, view.objects, view.flows, view.remote_secrets)
            out[f"{env.name}/{TARGET_FOLDERS[Target.ECS]}"] = {
                "template.json": json.dumps(template, indent=1, sort_keys=True) + "\n"
            }
        if Target.ACI in targets:
            from kgstack.aci_template import render_aci

            out[f"{env.name}/{TARGET_FOLDERS[Target.ACI]}"] = render_aci(env, view.objects, view.remote_secrets)
    return out


def compose_projects(
    environments: list[Environment], envdir: Path
) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, str]]]:
    """``dist/<env>/compose/`` of every environment that targets Compose (kgstack.compose_project), and its page
    ``docs/environments/<env>/compose.md``; a problem is the environment file's (``file: field: reason``)."""
    folders: dict[str, dict[str, str]] = {}
    docs: dict[str, dict[str, str]] = {}
    problems: list[str] = []
    for env in environments:
        if Target.COMPOSE not in env.targets:
            continue
        source = str(envdir / f"{env.name}.yaml")
        try:
            compose = ComposeProject(env)
            files = compose.files()
        except ComposeError as exc:
            problems += [f"{source}: {p}" for p in exc.problems]
            continue
        except SynthError as exc:
            problems += locate(exc.problems, {env.name: source})
            continue
        gate = ComposeGate(files).problems()
        if gate:
            problems += [f"{source}: {env.name}/compose/{p}" for p in gate]
            continue
        folder = f"{env.name}/{TARGET_FOLDERS[Target.COMPOSE]}"
        docs[env.name] = {"compose.md": compose.runbook()}
        folders[folder] = {n: t for n, t in files.items() if "/" not in n}
        for name, text in files.items():
            if "/" in name:
                sub, leaf = name.rsplit("/", 1)
                folders.setdefault(f"{folder}/{sub}", {})[leaf] = text
    if problems:
        raise EnvironmentFileError(problems)
    return folders, docs


class PlatformLayers:
    """Per cluster: its Argo CD bundle and platform objects (``dist/argocd/<cluster>/[platform/]``), and
    its install procedure (``docs/environments/clusters/<cluster>/install.md``)."""

    def __init__(self) -> None:
        self.folders: dict[str, dict[str, dict[str, Any]]] = {}
        self.docs: dict[str, dict[str, str]] = {}


def platform_layers(
    environments: list[Environment],
    objects: dict[str, dict[str, dict[str, Any]]],
    versions: dict[str, str],
    identity: SigningIdentity,
) -> PlatformLayers:
    """The platform layer of every cluster the environments run on, checked against what the stacks use
    (kgstack.cross_reference.ClusterGate); raises SynthError naming the object and field."""
    out = PlatformLayers()
    clusters = {env.cluster.name: env.cluster for env in environments}
    problems: list[str] = []
    for name, cluster in sorted(clusters.items()):
        envs = [env for env in environments if env.cluster.name == name]
        gateways = [
            PlatformGateway(
                name=obj["metadata"]["name"], namespace=obj["metadata"]["namespace"], section_name=listener["name"]
            )
            for env in envs
            for obj in objects[env.name].values()
            if obj["kind"] == "Gateway"
            for listener in obj["spec"]["listeners"]
            if listener["protocol"] == "HTTP"
        ]
        platform = ClusterPlatform(
            cdk8s.App(),
            f"platform-{name}",
            props=ClusterPlatformProps(
                cluster=cluster,
                provider=envs[0].cloud.provider.value,
                gateways=gateways,
                ingress_nginx_namespace=next(
                    (
                        env.network.ingress_controller_namespace
                        for env in envs
                        if env.edge.controller == "ingress-nginx" or env.edge.side_by_side_ingress_nginx
                    ),
                    None,
                ),
                # Our images on this cluster, enforced unless only dev runs there (docs/operations.md).
                image_policy=ImagePolicyProps(
                    repositories=sorted(
                        {ref.repository for env in envs for n, ref in env.images.in_use(env).items() if n in OWN_IMAGES}
                    ),
                    identity=identity,
                    enforce=any(env.stage is not Stage.DEV for env in envs),
                ),
            ),
        )
        oldest = min((versions[env.name] for env in envs), key=lambda v: tuple(int(x) for x in v.split(".")))
        folder, platform_folder = f"{CHART_ID}/{name}", f"{CHART_ID}/{name}/{PLATFORM_FOLDER}"
        (platform_objects,) = synth_objects([platform], checks=[_schema_check(platform_folder, oldest)]).values()
        # Argo CD Applications live beside the environments, never inside the folder they sync.
        targets = [GitOpsTarget.of(env, env.gitops, objects[env.name]) for env in envs if env.gitops]
        bundle: dict[str, dict[str, Any]] = {}
        if targets:
            chart = GitOpsChart(cdk8s.App(), targets, cluster=cluster, releases=platform.releases)
            (bundle,) = synth_objects([chart], checks=[_schema_check(folder, oldest)]).values()
            out.folders[folder] = bundle
        out.folders[platform_folder] = platform_objects
        layer = Platform.read(
            {
                **{f"{folder}/{f}": o for f, o in bundle.items()},
                **{f"{platform_folder}/{f}": o for f, o in platform_objects.items()},
            },
            [p.model_dump() for p in platform.prerequisites],
        )
        for env in envs:
            gate = ClusterGate(objects[env.name], namespace=env.namespace, platform=layer)
            problems += [f"{env.name}/{p}" for p in gate.problems()]
        out.docs[f"clusters/{name}"] = {
            "install.md": install_procedure(platform, envs, objects, bundle_present=bool(targets))
        }
    if problems:
        raise SynthError(problems)
    return out


def _schema_check(folder: str, version: str) -> Callable[[str, dict[str, dict[str, Any]]], list[str]]:
    """The strict schema check of a platform folder, its problems named by the folder written."""
    return lambda _chart, objs: check_objects(folder, objs, version)


def workflow_identity() -> SigningIdentity:
    """Who signs our images, as the release workflow declares it (the clusters' admission policy requires it)."""
    try:
        return signing_identity(ROOT / WORKFLOW)
    except SigningIdentityError as exc:
        raise EnvironmentFileError(str(exc).split("; ")) from None


def patched(env: Environment, objects: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The environment's one-off ``patches:``, before the schema check and the cross-reference gate."""
    try:
        return apply_patches(objects, env.patches)
    except PatchError as exc:
        raise SynthError([f"{env.name}: {exc}"]) from None


def pin_releases(folder: Path, environments: list[Environment]) -> list[Environment]:
    """Our images' digests from the release workflow's file: synth and the one-off Jobs deploy the same."""
    problems = [p for env in environments for p in own_digest_problems(env, f"{folder / env.name}.yaml")]
    if problems:
        raise EnvironmentFileError(problems)
    try:
        releases = load_releases(folder)
    except ReleasesError as exc:
        raise EnvironmentFileError([str(exc)]) from None
    return [with_releases(env, releases) for env in environments]


STORES = ("redis", "chroma", "memgraph")


class _MakeUsage(argparse.ArgumentParser):
    """A parser whose usage and errors are in the shape a person types: ``make restore ENV=prod STORE=chroma``."""

    def __init__(self, target: str, description: str, restore: bool) -> None:
        super().__init__(prog=f"make {target}", description=description, add_help=False)
        self.target = target
        extra = " [BACKUP_ID=<id from make backups>] [FORCE=1]" if restore else ""
        self.make_usage = f"make {target} ENV=<environment> STORE=<{'|'.join(STORES)}>{extra}"

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: make {self.target}: {message}\nusage: {self.make_usage}\n")

    def format_usage(self) -> str:
        return f"usage: {self.make_usage}\n"

    def format_help(self) -> str:
        return f"{self.format_usage()}\n{self.description}\n"


def _job_args(prog: str, description: str, argv: list[str], restore: bool) -> argparse.Namespace:
    parser = _MakeUsage(prog.removeprefix("make "), description, restore)
    parser.add_argument("-h", "--help", action="help")
    # make passes every variable, set or not: ENV= and STORE= arrive as empty strings.
    parser.add_argument("environment", nargs="?", default="")
    parser.add_argument("store", nargs="?", default="")
    if restore:
        parser.add_argument("--backup-id", help="a backup id from `make backups`; default: the latest")
        parser.add_argument("--force", action="store_true", help="replace data in a non-empty store")
    parser.add_argument("--environments", type=Path, default=ROOT / "environments")
    args = parser.parse_args(argv)
    known = ", ".join(known_environments(args.environments)) or "none"
    if not args.environment:
        parser.error(f"ENV is missing (environments: {known})")
    if not args.store:
        parser.error(f"STORE is missing (one of {', '.join(STORES)})")
    if args.store not in STORES:
        parser.error(f"STORE={args.store} is not a store (one of {', '.join(STORES)})")
    return args


def _one_off_job(
    args: argparse.Namespace, build: Callable[[BackupSchedule], dict[str, Any]]
) -> tuple[AgentStack, dict[str, Any]]:
    """The stack of the environment named on the command line, and ``build``'s Job from its backup schedule."""
    source = _shown(args.environments) / f"{args.environment}.yaml"
    (env,) = pin_releases(args.environments, [load_environment(source)])
    if not env.on_kubernetes:
        raise EnvironmentFileError(
            [
                f"{source}: targets: this prints a Kubernetes Job, and the environment does not target kubernetes; "
                f"on Compose, see docs/environments/{env.name}/compose.md"
            ]
        )
    try:
        stack = AgentStack(cdk8s.App(), env)
        job = build(stack.backups)
    except ValueError as exc:
        raise EnvironmentFileError([f"{source}: {exc}"]) from None
    # Made after the stack's own objects: the environment's pod settings reach it here.
    job, problems = apply_to_manifest(job, env.workloads)
    if problems:
        raise EnvironmentFileError([f"{source}: {p}" for p in problems])
    return stack, job


def restore(argv: list[str]) -> int:
    """Print the Job that restores one store of one environment (not part of dist/)."""
    args = _job_args("make restore", restore.__doc__ or "", argv, restore=True)

    def plan(stack: AgentStack, name: str, ns: str) -> list[str]:
        return restore_plan(stack, name, ns, args)

    return _print_one_off(
        args, lambda schedule: restore_job(schedule, args.store, backup_id=args.backup_id, force=args.force), plan
    )


def restore_plan(stack: AgentStack, name: str, ns: str, args: argparse.Namespace) -> list[str]:
    """Every step of a restore, with its exact commands: suspend, restore, tracker, re-index, resume."""
    env, e, store = stack.env, args.environment, args.store
    k = f"kubectl -n {ns}"
    which = f"backup {args.backup_id}" if args.backup_id else "the latest good backup"
    cronjobs = [f"{stack.backups.name}-{s}" for s in stack.backups.props.stores]
    if stack.reindex:
        cronjobs.append(stack.reindex.name)
    indexer, query = stack.indexer.name, stack.query.name
    tracked = store in TRACKED_STORES
    make = f"make restore ENV={e} STORE={store}" + (f" BACKUP_ID={args.backup_id}" if args.backup_id else "")
    make += " FORCE=1" if args.force else ""

    def suspend(value: str) -> list[str]:
        patch = f"""'{{"spec":{{"suspend":{value}}}}}'"""
        return [f"     {k} patch cronjob {c} --type=merge -p {patch}" for c in cronjobs]

    lines = [
        f"Restores {which} of {store} in {e} (namespace {ns}) from {env.backup.target}/{store}/.",
        "It verifies the checksum, counts and content before writing, "
        + ("and REPLACES the data in the store (--force)." if args.force else "and refuses a store that holds data."),
        "Run every step, in order (docs/backup-restore.md, 'Restore: the procedure'):",
        f"  1. kubectl points at the cluster of {e}: kubectl config current-context",
        f"  2. the backup exists (and is not held): make backups ENV={e} STORE={store}",
        "  3. pause Argo CD automated sync for the environment (it would undo steps 4 and 6)",
        "  4. suspend the backups and re-indexing (a backup of a half-loaded store must not become the latest):",
        *suspend("true"),
        f"     then wait until none of their Jobs is active: {k} get jobs",
    ]
    if tracked:
        lines += [
            "  5. keep the indexer's commit tracker as it is now (kept for reference only):",
            f"     {k} exec deploy/{indexer} -- cat indexed_commits.json > indexed_commits.before-restore.json",
        ]
    else:
        lines += ["  5. (nothing to keep: the indexer's commit tracker does not follow the cache)"]
    lines += [
        f"  6. stop the writers: {k} scale deploy/{indexer} --replicas=0",
        f"  7. restore: {k} delete job {name} --ignore-not-found",
        f"     {make} | kubectl apply -f - && {k} logs -f job/{name}",
        f'     it is done when the log says "restore.done" and {k} get job {name} shows Complete',
    ]
    if tracked:
        lines += [
            "  8. hand the indexer the commit tracker recorded with the backup, so that step 9 replays every",
            "     commit since the backup (left as it is, the tracker is ahead of the data and they are skipped):",
            f"     {k} logs job/{name} | python3 -c '{TRACKER_FROM_RESTORE_LOG}' > indexed_commits.restored.json",
            f"     {k} scale deploy/{indexer} --replicas=1 && {k} rollout status deploy/{indexer}",
            f"     {k} exec -i deploy/{indexer} -- python -c '{TRACKER_WRITE}' < indexed_commits.restored.json",
            "     and restart the API tiers: they read the tracker, and the restored collections, anew",
            f"     {k} rollout restart deploy/{indexer} deploy/{query}",
            f"     {k} rollout status deploy/{indexer} && {k} rollout status deploy/{query}",
        ]
        if stack.reindex:
            job = f"{stack.reindex.name}-after-restore"
            lines += [
                "  9. re-index the commits since the backup, and check that every workflow completes:",
                f"     {k} create job --from=cronjob/{stack.reindex.name} {job} && {k} logs -f job/{job}",
            ]
        else:
            # The re-index CronJob's own call (kgstack.reindex_client), one repository at a time: POST /api/v1/index
            # would run a full index of every repository at once.
            port = stack.indexer.endpoint.port
            url = f"http://127.0.0.1:{port}{INDEX_REPOSITORY}"
            lines += [
                "  9. re-index the commits since the backup (no re-index schedule here): one repository at a time,",
                "     each once the previous workflow is completed (GET /api/v1/workflows/<workflow_id>/status):",
                f"     {k} port-forward deploy/{indexer} {port}:{port} &",
                *(
                    f"     curl -X POST -H 'Content-Type: application/json' -d "
                    f"""'{json.dumps({"repository_url": r.url, "branch": r.branch, "incremental": True})}' {url}"""
                    for r in env.repositories
                ),
            ]
    else:
        lines += [
            f"  8. start the writers again: {k} scale deploy/{indexer} --replicas=1",
            "  9. (no re-index: the cache refills on use)",
        ]
    lines += [
        " 10. resume the backups and re-indexing, then Argo CD automated sync (it scales the writers as declared):",
        *suspend("false"),
    ]
    return lines


def backups(argv: list[str]) -> int:
    """Print a read-only Job that lists one store's backups (``kgbackup list``)."""
    args = _job_args("make backups", backups.__doc__ or "", argv, restore=False)

    def plan(stack: AgentStack, name: str, ns: str) -> list[str]:
        env = stack.env
        return [
            f"Lists the backups of {args.store} in {args.environment} under {env.backup.target}/{args.store}/"
            " (read-only: kgbackup list; it changes nothing).",
            "Before you apply it:",
            f"  - kubectl points at the cluster of {args.environment}: kubectl config current-context",
            f"  - no earlier listing Job is left: kubectl -n {ns} delete job {name} --ignore-not-found",
            f"Then: make backups ENV={args.environment} STORE={args.store} | kubectl apply -f - "
            f"&& kubectl -n {ns} wait --for=condition=complete job/{name} && kubectl -n {ns} logs job/{name}",
            "Each line is one backup, newest first; its backup_id is what BACKUP_ID= takes.",
        ]

    return _print_one_off(args, lambda schedule: list_job(schedule, args.store), plan)


def _print_one_off(
    args: argparse.Namespace,
    build: Callable[[BackupSchedule], dict[str, Any]],
    plan: Callable[[AgentStack, str, str], list[str]],
) -> int:
    """The Job on stdout (for kubectl), and ``plan(stack, job name, namespace)`` on stderr."""
    try:
        stack, job = _one_off_job(args, build)
    except EnvironmentFileError as exc:
        return _fail(exc.problems, 2, "no Job was printed")
    _say(*plan(stack, job["metadata"]["name"], job["metadata"]["namespace"]))
    print(to_yaml(job), end="")
    return 0


def _say(*lines: str) -> None:
    """What a command will do, on stderr: stdout stays a manifest for kubectl."""
    for line in lines:
        print(f"# {line}", file=sys.stderr)


def _shown(path: Path) -> Path:
    """``environments/dev.yaml`` rather than an absolute path, when it is under the working directory."""
    try:
        return path.resolve().relative_to(Path.cwd())
    except ValueError:
        return path


def _loc(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc)


def _fail(problems: list[str], code: int, outcome: str = "nothing was written") -> int:
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    print(f"{len(problems)} problem(s); {outcome}.", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
