"""Generated docs: the Mermaid architecture and the capacity table, from rendered objects."""

from __future__ import annotations

import random
from typing import Any

import pytest
import yaml
from conftest import ROOT

from kgstack.reports import architecture_mermaid, capacity_report, environment_docs, render_docs

NS = "kga-test"
SELECT_QUERY = {"app.kubernetes.io/component": "query"}


def meta(name: str, **labels: str) -> dict[str, Any]:
    return {"name": name, "namespace": NS, **({"labels": labels} if labels else {})}


def container(cpu: str, memory: str, limit_cpu: str, limit_memory: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": "c",
        "image": "x",
        "resources": {
            "requests": {"cpu": cpu, "memory": memory},
            "limits": {"cpu": limit_cpu, "memory": limit_memory},
        },
        **extra,
    }


def pod(labels: dict[str, str], *containers: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"metadata": {"labels": labels}, "spec": {"containers": list(containers), **spec}}


def fixture_objects() -> dict[str, dict[str, Any]]:
    """A small environment: query (HPA 2-4), indexer (PVC), chroma (StatefulSet), a backup CronJob."""
    objs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}},
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": meta(NS),
            "spec": {
                "hard": {
                    "requests.cpu": "10",
                    "limits.cpu": "20",
                    "requests.memory": "20Gi",
                    "limits.memory": "40Gi",
                    "requests.storage": "100Gi",
                    "persistentvolumeclaims": 10,
                    "pods": 20,
                }
            },
        },
        {
            "apiVersion": "v1",
            "kind": "LimitRange",
            "metadata": meta(NS),
            "spec": {
                "limits": [
                    {
                        "type": "Container",
                        "default": {"cpu": "200m", "memory": "256Mi"},
                        "defaultRequest": {"cpu": "100m", "memory": "128Mi"},
                    }
                ]
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta("query"),
            "spec": {
                "selector": {"matchLabels": SELECT_QUERY},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                "template": pod(SELECT_QUERY, container("500m", "1Gi", "1", "2Gi")),
            },
        },
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": meta("query"),
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "query"},
                "minReplicas": 2,
                "maxReplicas": 4,
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta("indexer"),
            "spec": {
                "replicas": 1,
                "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": {"app.kubernetes.io/component": "indexer"}},
                "template": pod(
                    {"app.kubernetes.io/component": "indexer"},
                    container("1", "2Gi", "2", "4Gi"),
                    # the init container is bigger than the app: it decides the pod's memory
                    initContainers=[container("100m", "3Gi", "100m", "5Gi")],
                    volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "indexer"}}],
                ),
            },
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": meta("indexer"),
            "spec": {"resources": {"requests": {"storage": "10Gi"}}},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": meta("chroma"),
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app.kubernetes.io/component": "chroma"}},
                "template": pod({"app.kubernetes.io/component": "chroma"}, {"name": "c", "image": "x"}),
                "volumeClaimTemplates": [
                    {"metadata": {"name": "data"}, "spec": {"resources": {"requests": {"storage": "20Gi"}}}}
                ],
            },
        },
        {
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": meta("backup"),
            "spec": {
                "schedule": "0 2 * * *",
                "jobTemplate": {
                    "spec": {
                        "template": pod(
                            {"app.kubernetes.io/component": "backup"}, container("250m", "512Mi", "500m", "1Gi")
                        )
                    }
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta("query"),
            "spec": {"selector": SELECT_QUERY, "ports": [{"port": 8000}]},
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta("chroma"),
            "spec": {"selector": {"app.kubernetes.io/component": "chroma"}, "ports": [{"port": 8000}]},
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": meta("web"),
            "spec": {
                "rules": [
                    {
                        "host": "kga.example.com",
                        "http": {
                            "paths": [
                                {
                                    "path": "/api",
                                    "pathType": "Prefix",
                                    "backend": {"service": {"name": "query", "port": {"number": 8000}}},
                                },
                            ]
                        },
                    }
                ],
            },
        },
    ]
    return {f"{o['kind'].lower()}-{o['metadata']['name']}.yaml": o for o in objs}


def network_policies() -> dict[str, dict[str, Any]]:
    policies = [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": meta("query"),
            "spec": {
                "podSelector": {"matchLabels": SELECT_QUERY},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [
                    {
                        "from": [
                            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
                        ],
                        "ports": [{"protocol": "TCP", "port": 8000}],
                    }
                ],
                "egress": [
                    {
                        "to": [
                            {
                                "podSelector": {
                                    "matchExpressions": [
                                        {"key": "app.kubernetes.io/component", "operator": "In", "values": ["chroma"]}
                                    ]
                                }
                            }
                        ],
                        "ports": [{"protocol": "TCP", "port": 8000}],
                    },
                    {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"protocol": "TCP", "port": 443}]},
                ],
            },
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": meta("default-deny"),
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
        },
    ]
    return {f"networkpolicy-{p['metadata']['name']}.yaml": p for p in policies}


# ---------------------------------------------------------------- architecture
def test_architecture_without_network_policies_shows_routing_only() -> None:
    chart = architecture_mermaid(fixture_objects())
    lines = chart.splitlines()
    assert lines[0] == "flowchart LR"
    assert '  subgraph ns["namespace kga-test"]' in lines
    assert '    deployment_query["Deployment query<br/>2-4 pods (HPA)"]' in lines
    assert '    statefulset_chroma["StatefulSet chroma<br/>2 pods"]' in lines
    assert '    cronjob_backup["CronJob backup<br/>schedule 0 2 * * *"]' in lines
    assert '    pvc_indexer[("PVC indexer")]' in lines
    assert "  svc_query --> deployment_query" in lines
    assert "  svc_chroma --> statefulset_chroma" in lines
    assert "  deployment_indexer --> pvc_indexer" in lines
    assert "  statefulset_chroma --> pvc_data_chroma__" in lines
    assert '  ext_clients -->|"HTTPS"| ing_web' in lines
    assert '  ing_web -->|"/api"| svc_query' in lines
    assert "-.->" not in chart  # no NetworkPolicy, no drawn flows


def test_architecture_draws_the_flows_network_policies_allow() -> None:
    chart = architecture_mermaid({**fixture_objects(), **network_policies()})
    lines = chart.splitlines()
    ingress_nginx = "ext_namespace_kubernetes_io_metadata_name_ingress_nginx"
    assert f'  {ingress_nginx}{{{{"namespace kubernetes.io/metadata.name=ingress-nginx"}}}}' in lines
    assert f'  {ingress_nginx} -.->|"TCP 8000"| deployment_query' in lines
    assert '  deployment_query -.->|"TCP 8000"| statefulset_chroma' in lines
    assert '  deployment_query -.->|"TCP 443"| ext_CIDR_0_0_0_0_0' in lines
    # the default-deny policy has no rules: it adds no flows
    assert sum("-.->" in line for line in lines) == 3
    # external peers are drawn outside the namespace box
    end = lines.index("  end")
    assert all(not line.startswith("    ext_") for line in lines[:end])


def test_architecture_is_deterministic() -> None:
    objects = {**fixture_objects(), **network_policies()}
    items = list(objects.items())
    random.Random(7).shuffle(items)
    assert architecture_mermaid(dict(items)) == architecture_mermaid(objects)


# ---------------------------------------------------------------- capacity
def rows(table: str) -> dict[str, list[str]]:
    out = {}
    for line in table.splitlines():
        if line.startswith("| ") and not line.startswith("| workload") and not line.startswith("| resource"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            out[cells[0]] = cells[1:]
    return out


def test_capacity_per_workload() -> None:
    table = rows(capacity_report(fixture_objects()))
    # pods min, max, surge, CPU, memory, storage
    assert table["Deployment/query"] == ["2", "4", "1", "500m / 1", "1Gi / 2Gi", "-"]
    # init container (3Gi/5Gi) outweighs the app container (2Gi/4Gi); Recreate has no surge
    assert table["Deployment/indexer"] == ["1", "1", "0", "1 / 2", "3Gi / 5Gi", "10Gi"]
    # no resources: the LimitRange defaults apply; one 20Gi claim per replica
    assert table["StatefulSet/chroma"] == ["2", "2", "0", "100m / 200m", "128Mi / 256Mi", "40Gi"]
    assert table["CronJob/backup"] == ["1", "1", "0", "250m / 500m", "512Mi / 1Gi", "-"]


def test_capacity_totals_against_the_quota() -> None:
    table = rows(capacity_report(fixture_objects()))
    # requests.cpu: min 2*500m + 1 + 2*100m + 250m = 2.45; max 4*500m + ... = 3.45; +1 surge pod = 3.95
    assert table["requests.cpu"] == ["2450m", "3450m", "3950m", "10", "60.5%"]
    assert table["limits.cpu"] == ["4900m", "6900m", "7900m", "20", "60.5%"]
    # memory: 2*1Gi + 3Gi + 2*128Mi + 512Mi = 5888Mi at min
    assert table["requests.memory"] == ["5888Mi", "7936Mi", "8960Mi", "20Gi", "56.3%"]
    assert table["limits.memory"] == ["10752Mi", "14848Mi", "16896Mi", "40Gi", "58.8%"]
    # 10Gi PVC + 2 x 20Gi claim templates
    assert table["requests.storage"] == ["50Gi", "50Gi", "50Gi", "100Gi", "50.0%"]
    assert table["persistentvolumeclaims"] == ["3", "3", "3", "10", "70.0%"]
    assert table["pods"] == ["6", "8", "9", "20", "55.0%"]
    assert "requests.ephemeral-storage" not in table


def test_capacity_flags_an_exceeded_or_missing_quota() -> None:
    objects = fixture_objects()
    objects["resourcequota-kga-test.yaml"]["spec"]["hard"]["pods"] = 8
    assert rows(capacity_report(objects))["pods"][-1] == "-12.5% (over quota)"
    del objects["resourcequota-kga-test.yaml"]
    assert rows(capacity_report(objects))["pods"][-2:] == ["-", "no quota"]


# ---------------------------------------------------------------- the real environments
def test_committed_network_and_secrets_pages(rendered: dict[str, dict[str, str]]) -> None:
    for env in rendered:
        folder = ROOT / "docs" / "environments" / env
        network = (folder / "network.md").read_text()
        assert "| backup-redis | redis | 6379 |" in network  # each backup run reaches its own store
        assert "| backup-redis | chroma |" not in network
        secrets = (folder / "secrets.md").read_text()
        assert "`kga-alerting`" in secrets and "`kga-redis`" in secrets


def test_reports_cover_every_environment(
    rendered: dict[str, dict[str, str]], manifests: dict[str, dict[str, dict[str, Any]]]
) -> None:
    docs = render_docs(manifests_by_file(rendered))
    assert sorted(docs) == sorted(rendered)
    for env, pages in docs.items():
        # network.md comes with the declared flows (app.py passes them); secrets.md always.
        assert sorted(pages) == ["architecture.md", "capacity.md", "secrets.md"]
        assert pages["architecture.md"].count("```mermaid\nflowchart LR\n") == 1
        workloads = [
            key for key, obj in manifests[env].items() if obj["kind"] in ("Deployment", "StatefulSet", "CronJob", "Job")
        ]
        assert workloads
        for key in workloads:
            kind, name = key.split("/")
            assert f"{kind} {name}<br/>" in pages["architecture.md"]
            assert f"| {key} |" in pages["capacity.md"]
        # synthesis refuses a quota that does not cover maximum scale: no negative headroom
        totals = rows(pages["capacity.md"])
        assert "over quota" not in pages["capacity.md"], pages["capacity.md"]
        assert totals["pods"][3] != "-"


@pytest.mark.parametrize("env", ["dev", "prod"])
def test_reports_are_deterministic_for_the_real_stack(
    manifests: dict[str, dict[str, dict[str, Any]]], env: str
) -> None:
    objects = manifests[env]
    reversed_objects = dict(reversed(list(objects.items())))
    assert environment_docs(env, reversed_objects) == environment_docs(env, objects)


def manifests_by_file(rendered: dict[str, dict[str, str]]) -> dict[str, dict[str, dict[str, Any]]]:
    return {
        env: {name: yaml.safe_load(text) for name, text in files.items() if name != "kustomization.yaml"}
        for env, files in rendered.items()
    }
