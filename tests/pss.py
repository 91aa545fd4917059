"""The Pod Security Standards ``restricted`` profile, checked on synthesized pod templates.

A transcription of the admission rules (kubernetes.io/docs/concepts/security/
pod-security-standards) for the fields our manifests can carry, so that every
workload kind added later is checked without writing a new test.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

ALLOWED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def pod_specs(obj: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = obj.get("spec", {})
    kind = obj["kind"]
    if kind == "Pod":
        yield spec
    elif kind in {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}:
        yield spec["template"]["spec"]
    elif kind == "CronJob":
        yield spec["jobTemplate"]["spec"]["template"]["spec"]


def violations(pod: dict[str, Any]) -> list[str]:
    found = [f"{flag} is set" for flag in ("hostNetwork", "hostPID", "hostIPC") if pod.get(flag)]
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= ALLOWED_VOLUMES:
            found.append(f"volume {volume['name']} uses {sorted(kinds)}")
    for container in pod.get("initContainers", []) + pod["containers"]:
        found.extend(_container_violations(container, pod.get("securityContext", {})))
    return found


def _container_violations(c: dict[str, Any], psc: dict[str, Any]) -> list[str]:
    sc = c.get("securityContext", {})
    caps = sc.get("capabilities", {})
    seccomp = sc.get("seccompProfile", psc.get("seccompProfile", {})).get("type")
    rules = {
        "privileged": bool(sc.get("privileged")),
        "allowPrivilegeEscalation is not false": sc.get("allowPrivilegeEscalation") is not False,
        "capabilities do not drop ALL": "ALL" not in caps.get("drop", []),
        f"adds capabilities {caps.get('add')}": bool(set(caps.get("add", [])) - {"NET_BIND_SERVICE"}),
        "runAsNonRoot is not true": not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")),
        "runs as UID 0": sc.get("runAsUser", psc.get("runAsUser")) == 0,
        f"seccompProfile is {seccomp}": seccomp not in {"RuntimeDefault", "Localhost"},
        "uses a hostPort": any(p.get("hostPort") for p in c.get("ports", [])),
    }
    return [f"{c['name']}: {rule}" for rule, broken in rules.items() if broken]
