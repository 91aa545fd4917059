"""MemgraphStore: auth from a Secret, bolt probes, durable storage; only where graph features are on."""

from __future__ import annotations

from typing import Any

Manifests = dict[str, dict[str, dict[str, Any]]]


def test_only_where_the_graph_is_enabled(manifests: Manifests) -> None:
    assert "StatefulSet/kga-staging-memgraph" in manifests["staging"]
    assert "StatefulSet/kga-prod-memgraph" not in manifests["prod"]
    assert "CronJob/kga-prod-backup-memgraph" not in manifests["prod"]


def test_auth_from_secret_and_bolt_probes(manifests: Manifests) -> None:
    pod = manifests["staging"]["StatefulSet/kga-staging-memgraph"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") or e["valueFrom"]["secretKeyRef"] for e in container["env"]}
    assert env == {"MEMGRAPH_USER": "kga", "MEMGRAPH_PASSWORD": {"name": "kga-memgraph", "key": "password"}}
    assert container["readinessProbe"]["tcpSocket"] == {"port": "bolt"}
    assert "--data-directory=/var/lib/memgraph" in container["args"]
    assert "--storage-wal-enabled=true" in container["args"]
    assert pod["terminationGracePeriodSeconds"] == 120


def test_agent_gets_the_graph_settings(manifests: Manifests) -> None:
    data = manifests["staging"]["ConfigMap/kga-staging-agent"]["data"]
    assert data["GRAPH_STORE_URL"] == "bolt://kga-staging-memgraph:7687"
    assert data["ENABLE_GRAPH_FEATURES"] == "true"
    env = manifests["staging"]["Deployment/kga-staging-indexer"]["spec"]["template"]["spec"]["containers"][0]["env"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in env}
    assert refs["GRAPH_STORE_PASSWORD"] == {"name": "kga-memgraph", "key": "password"}
    assert data["GRAPH_STORE_USER"] == "kga"


def test_memory_limit_follows_the_container_limit(manifests: Manifests) -> None:
    """Without --memory-limit Memgraph sizes itself from the node's RAM and is OOM-killed (review finding 6)."""
    sts = manifests["staging"]["StatefulSet/kga-staging-memgraph"]
    container = sts["spec"]["template"]["spec"]["containers"][0]
    limit = container["resources"]["limits"]["memory"]
    assert limit.endswith("Gi")
    assert f"--memory-limit={int(int(limit[:-2]) * 1024 * 0.8)}" in container["args"]
