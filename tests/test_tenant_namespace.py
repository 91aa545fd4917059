"""TenantNamespace: Pod Security labels, quota, defaults, and the quota-vs-max-scale invariant."""

from __future__ import annotations

import re
from typing import Any

import pytest
from conftest import build, env_data

from kgstack.environment import parse_environment
from kgstack.publish import SynthError, synth
from kgstack.validation import collect_errors

Manifests = dict[str, dict[str, dict[str, Any]]]


def test_pod_security_restricted_in_every_mode(manifests: Manifests) -> None:
    labels = manifests["prod"]["Namespace/kga-prod"]["metadata"]["labels"]
    for mode in ("enforce", "audit", "warn"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"
        assert labels[f"pod-security.kubernetes.io/{mode}-version"] == "v1.33"


def test_quota_and_limit_range(manifests: Manifests) -> None:
    hard = manifests["prod"]["ResourceQuota/kga-prod"]["spec"]["hard"]
    assert hard["limits.memory"] == "96Gi"
    assert hard["persistentvolumeclaims"] == 20
    (limits,) = manifests["prod"]["LimitRange/kga-prod"]["spec"]["limits"]
    assert limits["type"] == "Container"
    assert limits["defaultRequest"] == {"cpu": "100m", "memory": "128Mi"}


def test_quota_must_cover_max_scale_plus_surge() -> None:
    # dev limits: query (3 + 1 surge) x 1Gi, indexer 1 x 2Gi (Recreate: no surge), chroma 1Gi,
    # redis 256Mi + exporter 128Mi, two backup runs x 1Gi, web and auth (2 + 1 surge) x 64Mi -> 9984Mi.
    env = parse_environment(env_data("dev", quota__limits={"cpu": "16", "memory": "9Gi"}), source="dev.yaml")
    app, stack = build(env)
    error, breakdown = collect_errors(app)
    # current value, need, value to set (9.88Gi, x1.2 = 11.9Gi -> 12Gi), all in Gi
    assert error == (
        "dev/Namespace: quota.limits.memory: is 9Gi but the workloads at maximum scale plus rollout surge "
        "need 9.88Gi; set quota.limits.memory: 12Gi (20% headroom)"
    )
    assert breakdown.startswith("dev/Namespace: quota: what each workload needs at maximum scale plus rollout surge: ")
    assert "Deployment/kga-dev-query (4 pods), limits.memory 4Gi" in breakdown
    assert "Deployment/kga-dev-indexer (1 pod), limits.memory 2Gi" in breakdown
    with pytest.raises(SynthError) as caught:
        synth([stack])
    assert caught.value.problems == [error, breakdown]


def test_quota_error_uses_one_unit_and_lists_workloads_once() -> None:
    env = parse_environment(
        env_data("dev", quota__requests={"cpu": "500m", "memory": "1Gi"}, quota__pods=3), source="dev.yaml"
    )
    app, _ = build(env)
    errors = collect_errors(app)
    assert [e.split(": ")[1] for e in errors] == ["quota.requests.cpu", "quota.requests.memory", "quota.pods", "quota"]
    assert errors[0].endswith(
        "is 0.5 cores but the workloads at maximum scale plus rollout surge need 2.03 cores; "
        'set quota.requests.cpu: "3" (20% headroom)'
    )
    assert sum("Deployment/kga-dev-query" in e for e in errors) == 1
    assert not re.search(r"\d+m\b", " ".join(errors)), "CPU in cores only, never millicores"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("quota__pods", 5, "quota.pods: is 5 but the workloads at maximum scale plus rollout surge need 16"),
        ("quota__storage", "1Gi", "quota.storage: is 1Gi but"),
        ("quota__persistentVolumeClaims", 0, "quota.persistentVolumeClaims: is 0 but"),
        ("quota__requests", {"cpu": "1", "memory": "6Gi"}, "quota.requests.cpu: is 1 core but"),
    ],
)
def test_each_quota_dimension_is_checked(field: str, value: object, message: str) -> None:
    env = parse_environment(env_data("dev", **{field: value}), source="dev.yaml")
    app, _ = build(env)
    assert any(message in e for e in collect_errors(app)), collect_errors(app)


def test_shipped_quotas_fit() -> None:
    for name in ("dev", "staging", "prod"):
        app, _ = build(parse_environment(env_data(name), source=name))
        assert collect_errors(app) == []
