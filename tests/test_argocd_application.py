"""Argo CD Application: a strict model, manual sync in prod, automated sync with prune+selfHeal elsewhere."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import cdk8s
import pytest
import yaml
from conftest import DELETE, ENV_DIRS, env_data
from pydantic import ValidationError

from kgstack import Environment
from kgstack.agent_secrets import RELOADED_FROM_ANNOTATION
from kgstack.argocd_application import (
    SYNC_WAVE_ANNOTATION,
    Application,
    ArgoCdApplication,
    GitOpsSettings,
    IgnoreDifference,
    automated_by_default,
    claim_waves,
    claims_used,
    sync_wave,
)
from kgstack.cluster_platform import platform_releases
from kgstack.environment import OWN_IMAGES, EnvironmentFileError, load_environments, parse_environment
from kgstack.gitops_chart import GitOpsChart, GitOpsTarget
from kgstack.publish import manifests as chart_objects
from kgstack.publish import synth
from kgstack.releases import with_releases

REPO = "https://github.com/acme/kga-deploy.git"
ROOT = Path(__file__).resolve().parents[1]


def settings(**changes: Any) -> GitOpsSettings:
    return GitOpsSettings.model_validate({"repoURL": REPO, **changes})


DIGEST = "sha256:" + "0" * 64
"""Plainly not a real image; these tests only need "released"."""


def released(env: Environment) -> Environment:
    """``env`` as if the release workflow had recorded its images (tests/test_releases.py covers the file)."""
    own = [getattr(env.images, name) for name in OWN_IMAGES]
    return with_releases(env, {img.repository: {img.tag: DIGEST} for img in own})


@pytest.fixture(scope="module")
def applications(environments: dict[str, Environment]) -> dict[str, dict[str, Any]]:
    """``{env: Application object}`` for released environments."""
    targets = [GitOpsTarget.of(released(env), settings()) for env in environments.values()]
    objects = {}
    for cluster in {env.cluster.name: env.cluster for env in environments.values()}.values():
        objects |= chart_objects(GitOpsChart(cdk8s.App(), targets, cluster=cluster))
    return {
        obj["spec"]["source"]["path"].rpartition("/")[2]: obj
        for obj in objects.values()
        if not obj["spec"]["source"]["path"].startswith("dist/argocd/")  # the platform's objects
    }


def test_one_application_per_environment(
    applications: dict[str, dict[str, Any]], environments: dict[str, Environment]
) -> None:
    assert sorted(applications) == sorted(environments)
    for name, app in applications.items():
        env = environments[name]
        assert app["apiVersion"] == "argoproj.io/v1alpha1"
        assert app["kind"] == "Application"
        assert (app["metadata"]["name"], app["metadata"]["namespace"]) == (env.instance, "argocd")
        assert app["metadata"]["labels"] == {
            "app.kubernetes.io/name": "kga",
            "app.kubernetes.io/instance": env.instance,
            "app.kubernetes.io/version": env.images.agent.tag,
            "app.kubernetes.io/component": "gitops",
            "app.kubernetes.io/part-of": "knowledge-graph-agent",
            "app.kubernetes.io/managed-by": "cdk8s",
        }
        assert app["spec"]["source"] == {"repoURL": REPO, "targetRevision": "main", "path": f"dist/{name}"}
        assert app["spec"]["destination"] == {"server": env.cluster.server, "namespace": env.namespace}
        assert app["spec"]["project"] == "default"
        # no cascading delete: removing the Application must not delete the indexer's PVC
        assert "finalizers" not in app["metadata"]
        # every rendered Application passes the strict model again
        Application.model_validate(app)


def test_prod_is_synced_by_hand(applications: dict[str, dict[str, Any]]) -> None:
    policy = applications["prod"]["spec"]["syncPolicy"]
    assert "automated" not in policy
    assert "PruneLast=true" in policy["syncOptions"]


@pytest.mark.parametrize("env", ["dev", "staging"])
def test_dev_and_staging_follow_main_with_prune_and_self_heal(
    applications: dict[str, dict[str, Any]],
    env: str,
) -> None:
    assert applications[env]["spec"]["syncPolicy"]["automated"] == {
        "prune": True,
        "selfHeal": True,
        "allowEmpty": False,
    }


def test_settings_override_the_stage_default(environments: dict[str, Environment]) -> None:
    prod = released(environments["prod"])
    target = GitOpsTarget.of(prod, settings(automated=True, selfHeal=False, prune=False))
    assert target.automated
    chart = GitOpsChart(cdk8s.App(), [target], cluster=prod.cluster)
    app = chart_objects(chart)["application-kga-prod.yaml"]
    assert app["spec"]["syncPolicy"]["automated"] == {"prune": False, "selfHeal": False, "allowEmpty": False}
    assert not GitOpsTarget.of(released(environments["dev"]), settings(automated=False)).automated
    # Never released: held back whatever the settings say (issue 9 defect 5).
    assert not GitOpsTarget.of(
        prod.model_copy(update={"images": environments["prod"].images}), settings(automated=True)
    ).automated


def test_stage_defaults() -> None:
    assert automated_by_default("dev")
    assert automated_by_default("staging")
    assert not automated_by_default("prod")


def test_settings_defaults_and_camel_case_fields() -> None:
    s = settings(targetRevision="release", argocdNamespace="gitops", project="kga")
    assert (s.repo_url, s.target_revision, s.argocd_namespace, s.project) == (REPO, "release", "gitops", "kga")
    assert (s.prune, s.self_heal, s.automated) == (True, True, None)


@pytest.mark.parametrize(
    "data",
    [
        {},  # repoURL is required
        {"repoURL": ""},
        {"repoURL": REPO, "repoUrl": REPO},  # only Argo CD's spelling, once
        {"repoURL": REPO, "syncWave": 1},
        {"repoURL": REPO, "selfheal": True},
    ],
)
def test_settings_reject_unknown_or_missing_fields(data: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        GitOpsSettings.model_validate(data)


def _application() -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": "kga-dev", "namespace": "argocd"},
        "spec": {
            "project": "default",
            "source": {"repoURL": REPO, "targetRevision": "main", "path": "dist/dev"},
            "destination": {"server": "https://kubernetes.default.svc", "namespace": "kga-dev"},
            "syncPolicy": {"automated": {"prune": True, "selfHeal": True}},
        },
    }


def test_model_accepts_a_minimal_application() -> None:
    Application.model_validate(_application())


@pytest.mark.parametrize(
    "path",
    [
        ("extra",),
        ("metadata", "extra"),
        ("spec", "extra"),
        ("spec", "source", "helm", "values"),  # valuesObject only: values stay structured
        ("spec", "destination", "name"),
        ("spec", "syncPolicy", "extra"),
        ("spec", "syncPolicy", "automated", "selfheal"),
    ],
)
def test_model_forbids_unknown_fields_at_every_level(path: tuple[str, ...]) -> None:
    data = _application()
    node = data
    for key in path[:-1]:
        node = node.setdefault(key, {"releaseName": "r"})
    node[path[-1]] = "x"
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        Application.model_validate(data)


@pytest.mark.parametrize(("field", "value"), [("apiVersion", "argoproj.io/v1beta1"), ("kind", "ApplicationSet")])
def test_model_pins_the_kind(field: str, value: str) -> None:
    with pytest.raises(ValidationError):
        Application.model_validate({**_application(), field: value})


def test_construct_renders_exactly_the_model() -> None:
    app = cdk8s.App()
    chart = cdk8s.Chart(app, "c")
    construct = ArgoCdApplication(
        chart, "a", name="kga-dev", namespace="kga-dev", path="dist/dev", settings=settings(), automated=True
    )
    rendered = chart.to_json()[0]
    assert rendered == construct.model.model_dump(by_alias=True, exclude_none=True, mode="json")


def test_gitops_chart_renders_one_bundle_per_cluster(environments: dict[str, Environment]) -> None:
    targets = [GitOpsTarget.of(env, settings()) for env in environments.values()]
    for cluster in {env.cluster.name: env.cluster for env in environments.values()}.values():
        rendered = synth([GitOpsChart(cdk8s.App(), targets, cluster=cluster, releases=platform_releases())])
        (files,) = rendered.values()
        mine = [env for env in environments.values() if env.cluster == cluster]
        assert sorted(files) == sorted(
            [
                "kustomization.yaml",
                f"application-{cluster.name}-platform.yaml",
                *(f"application-{cluster.name}-{r.key}.yaml" for r in platform_releases()),
                *(f"application-{env.instance}.yaml" for env in mine),
            ]
        )
        kustomization = yaml.safe_load(files["kustomization.yaml"])
        assert kustomization["resources"] == sorted(f for f in files if f != "kustomization.yaml")
        # Defect 3 of issue 19: no Application of this bundle reaches another cluster.
        servers = {yaml.safe_load(t)["spec"]["destination"]["server"] for f, t in files.items() if f.startswith("app")}
        assert servers == {cluster.server}


def test_dist_argocd_is_one_bundle_per_cluster_each_for_its_own_api_server() -> None:
    """Issue 19 defect 3: the committed bundle put dev, staging and prod on kubernetes.default.svc, in one
    folder; synced as an app of apps it deployed all three to one cluster."""
    folders = sorted(p for p in (ROOT / "dist" / "argocd").iterdir() if p.is_dir())
    envs = {p.stem: yaml.safe_load(p.read_text()) for p in (ROOT / "environments").glob("*.yaml")}
    envs = {name: e for name, e in envs.items() if "kubernetes" in (e.get("targets") or ["kubernetes"])}
    assert not list((ROOT / "dist" / "argocd").glob("*.yaml"))
    assert [f.name for f in folders] == sorted({e["cluster"]["name"] for e in envs.values()})
    seen: dict[str, str] = {}
    for folder in folders:
        apps = [yaml.safe_load(p.read_text()) for p in folder.glob("application-*.yaml")]
        (server,) = {app["spec"]["destination"]["server"] for app in apps}
        assert seen.setdefault(server, folder.name) == folder.name, f"{folder.name} and {seen[server]} share {server}"
        paths = {app["spec"]["source"].get("path") for app in apps} - {None}
        on_it = {name for name, e in envs.items() if e["cluster"]["name"] == folder.name}
        assert paths == {f"dist/{name}" for name in on_it} | {f"dist/argocd/{folder.name}/platform"}
        assert {e["cluster"]["server"] for n, e in envs.items() if n in on_it} == {server}


def test_two_environments_on_one_cluster_share_its_platform(tmp_path: Path) -> None:
    import shutil

    from conftest import env_data

    envdir = tmp_path / "environments"
    shutil.copytree(ROOT / "environments", envdir)
    qa = env_data(
        "staging",
        name="qa",
        namespace="kga-qa",
        domain="kga.qa.example.com",
        backup__target="s3://acme-kga-backups/qa",
        cloud__workloadIdentity="arn:aws:iam::111122223333:role/kga-qa",
    )
    (envdir / "qa.yaml").write_text(yaml.safe_dump(qa))
    outdir = tmp_path / "dist"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "app.py"),
            "--environments",
            str(envdir),
            "--outdir",
            str(outdir),
            "--docs",
            str(tmp_path / "docs"),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    bundle = outdir / "argocd" / "staging-eks"
    names = sorted(p.name for p in bundle.glob("application-*.yaml"))
    assert "application-kga-qa.yaml" in names and "application-kga-staging.yaml" in names
    assert len([n for n in names if n.startswith("application-staging-eks-")]) == len(platform_releases()) + 1
    assert not (outdir / "argocd" / "qa").exists()


def test_sync_waves_order_dependencies() -> None:
    waves = {
        kind: int(sync_wave(kind))
        for kind in (
            "Namespace",
            "ResourceQuota",
            "ExternalSecret",
            "Certificate",
            "ServiceAccount",
            "ConfigMap",
            "PersistentVolumeClaim",
            "Service",
            "StatefulSet",
            "Deployment",
            "CronJob",
            "Ingress",
            "ServiceMonitor",
        )
    }
    assert waves["Namespace"] < waves["ExternalSecret"] <= waves["ConfigMap"]
    assert waves["ExternalSecret"] == -1
    # The Certificate comes with the edge that answers its HTTP-01 challenge (review: a -1 wave deadlocked).
    assert waves["Certificate"] == int(sync_wave("Gateway")) == waves["Ingress"]
    assert waves["ConfigMap"] < waves["StatefulSet"] < waves["Deployment"] <= waves["Ingress"]
    assert waves["Deployment"] < waves["ServiceMonitor"]
    assert sync_wave("SomethingNew") == "0"
    assert all(isinstance(sync_wave(k), str) for k in waves)
    assert SYNC_WAVE_ANNOTATION == "argocd.argoproj.io/sync-wave"


def test_every_kind_in_dist_has_a_deliberate_wave(manifests: dict[str, dict[str, Any]]) -> None:
    from kgstack.argocd_application import _WAVES

    kinds = {obj["kind"] for objects in manifests.values() for obj in objects.values()}
    assert kinds <= set(_WAVES), f"no sync wave for {sorted(kinds - set(_WAVES))}"


# ------------------------------------------------------------------ promotion by commit (issue 24)
PROMOTED = "a6818374cd04686e6788d8a067c4651995a82c97"


def _env_problems(data: object, source: str = "environments/prod.yaml") -> list[str]:
    with pytest.raises(EnvironmentFileError) as caught:
        parse_environment(data, source=source)
    return caught.value.problems


def test_prod_never_tracks_a_branch() -> None:
    """Issue 24: prod tracked main, so `argocd app sync kga-prod` shipped main's head at that moment."""
    (problem,) = _env_problems(env_data("prod", gitops__promotedFrom=DELETE, gitops__targetRevision="main"))
    assert problem.startswith("environments/prod.yaml: gitops.promotedFrom: required in stage prod")
    (problem,) = _env_problems(env_data("prod", gitops__targetRevision="main"))
    assert "gitops" in problem and "'main' is not a full 40-hex commit" in problem
    (problem,) = _env_problems(env_data("prod", gitops__targetRevision=PROMOTED[:7]))
    assert "is not a full 40-hex commit" in problem
    dev = parse_environment(env_data("dev"), source="dev.yaml").gitops
    assert dev is not None and dev.target_revision == "main"  # other stages may track a branch


def test_promoted_from_names_another_environment_of_the_same_repository(tmp_path: Path) -> None:
    for name in ("dev", "staging", "prod"):
        shutil.copy(ROOT / "environments" / f"{name}.yaml", tmp_path)
    prod = tmp_path / "prod.yaml"
    text = prod.read_text()
    prod.write_text(text.replace("promotedFrom: staging", "promotedFrom: qa"))
    with pytest.raises(EnvironmentFileError) as caught:
        load_environments(tmp_path)
    assert caught.value.problems == [
        f"{prod}: gitops.promotedFrom: 'qa' is no other environment that Argo CD syncs; known: dev, staging"
    ]
    staging = tmp_path / "staging.yaml"
    prod.write_text(text)
    staging.write_text(staging.read_text().replace("acme/kga-deploy.git", "acme/other.git"))
    with pytest.raises(EnvironmentFileError) as caught:
        load_environments(tmp_path)
    (problem,) = caught.value.problems
    assert problem.startswith(f"{prod}: gitops.promotedFrom: staging is synced from https://github.com/acme/other.git")


def test_dist_deploys_prod_at_the_promoted_commit_and_the_rest_at_their_branch() -> None:
    """Rendered: prod's Application (and its cluster's platform) name the commit prod.yaml promotes."""
    envs = {env.name: env for env in load_environments(ROOT / "environments")}
    prod = envs["prod"].gitops
    assert prod is not None and prod.promoted_from == "staging" and len(prod.target_revision) == 40
    for path in (ROOT / "dist" / "argocd").glob("*/application-*.yaml"):
        app = yaml.safe_load(path.read_text())
        source = app["spec"]["source"]
        if source.get("path") == "dist/prod" or source.get("path", "").startswith(
            f"dist/argocd/{envs['prod'].cluster.name}/"
        ):
            assert source["targetRevision"] == prod.target_revision, path.name
        elif source.get("path") in ("dist/staging", "dist/dev"):
            assert source["targetRevision"] == "main", path.name


def _argocd_status(**changes: Any) -> dict[str, Any]:
    """The fields of `argocd app get kga-staging -o json` that promotion reads."""
    status = {
        "metadata": {"name": "kga-staging", "namespace": "argocd"},
        "spec": {"source": {"repoURL": REPO, "path": "dist/staging", "targetRevision": "main"}},
        "status": {"sync": {"status": "Synced", "revision": PROMOTED}, "health": {"status": "Healthy"}},
    }
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        node = status
        for key in parents:
            node = node[key]
        node[leaf] = value
    return status


def _promote(envs: Path, status: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "promote.py"), "prod", "-", "--environments", str(envs)],
        input=json.dumps(status),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_promote_writes_the_commit_staging_is_synced_and_healthy_on(tmp_path: Path) -> None:
    envs = tmp_path / "environments"
    shutil.copytree(ROOT / "environments", envs)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    before = (envs / "prod.yaml").read_text()
    for status, reason in (
        (_argocd_status(status__health__status="Degraded"), "is Synced and Degraded"),
        (_argocd_status(status__sync__status="OutOfSync"), "is OutOfSync and Healthy"),
        (_argocd_status(spec__source__path="dist/dev"), "give the status of staging's Application"),
        (_argocd_status(status__sync__revision="main"), "is not a full commit"),
        (_argocd_status(status__sync__revision="f" * 40), "not a commit of"),
    ):
        result = _promote(envs, status)
        assert result.returncode == 2 and reason in result.stderr, (reason, result.stderr)
        assert (envs / "prod.yaml").read_text() == before
    result = _promote(envs, _argocd_status(status__sync__revision=head.strip()))
    assert result.returncode == 0, result.stderr
    after = (envs / "prod.yaml").read_text()
    assert after == before.replace(f"targetRevision: {PROMOTED}", f"targetRevision: {head.strip()}")
    promoted = {env.name: env for env in load_environments(envs)}["prod"].gitops
    assert promoted is not None and promoted.target_revision == head.strip()


# ---------------------------------------------------------------- issue 24: waves by dependency, prune, Reloader


def _dist(env: str) -> dict[str, dict[str, Any]]:
    folder = ROOT / "dist" / env
    return {
        p.name: yaml.safe_load(p.read_text()) for p in sorted(folder.glob("*.yaml")) if p.name != "kustomization.yaml"
    }


ENVS = ENV_DIRS  # the environments with Kubernetes manifests (Compose and cloud ones have none)


@pytest.mark.parametrize("env", ENVS)
def test_every_claim_in_dist_is_in_the_wave_of_the_pods_that_mount_it(env: str) -> None:
    """Issue 24: the indexer's PVC had its kind's wave (0), its only consumer the indexer Deployment wave 2;
    under a WaitForFirstConsumer StorageClass the first sync stopped at wave 0 (argo-cd #12840)."""
    objects = _dist(env)
    claims = {o["metadata"]["name"]: o for o in objects.values() if o["kind"] == "PersistentVolumeClaim"}
    assert claims
    for name, claim in claims.items():
        consumers = [o for o in objects.values() if name in claims_used(o)]
        assert consumers, f"nothing mounts {name}"
        first = min(int(o["metadata"]["annotations"][SYNC_WAVE_ANNOTATION]) for o in consumers)
        assert int(claim["metadata"]["annotations"][SYNC_WAVE_ANNOTATION]) == first


def test_claim_waves_follow_the_consumer_read_from_the_pod_spec() -> None:
    def workload(kind: str, wave: str, claim: str) -> dict[str, Any]:
        pod = {"volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": claim}}]}
        spec = (
            {"jobTemplate": {"spec": {"template": {"spec": pod}}}} if kind == "CronJob" else {"template": {"spec": pod}}
        )
        meta = {"name": f"{kind.lower()}-{claim}", "namespace": "ns", "annotations": {SYNC_WAVE_ANNOTATION: wave}}
        return {"kind": kind, "metadata": meta, "spec": spec}

    def claim(name: str, **annotations: str) -> dict[str, Any]:
        return {
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": "ns", "annotations": annotations},
        }

    objects = {
        "a": claim("shared"),
        "b": workload("StatefulSet", "1", "shared"),
        "c": workload("Deployment", "2", "shared"),
        "d": claim("by-cron"),
        "e": workload("CronJob", "2", "by-cron"),
        "f": claim("orphan"),
        "g": claim("pinned", **{SYNC_WAVE_ANNOTATION: "5"}),
        "h": workload("Job", "4", "pinned"),
        "i": workload("CronJob", "-1", "shared"),  # a CronJob's pods only come at its schedule
    }
    claim_waves(objects)
    waves = {o["metadata"]["name"]: o["metadata"]["annotations"][SYNC_WAVE_ANNOTATION] for o in objects.values()}
    assert waves["shared"] == "1"
    assert waves["by-cron"] == "2"
    assert waves["orphan"] == sync_wave("PersistentVolumeClaim")
    assert waves["pinned"] == "5"  # a wave set by the construct is kept (and judged by the cross-reference gate)


@pytest.mark.parametrize("env", ENVS)
def test_claims_where_data_lives_are_never_pruned_nor_deleted(env: str) -> None:
    """Issue 24: the indexer's PVC carried only Delete=false, which Argo CD applies when the Application is
    deleted; a prune (the claim renamed or dropped from dist/) is governed by Prune=false."""
    claims = [o for o in _dist(env).values() if o["kind"] == "PersistentVolumeClaim"]
    assert claims
    for claim in claims:
        options = {o.strip() for o in claim["metadata"]["annotations"]["argocd.argoproj.io/sync-options"].split(",")}
        assert {"Prune=false", "Delete=false"} <= options


def _committed_application(env: str) -> dict[str, Any]:
    (app,) = [
        yaml.safe_load(p.read_text())
        for p in (ROOT / "dist" / "argocd").glob("*/application-*.yaml")
        if yaml.safe_load(p.read_text())["spec"]["source"].get("path") == f"dist/{env}"
    ]
    return app


def _remove(doc: Any, pointer: str) -> bool:
    """JSON patch ``remove`` at an RFC 6901 pointer (what Argo CD's ignore normalizer applies to the live and
    the desired object before diffing); ``False`` where the path does not exist (Argo CD skips it).

    A map the removal leaves empty is dropped as well: Argo CD's diff reports only fields of the desired object
    (or of the last applied one), so ``annotations: {}`` left in the live object is no difference."""
    keys = [k.replace("~1", "/").replace("~0", "~") for k in pointer.split("/")[1:]]
    trail = [doc]
    for k in keys[:-1]:
        node = trail[-1]
        if isinstance(node, list) and k.isdigit() and int(k) < len(node):
            trail.append(node[int(k)])
        elif isinstance(node, dict) and k in node:
            trail.append(node[k])
        else:
            return False
    parent, last = trail[-1], keys[-1]
    if isinstance(parent, dict) and last in parent:
        del parent[last]
    elif isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        del parent[int(last)]
    else:
        return False
    for depth in range(len(keys) - 1, 0, -1):
        if trail[depth] == {} and isinstance(trail[depth - 1], dict):
            del trail[depth - 1][keys[depth - 1]]
        else:
            break
    return True


def _group(obj: dict[str, Any]) -> str:
    return obj["apiVersion"].rpartition("/")[0] if "/" in obj["apiVersion"] else ""


def normalized(obj: dict[str, Any], ignore: list[dict[str, Any]]) -> dict[str, Any]:
    """``obj`` with every field the Application ignores removed (argo-cd ``util/argo/normalizers``,
    ``ignoreNormalizer.Normalize``: group and kind match, name and namespace match when set)."""
    out = copy.deepcopy(obj)
    for rule in ignore:
        meta = obj["metadata"]
        if (
            rule.get("group", "") == _group(obj)
            and rule["kind"] == obj["kind"]
            and rule.get("name") in (None, meta["name"])
            and rule.get("namespace") in (None, meta.get("namespace"))
        ):
            for pointer in rule["jsonPointers"]:
                _remove(out, pointer)
    return out


def reloaded(obj: dict[str, Any], value: str) -> dict[str, Any]:
    """``obj`` after Reloader's annotations strategy rolled it: its strategic merge patch
    ``{"spec":{"template":{"metadata":{"annotations":{"reloader.stakater.com/last-reloaded-from": ...}}}}}``."""
    out = copy.deepcopy(obj)
    template = out["spec"]["template"].setdefault("metadata", {})
    template.setdefault("annotations", {})[RELOADED_FROM_ANNOTATION] = value
    return out


@pytest.mark.parametrize("env", ENVS)
def test_reloader_roll_is_ignored_by_the_diff_and_nothing_else_is(env: str) -> None:
    """Issue 24: with Reloader's default env-vars strategy Argo CD's self-heal reverted the roll. Under the
    annotations strategy Reloader writes one pod-template annotation; the Application ignores exactly that,
    on exactly the workloads Reloader watches, and a sync keeps it (RespectIgnoreDifferences)."""
    app = _committed_application(env)
    ignore = app["spec"]["ignoreDifferences"]
    assert "RespectIgnoreDifferences=true" in app["spec"]["syncPolicy"]["syncOptions"]
    objects = _dist(env)
    watched = [
        o
        for o in objects.values()
        if set(o["metadata"].get("annotations") or {}) & {"secret.reloader.stakater.com/reload"}
    ]
    assert watched
    marker = json.dumps({"type": "SECRET", "name": "kga-agent", "hash": "0" * 40})
    for obj in watched:
        live = reloaded(obj, marker)
        assert live != obj
        # the roll is no difference for Argo CD: self-heal leaves it
        assert normalized(live, ignore) == normalized(obj, ignore)
        # ... but the env-vars strategy's change still is one (only the annotation is ignored)
        env_vars = copy.deepcopy(obj)
        env_vars["spec"]["template"]["spec"]["containers"][0].setdefault("env", []).append(
            {"name": "STAKATER_KGA_AGENT_SECRET", "value": "0" * 40}
        )
        assert normalized(env_vars, ignore) != normalized(obj, ignore)
    # Nothing Git renders is ignored: the rules remove no field of any rendered object.
    for obj in objects.values():
        assert normalized(obj, ignore) == obj, obj["metadata"]["name"]
    # One rule per watched workload, each a single pointer to Reloader's annotation.
    assert sorted((r["kind"], r["name"]) for r in ignore) == sorted((o["kind"], o["metadata"]["name"]) for o in watched)
    assert {tuple(r["jsonPointers"]) for r in ignore} == {
        ("/spec/template/metadata/annotations/reloader.stakater.com~1last-reloaded-from",)
    }


def test_reloader_runs_with_the_annotations_strategy() -> None:
    """The documented install sets the strategy whose writes the Applications ignore."""
    from kgstack.cluster_platform import external_prerequisites

    (reloader,) = [p for p in external_prerequisites(_cluster(), "eks") if p.name == "stakater-reloader"]
    assert "--set reloader.reloadStrategy=annotations" in reloader.how


def _cluster() -> Any:
    from kgstack.cluster_platform import Cluster

    return Cluster(name="c", server="https://c.example.com")


@pytest.mark.parametrize(
    ("pointers", "message"),
    [
        ([], "at least 1 item"),
        (["spec/replicas"], "not a JSON pointer"),
        (["/"], "not a JSON pointer"),
        (["/metadata/annotations/a~2b"], "not a JSON pointer"),
        (["/spec/replicas", "/spec/replicas"], "listed twice"),
    ],
)
def test_ignore_differences_are_validated(pointers: list[str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        IgnoreDifference.model_validate({"group": "apps", "kind": "Deployment", "jsonPointers": pointers})


def test_ignore_differences_forbid_what_the_model_does_not_render() -> None:
    for extra in ({"jqPathExpressions": [".spec"]}, {"managedFieldsManagers": ["x"]}):
        with pytest.raises(ValidationError, match="Extra inputs"):
            IgnoreDifference.model_validate({"kind": "Deployment", "jsonPointers": ["/spec/replicas"], **extra})
    data = _application_data_with({"ignoreDifferences": [{"kind": "Deployment", "jsonPointers": ["/spec/x"]}]})
    Application.model_validate(data)


def _application_data_with(spec: dict[str, Any]) -> dict[str, Any]:
    data = _application()
    data["spec"].update(spec)
    return data


def test_no_ignore_differences_without_a_watched_workload() -> None:
    app = cdk8s.App()
    chart = cdk8s.Chart(app, "c")
    ArgoCdApplication(
        chart, "a", name="kga-dev", namespace="kga-dev", path="dist/dev", settings=settings(), automated=True
    )
    (rendered,) = chart.to_json()
    assert "ignoreDifferences" not in rendered["spec"]
    assert "RespectIgnoreDifferences=true" not in rendered["spec"]["syncPolicy"]["syncOptions"]
