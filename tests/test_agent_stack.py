"""AgentStack: per-environment snapshots, labels, names and the output layout."""

from __future__ import annotations

import re
from typing import Any

import pytest
from conftest import build, env_data
from syrupy.assertion import SnapshotAssertion

from kgstack.environment import parse_environment
from kgstack.validation import collect_errors

Manifests = dict[str, dict[str, dict[str, Any]]]
RECOMMENDED = {"name", "instance", "version", "component", "part-of", "managed-by"}


@pytest.mark.parametrize("env", ["dev", "staging", "prod"])
def test_snapshot(rendered: dict[str, dict[str, str]], env: str, snapshot: SnapshotAssertion) -> None:
    assert rendered[env] == snapshot


def test_recommended_labels_everywhere(manifests: Manifests) -> None:
    for objects in manifests.values():
        for key, obj in objects.items():
            labels = obj["metadata"]["labels"]
            present = {k.removeprefix("app.kubernetes.io/") for k in labels if k.startswith("app.kubernetes.io/")}
            assert present >= RECOMMENDED, key


def test_selectors_leave_out_version(manifests: Manifests) -> None:
    for objects in manifests.values():
        for key, obj in objects.items():
            spec = obj.get("spec", {})
            selector = spec.get("selector", {})
            selector = selector.get("matchLabels", selector)
            if selector:
                assert "app.kubernetes.io/version" not in selector, key
                assert "app.kubernetes.io/component" in selector, key


def test_names_are_readable_and_stable(rendered: dict[str, dict[str, str]]) -> None:
    for env, files in rendered.items():
        for name in set(files) - {"kustomization.yaml"}:
            assert re.fullmatch(rf"[a-z]+-kga(-{env})?(-[a-z]+)*\.yaml", name), name
            assert not re.search(r"-[0-9a-f]{8}\b", name), f"hash suffix in {name}"
    assert {
        "deployment-kga-dev-query.yaml",
        "statefulset-kga-dev-redis.yaml",
        "cronjob-kga-dev-backup-redis.yaml",
    } <= set(rendered["dev"])


def test_every_object_is_namespaced_into_the_environment(manifests: Manifests) -> None:
    for env, objects in manifests.items():
        for key, obj in objects.items():
            if not key.startswith("Namespace/"):
                assert obj["metadata"]["namespace"] == f"kga-{env}", key


def test_workload_identity_only_on_the_backup_account(manifests: Manifests) -> None:
    """Issue 9 defect 7: the internet-facing agent never carries the backup bucket's role."""
    backup = manifests["prod"]["ServiceAccount/kga-prod-backup"]
    assert backup["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == "arn:aws:iam::444455556666:role/kga-prod"
    for env, objects in manifests.items():
        agent = objects[f"ServiceAccount/kga-{env}-agent"]
        assert agent["automountServiceAccountToken"] is False
        assert not any(
            "azure" in k or "iam.gke" in k or "eks" in k for k in agent["metadata"].get("annotations", {})
        ), env
        for name in (f"Deployment/kga-{env}-query", f"Deployment/kga-{env}-indexer"):
            labels = objects[name]["spec"]["template"]["metadata"]["labels"]
            assert "azure.workload.identity/use" not in labels


def test_kustomization_lists_every_file(rendered: dict[str, dict[str, str]]) -> None:
    import yaml

    for files in rendered.values():
        kustomization = yaml.safe_load(files["kustomization.yaml"])
        assert kustomization["resources"] == sorted(set(files) - {"kustomization.yaml"})


def test_query_grace_outlasts_the_edge_timeout(manifests: Manifests, environments: dict[str, Any]) -> None:
    """A rollout must not cut off an answer the edge still waits for (preStop 10 s + the route's timeout)."""
    for env, objects in manifests.items():
        spec = objects[f"Deployment/kga-{env}-query"]["spec"]["template"]["spec"]
        timeout = environments[env].edge.query_timeout_seconds
        assert spec["terminationGracePeriodSeconds"] >= timeout + 10
    short = parse_environment(env_data("dev", query__terminationGraceSeconds=60), source="dev.yaml")
    app, _ = build(short)
    errors = collect_errors(app)
    assert any("query.terminationGraceSeconds: is 60 but edge.queryTimeoutSeconds (180)" in e for e in errors), errors


def test_the_redis_backup_has_room_for_the_dataset() -> None:
    """kgbackup loads the RDB into a private redis-server in its own container (second review, finding 6)."""
    env = parse_environment(
        env_data(
            "prod",
            stores__redis__resources={
                "requests": {"cpu": "250m", "memory": "4Gi"},
                "limits": {"cpu": "1", "memory": "4Gi"},
            },
        ),
        source="prod.yaml",
    )
    app, _ = build(env)
    # maxmemory 75 % of 4Gi = 3Gi, + 512Mi for the tool: prod's 2Gi backup limit is too small.
    assert (
        "backup.resources.limits.memory: is 2Gi but the Redis backup loads up to 3Gi (stores.redis maxmemory) into "
        "a private redis-server plus 512Mi for the tool: set it to at least 3584Mi"
    ) in collect_errors(app)[0]
