"""Monitoring: typed settings, every custom resource strictly valid, targeted shape checks."""

from __future__ import annotations

import re
from typing import Any

import pytest
from cloudcoil.models.prometheus_operator import v1, v1alpha1
from conftest import env_data
from monitoring_support import build, env_props, props
from pydantic import BaseModel, ValidationError

from kgstack.environment import Environment, EnvironmentFileError, parse_environment
from kgstack.monitoring import MonitoringSettings, Receivers, alerts, recording_rules

MODELS: dict[str, type[BaseModel]] = {
    "ServiceMonitor": v1.ServiceMonitor,
    "Probe": v1.Probe,
    "PrometheusRule": v1.PrometheusRule,
    "AlertmanagerConfig": v1alpha1.AlertmanagerConfig,
}
SELECTOR = {"release": "kube-prometheus-stack"}


def custom(objects: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects.values() if o["kind"] in MODELS]


@pytest.mark.parametrize("chroma", [False, True])
@pytest.mark.parametrize("memgraph", [False, True])
def test_every_custom_resource_is_strictly_valid(chroma: bool, memgraph: bool) -> None:
    _, _, objects = build(props(chroma=chroma, memgraph=memgraph))
    resources = custom(objects)
    assert len(resources) >= 5
    for obj in resources:
        # extra="forbid" applies to every nested model: a misspelt field anywhere fails.
        MODELS[obj["kind"]].model_validate(obj, extra="forbid")


def test_strict_validation_catches_a_misspelt_field() -> None:
    _, _, objects = build(props())
    monitor = objects["ServiceMonitor/kga-prod-redis"]
    monitor["spec"]["endpoints"][0]["intervall"] = "30s"
    with pytest.raises(ValidationError, match="intervall"):
        v1.ServiceMonitor.model_validate(monitor, extra="forbid")


def test_environments_render(environments: dict[str, Environment]) -> None:
    for env in environments.values():
        _, _, objects = build(env_props(env))
        for obj in custom(objects):
            MODELS[obj["kind"]].model_validate(obj, extra="forbid")
            assert obj["metadata"]["namespace"] == env.namespace
        assert f"PrometheusRule/{env.instance}" in objects
        assert (f"Probe/{env.instance}-chroma" in objects) == (env.agent.vector_store.type == "chroma")
        assert (f"Probe/{env.instance}-memgraph" in objects) == env.agent.graph.enabled


def test_objects_carry_the_release_labels_and_the_prometheus_selector() -> None:
    _, _, objects = build(props())
    for obj in custom(objects):
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == "kga-prod"
        assert labels["app.kubernetes.io/component"] == "monitoring"
        assert labels.items() >= SELECTOR.items()


def test_redis_exporter_is_scraped_through_its_service() -> None:
    _, _, objects = build(props())
    spec = objects["ServiceMonitor/kga-prod-redis"]["spec"]
    assert spec["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "kga",
        "app.kubernetes.io/instance": "kga-prod",
        "app.kubernetes.io/component": "redis",
    }
    assert spec["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "30s"}]
    # The agent tiers' runtime ports are scraped the same way (tests/test_agent_tier.py).


@pytest.mark.parametrize(
    ("component", "target", "module"),
    [
        ("query", "http://kga-prod-query.kga-prod.svc:8000/health", "http_2xx"),
        ("indexer", "http://kga-prod-indexer.kga-prod.svc:8000/health", "http_2xx"),
        ("chroma", "http://kga-prod-chroma.kga-prod.svc:8000/api/v2/heartbeat", "http_2xx"),
        ("memgraph", "kga-prod-memgraph.kga-prod.svc:7687", "tcp_connect"),
    ],
)
def test_probes(component: str, target: str, module: str) -> None:
    _, _, objects = build(props())
    spec = objects[f"Probe/kga-prod-{component}"]["spec"]
    assert spec["prober"]["url"] == "blackbox-exporter.monitoring.svc:9115"
    assert spec["module"] == module
    assert spec["targets"]["staticConfig"] == {
        "static": [target],
        "labels": {"namespace": "kga-prod", "component": component},
    }
    assert "/api/v1/health" not in str(spec)  # always 200: never a health signal


def test_slis_read_envoy_clusters_of_our_agent_routes() -> None:
    """The SLOs count the query tier's routes; the indexer's have their own series (issue 16, item 7)."""
    ours = 'envoy_cluster_name=~"httproute/kga-prod/kga-prod-(api|api-reads)/rule/[0-9]+"'
    indexer = 'envoy_cluster_name=~"httproute/kga-prod/kga-prod-indexer/rule/[0-9]+"'
    slis = [r.expr for r in recording_rules(props()) if "envoy_" in r.expr and "indexer" not in r.record]
    assert slis and "nginx_ingress_controller" not in " ".join(r.expr for r in recording_rules(props()))
    for expr in slis:
        assert expr.count(ours) == expr.count("envoy_cluster_upstream_rq"), expr
    own = [r.expr for r in recording_rules(props()) if "envoy_" in r.expr and "indexer" in r.record]
    assert own and all(expr.count(indexer) == expr.count("envoy_cluster_upstream_rq") for expr in own), own
    rules = {r.record: r.expr for r in recording_rules(props())}
    assert 'envoy_response_code_class="5"' in rules["kga:edge_errors:rate5m"]
    # Envoy's histogram is in milliseconds: the 10 s threshold is le="10000".
    assert 'le=~"10000(\\\\.0)?"' in rules["kga:slo_latency_slow:ratio_rate5m"]
    single = " ".join(r.expr for r in recording_rules(props(edge_routes=("api",))))
    assert 'envoy_cluster_name=~"httproute/kga-prod/kga-prod-api/rule/[0-9]+"' in single


def test_slis_on_the_legacy_ingress_nginx_edge() -> None:
    legacy = props(edge_controller="ingress-nginx", edge_routes=("api", "indexer"), indexer_routes=())
    for rule in recording_rules(legacy):
        if "nginx_ingress_controller" in rule.expr:
            assert rule.expr.count(
                'exported_namespace="kga-prod",ingress=~"kga-prod-(api|indexer)"'
            ) == rule.expr.count("nginx_ingress_controller"), rule
    assert "envoy_" not in " ".join(r.expr for r in recording_rules(legacy))
    honoured = props(
        edge_controller="ingress-nginx",
        edge_routes=("api", "indexer"),
        indexer_routes=(),
        settings=MonitoringSettings(edge_namespace_label="namespace"),
    )
    exprs = " ".join(r.expr for r in recording_rules(honoured))
    assert "exported_namespace" not in exprs and 'namespace="kga-prod",ingress=~"kga-prod-(api|indexer)"' in exprs


def test_alerts_on_recorded_slis_share_their_group() -> None:
    """Groups run concurrently: an alert on a kga: series in another group reads a stale value."""
    _, _, objects = build(props())
    groups = objects["PrometheusRule/kga-prod"]["spec"]["groups"]
    for group in groups:
        recorded_before: set[str] = set()
        for rule in group["rules"]:
            if "record" in rule:
                recorded_before.add(rule["record"])
                continue
            for name in re.findall(r"kga:[a-z_:0-9]+", rule["expr"]):
                assert name in recorded_before, f"{rule['alert']} reads {name} outside its recording group"


def test_burn_rate_thresholds_follow_the_slo() -> None:
    by_name = {a.name: a for a in alerts(props(settings=MonitoringSettings(slo_availability=0.999)))}
    critical = by_name["KgaAvailabilityBurnRateCritical"].expr
    assert "ratio_rate1h" in critical and "> 0.0144" in critical and "> 0.006" in critical
    warning = by_name["KgaAvailabilityBurnRateWarning"].expr
    assert "ratio_rate1d" in warning and "> 0.003" in warning and "ratio_rate3d" in warning


def test_latency_threshold_must_be_a_bucket() -> None:
    with pytest.raises(ValidationError, match="must be one of the edge's buckets"):
        MonitoringSettings(slo_latency_seconds=7)
    ok = MonitoringSettings(slo_latency_seconds=30, edge_latency_buckets=(1, 10, 30, 60))
    rules = {r.record: r.expr for r in recording_rules(props(settings=ok))}
    assert 'le=~"30000(\\\\.0)?"' in rules["kga:slo_latency_slow:ratio_rate5m"]


def test_settings_are_camel_case_and_strict() -> None:
    settings = MonitoringSettings.model_validate(
        {
            "prometheusSelector": {"prometheus": "main"},
            "sloAvailability": 0.999,
            "receivers": {"paging": None, "chat": {"webhookUrl": {"name": "alerts", "key": "url"}}},
            "runbookBaseUrl": "https://wiki.example.com/runbooks",
        }
    )
    assert settings.receivers.paging is None
    with pytest.raises(ValidationError, match="extra"):
        MonitoringSettings.model_validate({"sloAvailabilty": 0.99})
    with pytest.raises(ValidationError):
        MonitoringSettings.model_validate({"runbookBaseUrl": "http://insecure/"})


def test_alertmanager_routes_critical_to_paging_and_warning_to_chat() -> None:
    _, _, objects = build(props())
    spec = objects["AlertmanagerConfig/kga-prod"]["spec"]
    pager, chat = spec["receivers"]
    assert pager["pagerdutyConfigs"][0]["routingKey"] == {"name": "kga-alerting", "key": "pagerduty-routing-key"}
    assert chat["slackConfigs"][0]["apiURL"] == {"name": "kga-alerting", "key": "slack-webhook-url"}
    critical, rest = spec["route"]["routes"]
    assert critical["receiver"] == "pager" and critical["continue"] is True
    assert critical["matchers"] == [{"name": "severity", "value": "critical", "matchType": "="}]
    assert rest["receiver"] == "chat"
    assert rest["matchers"] == [{"name": "severity", "value": "critical|warning", "matchType": "=~"}]


def test_without_paging_critical_goes_to_chat() -> None:
    settings = MonitoringSettings(receivers=Receivers(paging=None))
    _, _, objects = build(props(settings=settings))
    spec = objects["AlertmanagerConfig/kga-prod"]["spec"]
    assert [r["name"] for r in spec["receivers"]] == ["chat"]
    assert [r["receiver"] for r in spec["route"]["routes"]] == ["chat"]


def test_no_secret_values_rendered() -> None:
    _, _, objects = build(props())
    text = str(objects)
    assert "hooks.slack.com" not in text and "routing_key:" not in text


def test_staging_pages_nobody_unless_it_asks(manifests: dict[str, dict[str, Any]]) -> None:
    """Issue 25: staging routed critical alerts to PagerDuty because it never unset the paging receiver.
    Paging is now explicit: prod sets it, dev and staging leave it out."""

    def pagers(env: str) -> list[str]:
        spec = manifests[env][f"AlertmanagerConfig/kga-{env}"]["spec"]
        return [r["name"] for r in spec["receivers"] if "pagerdutyConfigs" in r]

    assert pagers("staging") == [] and pagers("dev") == []
    assert pagers("prod") == ["pager"]
    assert MonitoringSettings().receivers.paging is None


def test_prod_must_page_someone() -> None:
    data = env_data("prod")
    del data["monitoring"]["receivers"]["paging"]
    with pytest.raises(EnvironmentFileError, match=r"prod.yaml: monitoring.receivers.paging: required in stage prod"):
        parse_environment(data, source="prod.yaml")
    asked = env_data("staging", monitoring__receivers__paging={"routingKey": {"name": "alerts", "key": "pd"}})
    assert parse_environment(asked, source="staging.yaml").monitoring.receivers.paging is not None


def test_burn_rate_alerts_need_enough_requests_in_the_long_window() -> None:
    settings = MonitoringSettings(burn_rate_min_requests=250)
    critical = {a.name: a for a in alerts(props(settings=settings))}["KgaAvailabilityBurnRateCritical"].expr
    assert 'kga:edge_requests:rate1h{namespace="kga-prod"} * 3600 >= 250' in critical
    assert 'kga:edge_requests:rate6h{namespace="kga-prod"} * 21600 >= 250' in critical


def test_the_indexer_cannot_be_both_in_and_out_of_the_slis() -> None:
    with pytest.raises(ValidationError, match="edgeRoutes: indexer is an indexer route"):
        props(edge_routes=("api", "indexer"))
