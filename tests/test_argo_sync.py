"""The first Argo CD sync of every environment completes, wave by wave, under Argo CD's health rules
(tests/argo_sync.py), on a real control plane whose StorageClasses bind on first consumer. Issue 24.

This module starts its own control plane: a first sync needs namespaces nothing has touched, and the
session's plane (tests/test_control_plane.py) applies every environment in one go. It sorts before that
module, so the two planes never run at once.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from argo_sync import (
    DEGRADED,
    HEALTHY,
    PROGRESSING,
    SUSPENDED,
    SyncStuckError,
    first_sync,
    health,
    read_folder,
    table,
    wave_of,
    waves,
)
from conftest import DRILLED, ENV_DIRS, ENVIRONMENTS, ROOT
from control_plane import ControlPlane, binaries_missing, control_plane, storage_classes

from kgstack.agent_secrets import RELOAD_ANNOTATION, RELOADED_FROM_ANNOTATION
from kgstack.argocd_application import sync_wave

pytestmark = pytest.mark.go_build("control-plane", "kwok")

DIST = ROOT / "dist"


def _cluster_folder(env: str) -> Path:
    """The cluster bundle whose Application syncs ``dist/<env>``."""
    for path in sorted((DIST / "argocd").glob("*/application-*.yaml")):
        if yaml.safe_load(path.read_text())["spec"]["source"].get("path") == f"dist/{env}":
            return path.parent
    raise AssertionError(f"no Application syncs dist/{env}")


@pytest.fixture(scope="module")
def plane() -> Iterator[ControlPlane]:
    from tools import missing

    if binaries_missing():
        missing(f"{', '.join(binaries_missing())} not built (scripts/setup.sh test builds the control plane)")
    provider = yaml.safe_load((ENVIRONMENTS / f"{DRILLED}.yaml").read_text())["cloud"]["provider"]
    with control_plane(provider) as cp:
        yield cp


def _prerequisites(cp: ControlPlane, env: str) -> None:
    """What docs/deployment.md has in place before an environment's first sync: the CRDs and the argocd
    namespace (the fixture), and the cluster's platform layer (its StorageClass, GatewayClass, issuers)."""
    out = cp.apply(_cluster_folder(env) / "platform")
    assert out.returncode == 0, out.stderr


def _claims(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == "PersistentVolumeClaim"]


# ---------------------------------------------------------------- on the control plane


@pytest.mark.slow
@pytest.mark.parametrize("env", ENV_DIRS)
def test_first_sync_completes_wave_by_wave_under_argo_health_rules(plane: ControlPlane, env: str) -> None:
    objects = read_folder(DIST / env)
    # The fixture's classes are the clouds' and the platform layer's, every one WaitForFirstConsumer; a claim
    # without a class gets the cluster's default.
    classes = plane.items("/apis/storage.k8s.io/v1/storageclasses")
    (default,) = [
        c["metadata"]["name"]
        for c in classes
        if c["metadata"].get("annotations", {}).get("storageclass.kubernetes.io/is-default-class") == "true"
    ]
    binding = {c["metadata"]["name"]: c["volumeBindingMode"] for c in classes}
    for claim in _claims(objects):
        name = claim["spec"].get("storageClassName", default)
        assert name in storage_classes()
        assert binding[name] == "WaitForFirstConsumer"
    _prerequisites(plane, env)
    results = first_sync(plane.kubectl, objects)
    print(f"\nfirst sync of dist/{env}:\n{table(results)}")
    # None skipped: every wave ran, in order, and each ended with all its objects healthy or without a check.
    assert [r.wave for r in results] == list(waves(objects))
    for result in results:
        assert sorted([*result.gated, *result.ungated]) == sorted(result.applied)
    gated = {name: r.wave for r in results for name in r.gated}
    # The claims were gated (Bound: Healthy) in the wave of the workload that mounts them.
    assert _claims(objects)
    for claim in _claims(objects):
        name = f"PersistentVolumeClaim/{claim['metadata']['name']}"
        assert gated[name] == wave_of(claim)
    for obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet", "Service", "HorizontalPodAutoscaler"):
            assert f"{obj['kind']}/{obj['metadata']['name']}" in gated


@pytest.mark.slow
def test_the_old_wave_of_the_claim_stops_the_first_sync_at_wave_0(plane: ControlPlane) -> None:
    """Before issue 24 the claim had its kind's wave (0) and its consumer, the indexer, wave 2: under a
    WaitForFirstConsumer class it stays Pending, Argo CD calls that Progressing, and wave 0 never ends.
    Run on a copy of the drilled environment with only that annotation put back, in a namespace of its own."""
    namespace = "kga-old-order"
    objects = []
    for rendered in read_folder(DIST / DRILLED):
        obj = copy.deepcopy(rendered)
        if obj["kind"] == "Namespace":
            obj["metadata"]["name"] = namespace
        elif "namespace" in obj["metadata"]:
            obj["metadata"]["namespace"] = namespace
        if obj["kind"] == "PersistentVolumeClaim":
            obj["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"] = sync_wave("PersistentVolumeClaim")
        objects.append(obj)
    _prerequisites(plane, DRILLED)
    with pytest.raises(SyncStuckError) as stuck:
        first_sync(plane.kubectl, objects, timeout=30)
    print(f"\n{stuck.value}")
    assert stuck.value.wave == 0
    (claim,) = _claims(objects)
    assert set(stuck.value.waiting) == {f"PersistentVolumeClaim/{claim['metadata']['name']}"}
    assert {h.status for h in stuck.value.waiting.values()} == {PROGRESSING}
    # Waves before it completed; nothing of the workloads was ever created.
    assert [r.wave for r in stuck.value.done] == [w for w in waves(objects) if w < 0]
    deployments = plane.items(f"/apis/apps/v1/namespaces/{namespace}/deployments")
    assert deployments == []


@pytest.mark.slow
def test_a_reloader_roll_survives_the_next_sync(plane: ControlPlane) -> None:
    """Reloader's annotations strategy rolls the pods with one pod-template annotation (a strategic merge patch,
    as Reloader sends it); the next sync applies dist/ again and leaves the roll in place: same generation,
    the annotation still there. (Whether Argo CD calls it a difference at all is
    tests/test_argocd_application.py::test_reloader_roll_is_ignored_by_the_diff_and_nothing_else_is.)"""
    objects = read_folder(DIST / DRILLED)
    (namespace,) = [o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"]
    if plane.api.get(f"/api/v1/namespaces/{namespace}").status_code == 404:
        _prerequisites(plane, DRILLED)
        first_sync(plane.kubectl, objects)
    (workload,) = [
        o
        for o in objects
        if o["kind"] == "Deployment" and RELOAD_ANNOTATION in o["metadata"]["annotations"] and o["spec"].get("replicas")
    ][:1]
    name = workload["metadata"]["name"]
    path = f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}"
    selector = ",".join(f"{k}={v}" for k, v in workload["spec"]["selector"]["matchLabels"].items())

    def replicasets() -> set[str]:
        items = plane.items(f"/apis/apps/v1/namespaces/{namespace}/replicasets", labelSelector=selector)
        return {rs["metadata"]["name"] for rs in items}

    before = replicasets()
    marker = json.dumps({"type": "SECRET", "name": "kga-agent", "hash": "0" * 40})
    patch = {"spec": {"template": {"metadata": {"annotations": {RELOADED_FROM_ANNOTATION: marker}}}}}
    plane.api.patch(
        path,
        json=patch,
        params={"fieldManager": "reloader"},
        headers={"Content-Type": "application/strategic-merge-patch+json"},
    ).raise_for_status()

    def rolled() -> bool:
        h = health(plane.get(path))
        return h is not None and h.status == HEALTHY and len(replicasets() - before) == 1

    plane.wait(f"{name} to roll onto the annotated template", rolled)
    rolled_generation = plane.get(path)["metadata"]["generation"]
    # The next sync: the rendered object, applied again as Argo CD applies it.
    manifest = yaml.safe_dump(workload)
    plane.kubectl.ok("apply", "--server-side", "--field-manager=argocd-controller", "-f", "-", stdin=manifest)
    live = plane.get(path)
    assert live["spec"]["template"]["metadata"]["annotations"][RELOADED_FROM_ANNOTATION] == marker
    # The pod template did not change (any change to it bumps the generation and rolls the pods).
    assert live["metadata"]["generation"] == rolled_generation


# ---------------------------------------------------------------- the rules themselves, without a cluster


def _obj(api_version: str, kind: str, spec: dict[str, Any], status: dict[str, Any], **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"name": "x", "generation": 1, **meta},
        "spec": spec,
        "status": status,
    }


@pytest.mark.parametrize(
    ("obj", "status"),
    [
        (_obj("v1", "PersistentVolumeClaim", {}, {"phase": "Pending"}), PROGRESSING),
        (_obj("v1", "PersistentVolumeClaim", {}, {"phase": "Bound"}), HEALTHY),
        (_obj("v1", "PersistentVolumeClaim", {}, {"phase": "Lost"}), DEGRADED),
        (_obj("apps/v1", "Deployment", {"replicas": 2}, {"observedGeneration": 0}), PROGRESSING),
        (
            _obj(
                "apps/v1",
                "Deployment",
                {"replicas": 2},
                {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 1},
            ),
            PROGRESSING,
        ),
        (
            _obj(
                "apps/v1",
                "Deployment",
                {"replicas": 2},
                {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2},
            ),
            HEALTHY,
        ),
        # An HPA-driven Deployment renders no replicas: healthy once what was updated is available.
        (
            _obj("apps/v1", "Deployment", {}, {"observedGeneration": 1, "updatedReplicas": 3, "availableReplicas": 3}),
            HEALTHY,
        ),
        (_obj("apps/v1", "Deployment", {"paused": True}, {}), SUSPENDED),
        (
            _obj(
                "apps/v1",
                "Deployment",
                {"replicas": 1},
                {
                    "observedGeneration": 1,
                    "conditions": [{"type": "Progressing", "reason": "ProgressDeadlineExceeded"}],
                },
            ),
            DEGRADED,
        ),
        (
            _obj(
                "apps/v1",
                "StatefulSet",
                {"replicas": 1, "updateStrategy": {"type": "RollingUpdate"}},
                {"observedGeneration": 1, "readyReplicas": 0},
            ),
            PROGRESSING,
        ),
        (
            _obj(
                "apps/v1",
                "StatefulSet",
                {"replicas": 1, "updateStrategy": {"type": "RollingUpdate"}},
                {"observedGeneration": 1, "readyReplicas": 1, "currentRevision": "a", "updateRevision": "a"},
            ),
            HEALTHY,
        ),
        (
            _obj(
                "apps/v1",
                "StatefulSet",
                {"replicas": 1, "updateStrategy": {"type": "RollingUpdate"}},
                {"observedGeneration": 1, "readyReplicas": 1, "currentRevision": "a", "updateRevision": "b"},
            ),
            PROGRESSING,
        ),
        (_obj("batch/v1", "Job", {}, {}), PROGRESSING),
        (_obj("batch/v1", "Job", {}, {"conditions": [{"type": "Complete", "status": "True"}]}), HEALTHY),
        (_obj("batch/v1", "Job", {}, {"conditions": [{"type": "Failed", "status": "True"}]}), DEGRADED),
        (_obj("v1", "Service", {"type": "ClusterIP"}, {}), HEALTHY),
        (_obj("v1", "Service", {"type": "LoadBalancer"}, {}), PROGRESSING),
        (_obj("networking.k8s.io/v1", "Ingress", {}, {}), PROGRESSING),
        (_obj("autoscaling/v2", "HorizontalPodAutoscaler", {}, {}), PROGRESSING),
        (
            _obj(
                "autoscaling/v2",
                "HorizontalPodAutoscaler",
                {},
                {"conditions": [{"type": "AbleToScale", "status": "True", "reason": "SucceededGetScale"}]},
            ),
            HEALTHY,
        ),
        (
            _obj(
                "autoscaling/v2",
                "HorizontalPodAutoscaler",
                {},
                {"conditions": [{"type": "ScalingActive", "status": "False", "reason": "FailedGetResourceMetric"}]},
            ),
            DEGRADED,
        ),
        (_obj("v1", "Pod", {}, {"phase": "Pending"}), PROGRESSING),
        (
            _obj(
                "v1",
                "Pod",
                {},
                {"phase": "Pending", "containerStatuses": [{"state": {"waiting": {"reason": "ImagePullBackOff"}}}]},
            ),
            DEGRADED,
        ),
        (
            _obj("v1", "PersistentVolumeClaim", {}, {"phase": "Bound"}, deletionTimestamp="2026-01-01T00:00:00Z"),
            PROGRESSING,
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else f"{v['kind']}",
)
def test_health_follows_gitops_engine(obj: dict[str, Any], status: str) -> None:
    h = health(obj)
    assert h is not None
    assert h.status == status, h
    assert h.rule.startswith("pkg/health/")


def test_kinds_without_a_built_in_check_have_no_health() -> None:
    """gitops-engine returns nil for them, and a sync task with nil health succeeds once applied."""
    assert health(_obj("v1", "ConfigMap", {}, {})) is None
    assert health(_obj("batch/v1", "CronJob", {}, {})) is None
    assert health(_obj("external-secrets.io/v1", "ExternalSecret", {}, {})) is None


def test_a_kind_gitops_engine_checks_but_the_runner_does_not_is_refused() -> None:
    with pytest.raises(NotImplementedError, match="DaemonSet"):
        health(_obj("apps/v1", "DaemonSet", {}, {}))


@pytest.mark.parametrize("env", ENV_DIRS)
def test_no_kind_in_dist_has_a_check_the_runner_lacks(env: str) -> None:
    for obj in read_folder(DIST / env):
        health({**obj, "status": {}})  # raises on a kind gitops-engine checks and the runner does not


def test_waves_follow_the_annotation_then_kind_order() -> None:
    objects = [
        _obj("apps/v1", "Deployment", {}, {}, annotations={"argocd.argoproj.io/sync-wave": "2"}),
        _obj("v1", "PersistentVolumeClaim", {}, {}, annotations={"argocd.argoproj.io/sync-wave": "2"}),
        _obj("v1", "Namespace", {}, {}, annotations={"argocd.argoproj.io/sync-wave": "-2"}),
        _obj("example.com/v1", "Widget", {}, {}),
    ]
    assert [(w, [o["kind"] for o in members]) for w, members in waves(objects).items()] == [
        (-2, ["Namespace"]),
        (0, ["Widget"]),
        (2, ["PersistentVolumeClaim", "Deployment"]),
    ]
