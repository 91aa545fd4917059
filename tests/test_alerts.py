"""Alert and recording rules under promtool: syntax of every rendered group, and a unit test per alert.

``tests/promtool/<AlertName>.yaml`` holds the unit tests of one alert, written
against the ``kga-prod`` release of :func:`monitoring_support.props`: it must
fire on a failing series exactly when its ``for:`` has elapsed, and stay silent
one evaluation earlier and on a healthy series.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ROOT
from monitoring_support import build, env_props, promtool, props
from test_dashboards import ALLOWED as EXPORTER_METRICS_ALLOWED
from test_dashboards import metric_names

from kgstack.environment import Environment
from kgstack.monitoring import alerts, recording_rules

UNIT_TESTS = ROOT / "tests" / "promtool"
RUNBOOKS = ROOT / "docs" / "runbooks"
ALERTS = sorted(a.name for a in alerts(props()))


def rule_file(prometheus_rule: dict[str, Any], folder: Path) -> Path:
    path = folder / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": prometheus_rule["spec"]["groups"]}, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def canonical_rules(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The kga-prod rules without annotations: promtool compares annotations too, and the
    unit tests are about when an alert fires (``check rules`` parses the templates)."""
    _, _, objects = build(props())
    rule = objects["PrometheusRule/kga-prod"]
    for group in rule["spec"]["groups"]:
        for r in group["rules"]:
            r.pop("annotations", None)
    return rule_file(rule, tmp_path_factory.mktemp("rules"))


def _variants(environments: dict[str, Environment]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for name, env in environments.items():
        _, _, objects = build(env_props(env))
        out += [(f"{name}/{key}", obj) for key, obj in objects.items() if obj["kind"] == "PrometheusRule"]
    for chroma in (False, True):
        for memgraph in (False, True):
            _, _, objects = build(props(chroma=chroma, memgraph=memgraph))
            out.append((f"chroma={chroma},memgraph={memgraph}", objects["PrometheusRule/kga-prod"]))
    return out


def test_promtool_check_rules_on_every_rendered_group(
    environments: dict[str, Environment], manifests: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    tool = promtool()
    rendered = _variants(environments)
    # Once AgentStack wires Monitoring in, the real dist objects are checked too.
    rendered += [
        (f"dist/{env}/{key}", obj)
        for env, objs in manifests.items()
        for key, obj in objs.items()
        if obj["kind"] == "PrometheusRule"
    ]
    for label, obj in rendered:
        folder = tmp_path / re.sub(r"[^a-zA-Z0-9_.-]", "_", label)
        folder.mkdir()
        result = subprocess.run([tool, "check", "rules", str(rule_file(obj, folder))], capture_output=True, text=True)
        assert result.returncode == 0, f"{label}:\n{result.stdout}{result.stderr}"
        assert "SUCCESS" in result.stdout


@pytest.mark.parametrize("alert", ALERTS)
def test_promtool_unit_tests(alert: str, canonical_rules: Path, tmp_path: Path) -> None:
    tool = promtool()
    shutil.copy(canonical_rules, tmp_path / "rules.yaml")
    shutil.copy(UNIT_TESTS / f"{alert}.yaml", tmp_path / f"{alert}.yaml")
    result = subprocess.run([tool, "test", "rules", f"{alert}.yaml"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _minutes(duration: str) -> float:
    units = {"s": 1 / 60, "m": 1, "h": 60, "d": 1440}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)([smhd])", duration))


def test_every_alert_has_a_unit_test_at_its_for_boundary_and_a_runbook() -> None:
    rules = {a.name: a for a in alerts(props())}
    files = {p.stem for p in UNIT_TESTS.glob("*.yaml")}
    assert files == set(rules), f"missing: {set(rules) - files}; stale: {files - set(rules)}"
    for name, alert in rules.items():
        doc = yaml.safe_load((UNIT_TESTS / f"{name}.yaml").read_text())
        assert doc["rule_files"] == ["rules.yaml"], name
        fired, healthy = False, False
        for case in doc["tests"]:
            checks = [c for c in case.get("alert_rule_test", []) if c["alertname"] == name]
            firing = [_minutes(c["eval_time"]) for c in checks if c["exp_alerts"]]
            silent = [_minutes(c["eval_time"]) for c in checks if not c["exp_alerts"]]
            if firing:
                first = min(firing)
                # Silent one evaluation before it fires, and it fires no earlier than its for:.
                assert first - 1 in silent, f"{name}: no silent check at {first - 1}m in {case['name']!r}"
                assert first >= _minutes(alert.for_), f"{name}: fires at {first}m, before for: {alert.for_}"
                fired = True
            elif silent:
                healthy = True
        assert fired and healthy, f"{name}: needs a failing case and a healthy case"
        runbook = RUNBOOKS / f"{name}.md"
        assert runbook.exists(), f"missing runbook {runbook.relative_to(ROOT)}"
        text = runbook.read_text()
        assert text.startswith(f"# {name}"), runbook
        assert "## Check" in text and "## Act" in text, runbook


def test_every_alert_has_severity_summary_description_and_runbook_url() -> None:
    _, _, objects = build(props())
    rules = [r for g in objects["PrometheusRule/kga-prod"]["spec"]["groups"] for r in g["rules"] if "alert" in r]
    assert sorted(r["alert"] for r in rules) == ALERTS
    for rule in rules:
        assert rule["labels"]["severity"] in {"critical", "warning"}
        assert rule["labels"]["namespace"] == "kga-prod"  # AlertmanagerConfig only routes its namespace
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        assert rule["annotations"]["runbook_url"] == (
            f"https://github.com/acme/kga-deploy/blob/main/docs/runbooks/{rule['alert']}.md"
        )


def test_meta_test_notices_a_missing_unit_test(tmp_path: Path) -> None:
    names = {a.name for a in alerts(props())} | {"KgaNewAlert"}
    assert names - {p.stem for p in UNIT_TESTS.glob("*.yaml")} == {"KgaNewAlert"}


# Read by alerts only, beyond the dashboards' metrics: Envoy's per-cluster request counter (present from the
# cluster's creation), kube-state-metrics' Job start time and active pods (kubernetes-mixin's
# KubeJobNotCompleted reads the same pair), and the ingress-nginx controller's reload gauge.
ALERT_METRICS = {
    "envoy_cluster_upstream_rq_total",
    "kube_job_status_start_time",
    "kube_job_status_active",
    "nginx_ingress_controller_config_last_reload_successful",
}


@pytest.mark.parametrize("controller", ["gateway-api", "ingress-nginx"])
def test_every_rule_names_only_recorded_or_documented_metrics(controller: str) -> None:
    p = props(edge_controller=controller)
    recorded = {r.record for r in recording_rules(p)}
    for expr in [r.expr for r in recording_rules(p)] + [a.expr for a in alerts(p)]:
        unknown = metric_names(expr) - recorded - EXPORTER_METRICS_ALLOWED - ALERT_METRICS
        assert not unknown, f"{expr}: unknown metrics {unknown}"
