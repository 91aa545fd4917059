"""Dashboards: sidecar ConfigMaps, valid JSON, and queries that only name metrics that exist."""

from __future__ import annotations

import json
import re

import pytest
from monitoring_support import build, env_props, props

from kgstack.dashboards import Dashboards
from kgstack.environment import Environment
from kgstack.monitoring import MonitoringSettings, recording_rules

# Metrics of the exporters docs/observability.md documents; anything else on a dashboard is a typo
# or an undocumented dependency.
EXPORTER_METRICS = {
    "envoy-gateway": {
        "envoy_cluster_upstream_rq_xx",
        "envoy_cluster_upstream_rq_time_bucket",
        "envoy_cluster_upstream_rq_time_count",
    },
    "ingress-nginx": {
        "nginx_ingress_controller_requests",
        "nginx_ingress_controller_request_duration_seconds_bucket",
        "nginx_ingress_controller_request_duration_seconds_count",
        "nginx_ingress_controller_request_duration_seconds_sum",
    },
    "kube-state-metrics": {
        "kube_pod_container_status_restarts_total",
        "kube_pod_container_status_waiting_reason",
        "kube_pod_container_resource_requests",
        "kube_pod_container_resource_limits",
        "kube_deployment_status_replicas_available",
        "kube_horizontalpodautoscaler_status_current_replicas",
        "kube_horizontalpodautoscaler_status_desired_replicas",
        "kube_horizontalpodautoscaler_spec_min_replicas",
        "kube_horizontalpodautoscaler_spec_max_replicas",
        "kube_cronjob_status_last_successful_time",
        "kube_cronjob_created",
        "kube_job_failed",
    },
    "kubelet": {"kubelet_volume_stats_available_bytes", "kubelet_volume_stats_capacity_bytes"},
    "cadvisor": {"container_cpu_usage_seconds_total", "container_memory_working_set_bytes"},
    "redis_exporter": {
        "redis_up",
        "redis_memory_used_bytes",
        "redis_memory_max_bytes",
        "redis_evicted_keys_total",
        "redis_keyspace_hits_total",
        "redis_keyspace_misses_total",
        "redis_connected_clients",
    },
    "blackbox": {"probe_success", "probe_duration_seconds", "probe_http_status_code"},
    "cert-manager": {"certmanager_certificate_expiration_timestamp_seconds"},
    "prometheus": {"up"},
}
ALLOWED = set().union(*EXPORTER_METRICS.values())
PROMQL_WORDS = {
    "sum",
    "rate",
    "increase",
    "histogram_quantile",
    "label_replace",
    "time",
    "by",
    "without",
    "on",
    "ignoring",
    "and",
    "or",
    "unless",
    "max",
    "min",
    "avg",
    "count",
    "max_over_time",
    "sum_over_time",
    "avg_over_time",
    "predict_linear",
    "vector",
    "bool",
    "group_left",
    "group_right",
    "topk",
    "clamp_min",
}


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers outside strings, selectors and grouping."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges, including $__rate_interval
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        word = match.group()
        following = text[match.end() :].lstrip()[:1]
        if word in PROMQL_WORDS or following == "(":
            continue
        names.add(word)
    return names


def test_metric_name_parser() -> None:
    expr = (
        'sum by (tier) (label_replace(rate(container_cpu_usage_seconds_total{pod=~"a-(b|c)-.+"}'
        '[$__rate_interval]), "tier", "$1", "pod", "x")) / on (namespace) kga:edge_requests:rate5m{a="b"}'
    )
    assert metric_names(expr) == {"container_cpu_usage_seconds_total", "kga:edge_requests:rate5m"}


@pytest.mark.parametrize("chroma", [False, True])
@pytest.mark.parametrize("memgraph", [False, True])
def test_every_query_names_only_recorded_or_documented_metrics(chroma: bool, memgraph: bool) -> None:
    p = props(chroma=chroma, memgraph=memgraph)
    _, dashboards, _ = build(p)
    recorded = {r.record for r in recording_rules(p)}
    queries = dashboards.queries()
    assert len(queries) >= 25
    for expr in queries:
        unknown = metric_names(expr) - recorded - ALLOWED
        assert not unknown, f"{expr}: unknown metrics {unknown}"
        assert "kga-prod" in expr or "$" in expr, f"{expr}: not scoped to the environment"


def test_panels_cover_the_required_signals() -> None:
    _, dashboards, _ = build(props())
    text = "\n".join(dashboards.queries())
    for needle in (
        "kga:edge_requests:rate5m",
        "kga:slo_availability_errors:ratio_rate5m",
        "histogram_quantile(0.5,",
        "histogram_quantile(0.95,",
        "histogram_quantile(0.99,",
        "kga:slo_availability:error_budget_remaining",
        "kga:slo_latency:error_budget_remaining",
        "kube_horizontalpodautoscaler_spec_max_replicas",
        "kube_horizontalpodautoscaler_spec_min_replicas",
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "kube_pod_container_resource_requests",
        "kube_pod_container_resource_limits",
        "redis_memory_used_bytes",
        'probe_success{namespace="kga-prod",component="chroma"}',
        "time() - kube_cronjob_status_last_successful_time",
    ):
        assert needle in text, needle


def test_configmaps_are_sidecar_dashboards() -> None:
    _, _, objects = build(props())
    maps = {k: v for k, v in objects.items() if v["kind"] == "ConfigMap"}
    assert set(maps) == {"ConfigMap/kga-prod-dashboard-overview", "ConfigMap/kga-prod-dashboard-resources"}
    for key, cm in maps.items():
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert cm["metadata"]["namespace"] == "kga-prod"
        ((file, body),) = cm["data"].items()
        assert file == key.split("/")[1] + ".json"
        board = json.loads(body)
        assert board["uid"] == key.split("/")[1].replace("dashboard-", "") and len(board["uid"]) <= 40
        assert board["templating"]["list"][0]["type"] == "datasource"
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)) and 0 not in ids
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


def test_dashboards_namespace_override() -> None:
    _, _, objects = build(props(settings=MonitoringSettings(dashboards_namespace="monitoring")))
    assert objects["ConfigMap/kga-prod-dashboard-overview"]["metadata"]["namespace"] == "monitoring"


def test_environments_render(environments: dict[str, Environment]) -> None:
    for env in environments.values():
        _, dashboards, _ = build(env_props(env))
        assert isinstance(dashboards, Dashboards)
        assert all(env.instance in q or "$" in q for q in dashboards.queries())
