"""Argo CD's first sync of a ``dist/<env>/`` folder, wave by wave, under Argo CD's own health rules.

Argo CD applies the objects of one sync wave, then waits until every one of them is healthy before it
starts the next wave (gitops-engine ``pkg/sync/sync_context.go``, ``syncContext.Sync``: a running task
succeeds when ``health.GetResourceHealth`` of its live object is ``Healthy`` or ``nil`` (a kind without a
health check), fails when it is ``Degraded``, and keeps the sync waiting when it is ``Progressing``,
``Suspended``, ``Missing`` or ``Unknown``). :func:`first_sync` does the same against any API server it
reaches through ``kubectl``: the control plane of tests/control_plane.py, or a real node.

The health rules are gitops-engine's built-in ones (``pkg/health``, read at
argoproj/gitops-engine 5baed5604d2dd970619fc9b91e8d31724662ab3e), one function per kind below, each citing
the file and function it follows. A kind gitops-engine checks but this module does not implement raises,
so a new kind in ``dist/`` cannot pass unchecked. Custom resources have no built-in check: Argo CD adds Lua
checks for some (argo-cd ``resource_customizations/<group>/<kind>/health.lua``, e.g. ExternalSecret and
cert-manager's Certificate wait for ``Ready``); those need their controllers, which a bare control plane
does not run, so :class:`WaveResult` lists them as ``ungated`` instead of pretending.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

SYNC_WAVE = "argocd.argoproj.io/sync-wave"
FIELD_MANAGER = "argocd-controller"
"""The field manager Argo CD's server-side apply uses."""

HEALTHY, PROGRESSING, DEGRADED, SUSPENDED, UNKNOWN = "Healthy", "Progressing", "Degraded", "Suspended", "Unknown"

Obj = dict[str, Any]


class Kubectl(Protocol):
    def run(self, *args: str, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]: ...


@dataclass(frozen=True)
class Health:
    status: str
    message: str = ""
    rule: str = ""
    """The gitops-engine function the status comes from."""


# ---------------------------------------------------------------- gitops-engine pkg/health, kind by kind


def _deployment(obj: Obj) -> Health:  # noqa: PLR0911 (one return per upstream branch)
    """health_deployment.go, ``getAppsv1DeploymentHealth``."""
    rule = "pkg/health/health_deployment.go getAppsv1DeploymentHealth"
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    if spec.get("paused"):
        return Health(SUSPENDED, "Deployment is paused", rule)
    if obj["metadata"].get("generation", 0) > status.get("observedGeneration", 0):
        return Health(PROGRESSING, "observed deployment generation less than desired generation", rule)
    progressing = next((c for c in status.get("conditions") or [] if c["type"] == "Progressing"), None)
    updated, replicas = status.get("updatedReplicas", 0), status.get("replicas", 0)
    available = status.get("availableReplicas", 0)
    if progressing is not None and progressing.get("reason") == "ProgressDeadlineExceeded":
        return Health(DEGRADED, "exceeded its progress deadline", rule)
    if spec.get("replicas") is not None and updated < spec["replicas"]:
        return Health(PROGRESSING, f"{updated} out of {spec['replicas']} new replicas have been updated", rule)
    if replicas > updated:
        return Health(PROGRESSING, f"{replicas - updated} old replicas are pending termination", rule)
    if available < updated:
        return Health(PROGRESSING, f"{available} of {updated} updated replicas are available", rule)
    return Health(HEALTHY, "", rule)


def _statefulset(obj: Obj) -> Health:  # noqa: PLR0911 (one return per upstream branch)
    """health_statefulset.go, ``getAppsv1StatefulSetHealth``."""
    rule = "pkg/health/health_statefulset.go getAppsv1StatefulSetHealth"
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    observed = status.get("observedGeneration", 0)
    if observed == 0 or obj["metadata"].get("generation", 0) > observed:
        return Health(PROGRESSING, "Waiting for statefulset spec update to be observed...", rule)
    replicas, ready = spec.get("replicas"), status.get("readyReplicas", 0)
    if replicas is not None and ready < replicas:
        return Health(PROGRESSING, f"Waiting for {replicas - ready} pods to be ready...", rule)
    strategy = spec.get("updateStrategy") or {}
    if strategy.get("type") == "RollingUpdate" and strategy.get("rollingUpdate") is not None:
        partition = strategy["rollingUpdate"].get("partition")
        if replicas is not None and partition is not None and status.get("updatedReplicas", 0) < replicas - partition:
            return Health(PROGRESSING, "Waiting for partitioned roll out to finish", rule)
        return Health(HEALTHY, "partitioned roll out complete", rule)
    if strategy.get("type") == "OnDelete":
        return Health(HEALTHY, f"statefulset has {ready} ready pods", rule)
    if status.get("updateRevision") != status.get("currentRevision"):
        return Health(PROGRESSING, "waiting for statefulset rolling update to complete", rule)
    return Health(HEALTHY, "statefulset rolling update complete", rule)


def _pvc(obj: Obj) -> Health:
    """health_pvc.go, ``getCorev1PVCHealth``: Pending is Progressing (the deadlock of argo-cd #12840)."""
    rule = "pkg/health/health_pvc.go getCorev1PVCHealth"
    phase = (obj.get("status") or {}).get("phase")
    status = {"Lost": DEGRADED, "Pending": PROGRESSING, "Bound": HEALTHY}.get(phase or "", UNKNOWN)
    return Health(status, f"phase {phase}", rule)


def _service(obj: Obj) -> Health:
    """health_service.go, ``getCorev1ServiceHealth``: only a LoadBalancer waits, for its ingress."""
    rule = "pkg/health/health_service.go getCorev1ServiceHealth"
    if (obj.get("spec") or {}).get("type") == "LoadBalancer":
        ingress = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress")
        return Health(HEALTHY if ingress else PROGRESSING, "", rule)
    return Health(HEALTHY, "", rule)


def _ingress(obj: Obj) -> Health:
    """health_ingress.go, ``getIngressHealth``: Healthy once the controller published an address."""
    ingress = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress")
    return Health(HEALTHY if ingress else PROGRESSING, "", "pkg/health/health_ingress.go getIngressHealth")


def _job(obj: Obj) -> Health:
    """health_job.go, ``getBatchv1JobHealth``."""
    rule = "pkg/health/health_job.go getBatchv1JobHealth"
    failed = complete = suspended = False
    message = ""
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition["type"] == "Failed":
            failed = complete = True
            message = condition.get("message", "")
        elif condition["type"] == "Complete":
            complete = True
        elif condition["type"] == "Suspended":
            complete = True
            suspended = suspended or condition.get("status") == "True"
    if not complete:
        return Health(PROGRESSING, "", rule)
    if failed:
        return Health(DEGRADED, message, rule)
    return Health(SUSPENDED if suspended else HEALTHY, "", rule)


def _pod(obj: Obj) -> Health:  # noqa: PLR0911 (one return per upstream branch)
    """health_pod.go, ``getCorev1PodHealth`` (restartPolicy Always: a waiting Err*/*Error/*BackOff is Degraded)."""
    rule = "pkg/health/health_pod.go getCorev1PodHealth"
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    always = spec.get("restartPolicy", "Always") == "Always"
    if always:
        for container in status.get("containerStatuses") or []:
            reason = ((container.get("state") or {}).get("waiting") or {}).get("reason", "")
            if reason.startswith("Err") or reason.endswith(("Error", "BackOff")):
                return Health(DEGRADED, reason, rule)
    phase = status.get("phase")
    if phase == "Pending":
        return Health(PROGRESSING, "", rule)
    if phase == "Succeeded":
        return Health(HEALTHY, "", rule)
    if phase == "Failed":
        return Health(DEGRADED, status.get("message", ""), rule)
    if phase == "Running":
        if not always:
            return Health(PROGRESSING, "", rule)
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or [])
        if ready:
            return Health(HEALTHY, "", rule)
        restarted = any((c.get("lastState") or {}).get("terminated") for c in status.get("containerStatuses") or [])
        return Health(DEGRADED if restarted else PROGRESSING, "", rule)
    return Health(UNKNOWN, "", rule)


_HPA_DEGRADED = {
    ("AbleToScale", "FailedGetScale"),
    ("AbleToScale", "FailedUpdateScale"),
    ("ScalingActive", "FailedGetResourceMetric"),
    ("ScalingActive", "InvalidSelector"),
}


def _hpa(obj: Obj) -> Health:
    """health_hpa.go, ``getAutoScalingV2HPAHealth`` / ``checkConditions``: the first condition that is degraded
    (``isDegraded``) or healthy (``isHealthy``: AbleToScale or ScalingLimited True) decides, in status order."""
    rule = "pkg/health/health_hpa.go checkConditions"
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if (condition["type"], condition.get("reason")) in _HPA_DEGRADED:
            return Health(DEGRADED, condition.get("message", ""), rule)
        if condition["type"] in ("AbleToScale", "ScalingLimited") and condition.get("status") == "True":
            return Health(HEALTHY, condition.get("message", ""), rule)
    return Health(PROGRESSING, "Waiting to Autoscale", rule)


_CHECKS: dict[tuple[str, str], Callable[[Obj], Health]] = {
    # health.go GetHealthCheckFunc: by API group and kind
    ("apps", "Deployment"): _deployment,
    ("apps", "StatefulSet"): _statefulset,
    ("", "PersistentVolumeClaim"): _pvc,
    ("", "Service"): _service,
    ("", "Pod"): _pod,
    ("networking.k8s.io", "Ingress"): _ingress,
    ("extensions", "Ingress"): _ingress,
    ("batch", "Job"): _job,
    ("autoscaling", "HorizontalPodAutoscaler"): _hpa,
}
_NOT_IMPLEMENTED = {
    ("apps", "ReplicaSet"),
    ("apps", "DaemonSet"),
    ("apiregistration.k8s.io", "APIService"),
    ("argoproj.io", "Workflow"),
}
"""Kinds gitops-engine checks that dist/ renders none of; meeting one is an error here, not a pass."""


def group_of(obj: Mapping[str, Any]) -> str:
    api_version = str(obj["apiVersion"])
    return api_version.rpartition("/")[0] if "/" in api_version else ""


def health(obj: Obj) -> Health | None:
    """gitops-engine ``health.GetResourceHealth`` without overrides: ``None`` for a kind without a check."""
    if obj["metadata"].get("deletionTimestamp"):
        return Health(PROGRESSING, "Pending deletion", "pkg/health/health.go GetResourceHealth")
    key = (group_of(obj), obj["kind"])
    if key in _NOT_IMPLEMENTED:
        raise NotImplementedError(f"gitops-engine checks {key}; tests/argo_sync.py does not yet")
    check = _CHECKS.get(key)
    return check(obj) if check else None


# ---------------------------------------------------------------- waves


def wave_of(obj: Mapping[str, Any]) -> int:
    """gitops-engine ``syncwaves.Wave``: the annotation, else 0."""
    text = ((obj.get("metadata") or {}).get("annotations") or {}).get(SYNC_WAVE)
    try:
        return int(text) if text is not None else 0
    except ValueError:
        return 0


# pkg/sync/sync_tasks.go kindOrder: within a wave, these kinds first and in this order, custom resources after.
_KIND_ORDER = [
    "Namespace",
    "NetworkPolicy",
    "ResourceQuota",
    "LimitRange",
    "PodSecurityPolicy",
    "PodDisruptionBudget",
    "ServiceAccount",
    "Secret",
    "SecretList",
    "ConfigMap",
    "StorageClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleList",
    "ClusterRoleBinding",
    "ClusterRoleBindingList",
    "Role",
    "RoleList",
    "RoleBinding",
    "RoleBindingList",
    "Service",
    "DaemonSet",
    "Pod",
    "ReplicationController",
    "ReplicaSet",
    "Deployment",
    "HorizontalPodAutoscaler",
    "StatefulSet",
    "Job",
    "CronJob",
    "IngressClass",
    "Ingress",
    "APIService",
]


def _order(obj: Mapping[str, Any]) -> tuple[int, str, str]:
    kind = str(obj["kind"])
    rank = _KIND_ORDER.index(kind) - len(_KIND_ORDER) if kind in _KIND_ORDER else 0
    return rank, kind, str(obj["metadata"]["name"])


def read_folder(folder: Path) -> list[Obj]:
    """Every object of a dist/ folder, as its kustomization lists them."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    return [yaml.safe_load((folder / name).read_text()) for name in kustomization["resources"]]


def waves(objects: list[Obj]) -> dict[int, list[Obj]]:
    """``{wave: objects}`` in ascending wave order, each wave in gitops-engine's kind order."""
    out: dict[int, list[Obj]] = {}
    for obj in objects:
        out.setdefault(wave_of(obj), []).append(obj)
    return {wave: sorted(out[wave], key=_order) for wave in sorted(out)}


def key(obj: Mapping[str, Any]) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


@dataclass
class WaveResult:
    wave: int
    applied: list[str]
    gated: dict[str, str] = field(default_factory=dict)
    """``Kind/name``: the rule that found it Healthy."""
    ungated: list[str] = field(default_factory=list)
    """No built-in health check: done once applied, as in gitops-engine."""
    seconds: float = 0.0


class SyncStuckError(AssertionError):
    """A wave did not become healthy in time (or an object was Degraded): Argo CD would stop here too."""

    def __init__(self, wave: int, waiting: dict[str, Health], done: list[WaveResult]) -> None:
        self.wave, self.waiting, self.done = wave, waiting, done
        lines = [f"  {name}: {h.status} ({h.message}) per {h.rule}" for name, h in sorted(waiting.items())]
        super().__init__(f"the sync stops at wave {wave}; not healthy:\n" + "\n".join(lines))


def _live(kubectl: Kubectl, manifest: Path) -> list[Obj]:
    out = kubectl.run("get", "-o", "json", "-f", str(manifest), timeout=60)
    if out.returncode:
        raise AssertionError(f"kubectl get failed:\n{out.stderr}")
    data = json.loads(out.stdout)
    return data["items"] if data.get("kind") == "List" else [data]  # type: ignore[no-any-return]


def first_sync(
    kubectl: Kubectl,
    objects: list[Obj],
    *,
    timeout: float = 120,
    poll: float = 0.5,
    field_manager: str = FIELD_MANAGER,
) -> list[WaveResult]:
    """Apply ``objects`` wave by wave (server-side, as rendered) and wait, after each wave, until every object
    of it is healthy by Argo CD's rules; raises :class:`SyncStuckError` at the first wave that is not within
    ``timeout`` seconds, or that has a Degraded object."""
    done: list[WaveResult] = []
    with tempfile.TemporaryDirectory(prefix="argo-sync-") as tmp:
        for wave, members in waves(objects).items():
            manifest = Path(tmp) / f"wave{wave}.yaml"
            manifest.write_text(yaml.safe_dump_all(members, sort_keys=False))
            start = time.monotonic()
            out = kubectl.run("apply", "--server-side", f"--field-manager={field_manager}", "-f", str(manifest))
            if out.returncode:
                raise AssertionError(f"wave {wave}: apply failed:\n{out.stderr}{out.stdout}")
            result = WaveResult(wave, [key(o) for o in members])
            while True:
                waiting: dict[str, Health] = {}
                for live in _live(kubectl, manifest):
                    h = health(live)
                    if h is None:
                        if key(live) not in result.ungated:
                            result.ungated.append(key(live))
                    elif h.status == HEALTHY:
                        result.gated[key(live)] = h.rule
                    else:
                        result.gated.pop(key(live), None)
                        waiting[key(live)] = h
                degraded = {k: h for k, h in waiting.items() if h.status == DEGRADED}
                if degraded:
                    raise SyncStuckError(wave, degraded, done)
                if not waiting:
                    break
                if time.monotonic() - start > timeout:
                    raise SyncStuckError(wave, waiting, done)
                time.sleep(poll)
            result.seconds = time.monotonic() - start
            done.append(result)
    return done


def table(results: list[WaveResult]) -> str:
    lines = ["| wave | objects | gated by a health rule | no health check | seconds |", "|---|---|---|---|---|"]
    for r in results:
        gated = ", ".join(f"{k} ({v.split()[-1]})" for k, v in sorted(r.gated.items()))
        lines.append(f"| {r.wave} | {len(r.applied)} | {gated or '-'} | {len(r.ungated)} | {r.seconds:.1f} |")
    return "\n".join(lines)
