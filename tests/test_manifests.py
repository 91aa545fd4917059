"""Every manifest in dist/: strict schemas for Kubernetes 1.27-1.35, Pod Security, no secrets."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ROOT, dist_files
from pss import pod_specs, violations

from kgstack.environment import SUPPORTED_KUBERNETES
from kgstack.schema import schema_problems

FILES = dist_files()
SECRETISH = re.compile(r"(KEY|TOKEN|PASSWORD|SECRET)", re.IGNORECASE)


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())  # type: ignore[no-any-return]


def test_dist_is_not_empty() -> None:
    folders = {p.parent.relative_to(ROOT / "dist").as_posix() for p in FILES}
    clusters = {"dev", "staging-eks", "prod-eks"}
    assert folders == {
        "dev",
        "staging",
        "prod",
        *(f"argocd/{c}" for c in clusters),
        *(f"argocd/{c}/platform" for c in clusters),
    }


@pytest.mark.parametrize("version", SUPPORTED_KUBERNETES)
def test_strict_schema_for_every_supported_kubernetes(version: str) -> None:
    problems = [f"{p.relative_to(ROOT)}: {problem}" for p in FILES for problem in schema_problems(load(p), version)]
    assert problems == []


def test_strict_validation_catches_an_unknown_field() -> None:
    deployment = load(ROOT / "dist/dev/deployment-kga-dev-query.yaml")
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContxt"] = {}
    (problem,) = schema_problems(deployment, "1.31")
    assert "securityContxt" in problem and "spec.template.spec.containers[0]" in problem


def test_every_pod_meets_restricted_pod_security() -> None:
    checked = 0
    for path in FILES:
        for pod in pod_specs(load(path)):
            assert violations(pod) == [], path
            checked += 1
    assert checked >= 6


def test_pod_security_check_can_fail() -> None:
    pod = {
        "containers": [{"name": "c", "securityContext": {"privileged": True}}],
        "volumes": [{"name": "h", "hostPath": {"path": "/"}}],
    }
    assert len(violations(pod)) >= 5


def test_no_secret_values_in_dist() -> None:
    for path in FILES:
        obj = load(path)
        assert obj["kind"] != "Secret" or not (obj.get("data") or obj.get("stringData")), path
        for pod in pod_specs(obj):
            for container in pod["containers"]:
                for var in container.get("env", []):
                    if var["name"].endswith("_FILE"):
                        assert var["value"].startswith("/secrets/"), (path, var["name"])  # a mounted key
                    elif SECRETISH.search(var["name"]):
                        assert "valueFrom" in var and "value" not in var, (path, var["name"])
        text = path.read_text()
        assert not re.search(r"\b(sk-[A-Za-z0-9]{20,}|gh[pousr]_[A-Za-z0-9]{30,})", text), path
