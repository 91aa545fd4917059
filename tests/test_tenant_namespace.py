"""TenantNamespace: Pod Security labels, quota, defaults, and the quota-vs-max-scale invariant."""

from __future__ import annotations

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
    # dev limits: query (3 + 1 surge) x 1Gi, indexer (1 + 1 surge) x 2Gi, chroma 1Gi,
    # redis 256Mi + exporter 128Mi, two backup runs x 1Gi, web and auth (2 + 1 surge) x 64Mi -> 12032Mi.
    env = parse_environment(env_data("dev", quota__limits={"cpu": "16", "memory": "11Gi"}), source="dev.yaml")
    app, stack = build(env)
    (error,) = collect_errors(app)
    assert error.startswith("dev/Namespace: quota.limits.memory is too small")
    assert "need 12032Mi" in error
    assert "Deployment/kga-dev-query x4" in error and "Deployment/kga-dev-indexer x2" in error
    with pytest.raises(SynthError) as caught:
        synth([stack])
    assert caught.value.problems == [error]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("quota__pods", 5, "quota.pods is too small: the workloads at maximum scale plus rollout surge need 16"),
        ("quota__storage", "1Gi", "quota.storage is too small"),
        ("quota__persistentVolumeClaims", 0, "quota.persistentVolumeClaims is too small"),
        ("quota__requests", {"cpu": "1", "memory": "6Gi"}, "quota.requests.cpu is too small"),
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
