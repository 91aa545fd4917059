"""The cross-reference gate on every dist/<env>/, and on mutated copies: each defect it exists for fails it.

The gate reads the rendered objects only. The mutations below put back, one at
a time, what dist/ looked like before issue 9, and each must be reported with
the file and the field.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
import yaml
from conftest import ENV_DIRS, ROOT, build, env_data

from kgstack import cross_reference
from kgstack.cross_reference import Peer
from kgstack.edge import EdgeSettings, edge_peer
from kgstack.environment import parse_environment
from kgstack.publish import synth_objects

Objects = dict[str, dict[str, Any]]
PROMETHEUS = Peer("monitoring", {"app.kubernetes.io/name": "prometheus"})
BLACKBOX = Peer("monitoring", {"app.kubernetes.io/name": "prometheus-blackbox-exporter"})
_DATA_PLANE = edge_peer(EdgeSettings())
EDGE = Peer(_DATA_PLANE.namespace, _DATA_PLANE.pod_labels)
"""The gateway's data-plane pods: where every environment's edge traffic comes from."""


def dist(env: str) -> Objects:
    return {
        p.name: yaml.safe_load(p.read_text())
        for p in sorted((ROOT / "dist" / env).glob("*.yaml"))
        if p.name != "kustomization.yaml"
    }


def prerequisites(env: str) -> dict[str, frozenset[str]]:
    """Read back from the generated docs/environments/<env>/secrets.md: what an operator is told to create."""
    page = (ROOT / "docs" / "environments" / env / "secrets.md").read_text()
    out: dict[str, frozenset[str]] = {}
    for line in page.splitlines():
        match = re.match(r"^kubectl -n \S+ create secret (?:generic|docker-registry) (\S+) (.*?) --dry-run", line)
        if match:
            out[match[1]] = frozenset(re.findall(r"--from-file=([^=]+)=", match[2]))
    return out


def gate(env: str, objects: Objects) -> list[str]:
    namespace = next(o["metadata"]["name"] for o in objects.values() if o["kind"] == "Namespace")
    return cross_reference.Gate(
        objects, namespace=namespace, prerequisites=prerequisites(env), scraper=PROMETHEUS, prober=BLACKBOX, edge=EDGE
    ).problems()


@pytest.mark.parametrize("env", ENV_DIRS)
def test_dist_passes_the_gate(env: str) -> None:
    assert gate(env, dist(env)) == []


def test_dev_docs_create_every_secret_the_pods_read() -> None:
    """Issue 9 defect 10: dev backups mounted kga-backup, which the dev set-up never created."""
    assert prerequisites("dev")["kga-backup"] == {"credentials"}
    assert prerequisites("staging") == {} and prerequisites("prod") == {}
    objects = dist("dev")
    assert gate("dev", objects) == []
    # Without the page's list, every hand-made Secret is reported against the pods that read it.
    namespace = "kga-dev"
    problems = cross_reference.Gate(
        objects, namespace=namespace, scraper=PROMETHEUS, prober=BLACKBOX, edge=EDGE
    ).problems()
    assert reported(
        problems,
        "cronjob-kga-dev-backup-redis.yaml: spec.jobTemplate.spec.template.spec.volumes",
        "Secret kga-backup is neither rendered, produced nor a documented prerequisite",
    )


def reported(problems: list[str], where: str, *fragments: str) -> bool:
    """Whether one problem starts at ``where`` (file: field path) and says every fragment."""
    found = any(p.startswith(where) and all(f in p for f in fragments) for p in problems)
    assert found, problems  # the failure shows what was reported instead
    return found


def _mutate(env: str) -> Objects:
    return copy.deepcopy(dist(env))


def test_alert_receivers_need_their_secret() -> None:
    """Issue 9 defect 2: the AlertmanagerConfig read Secret kga-alerting that nobody made."""
    objects = _mutate("prod")
    del objects["externalsecret-kga-alerting.yaml"]
    problems = gate("prod", objects)
    assert (
        "alertmanagerconfig-kga-prod.yaml: spec.receivers[0].pagerdutyConfigs[0].routingKey: Secret kga-alerting"
        in (" ".join(problems))
    ), problems


def test_an_optional_key_is_not_required_from_the_store() -> None:
    """Issue 9 defect 3: EMBEDDING_API_KEY was required data although every pod marks it optional."""
    objects = _mutate("prod")
    es = objects["externalsecret-kga-agent.yaml"]
    es["spec"]["data"].append(
        {"secretKey": "EMBEDDING_API_KEY", "remoteRef": {"key": "kga/prod/agent", "property": "EMBEDDING_API_KEY"}}
    )
    problems = gate("prod", objects)
    assert reported(
        problems,
        "externalsecret-kga-agent.yaml: spec.data[2]: key 'EMBEDDING_API_KEY'",
        "every consumer marks it optional",
    )
    pods = [o for o in objects.values() if o["kind"] == "Deployment" and "query" in o["metadata"]["name"]]
    env = pods[0]["spec"]["template"]["spec"]["containers"][0]["env"]
    ref = {"name": "kga-agent", "key": "EMBEDDING_API_KEY", "optional": True}
    assert {"name": "EMBEDDING_API_KEY", "valueFrom": {"secretKeyRef": ref}} in env


def test_a_probe_the_policies_block_fails() -> None:
    """Issue 9 defect 4: the Memgraph probe on 7687 from monitoring was denied."""
    objects = _mutate("staging")
    policy = objects["networkpolicy-kga-staging-memgraph.yaml"]
    policy["spec"]["ingress"] = [
        rule for rule in policy["spec"]["ingress"] if "namespaceSelector" not in rule["from"][0]
    ]
    problems = gate("staging", objects)
    assert reported(
        problems,
        "probe-kga-staging-memgraph.yaml: spec.targets.staticConfig.static[0]: blackbox probe",
        "deny namespace monitoring",
        "7687",
    )


def test_a_shared_workload_identity_fails() -> None:
    """Issue 9 defect 7: the agent's ServiceAccount carried the backup role."""
    objects = _mutate("prod")
    role = objects["serviceaccount-kga-prod-backup.yaml"]["metadata"]["annotations"]
    objects["serviceaccount-kga-prod-agent.yaml"]["metadata"]["annotations"] = dict(role)
    problems = gate("prod", objects)
    assert any("shares workload identity" in p for p in problems), problems


def test_a_missing_key_or_secret_fails() -> None:
    objects = _mutate("staging")
    redis = objects["externalsecret-kga-redis.yaml"]
    redis["spec"]["data"] = [d for d in redis["spec"]["data"] if d["secretKey"] != "exporter-password"]
    problems = gate("staging", objects)
    assert any("has no key 'exporter-password'" in p for p in problems), problems


def test_services_budgets_and_autoscalers_must_resolve() -> None:
    objects = _mutate("prod")
    objects["service-kga-prod-query.yaml"]["spec"]["ports"][0]["targetPort"] = "metrics"
    web_budget = objects["poddisruptionbudget-kga-prod-web.yaml"]["spec"]["selector"]["matchLabels"]
    web_budget["app.kubernetes.io/component"] = "webb"
    objects["horizontalpodautoscaler-kga-prod-query.yaml"]["spec"]["scaleTargetRef"]["name"] = "kga-prod-qeury"
    problems = " ".join(gate("prod", objects))
    assert (
        "service-kga-prod-query.yaml: spec.ports[0].targetPort: no selected container declares port 'metrics'"
        in problems
    )
    assert "poddisruptionbudget-kga-prod-web.yaml: spec.selector" in problems
    assert "Deployment kga-prod-qeury does not exist" in problems


def test_a_url_templated_into_a_secret_must_reach_its_service() -> None:
    objects = _mutate("prod")
    template = objects["externalsecret-kga-redis.yaml"]["spec"]["target"]["template"]
    template["data"]["url"] = template["data"]["url"].replace(":6379/", ":6380/")
    problems = gate("prod", objects)
    assert reported(
        problems,
        "deployment-kga-prod-query.yaml: spec.template.spec.containers[0].env[",
        "REDIS_URL (templated into Secret kga-redis key 'url'): kga-prod-redis:6380 is not a port of a Service",
    )


def test_a_url_the_policies_block_fails() -> None:
    objects = _mutate("staging")
    policy = objects["networkpolicy-kga-staging-chroma.yaml"]
    policy["spec"]["ingress"] = [
        r for r in policy["spec"]["ingress"] if "namespaceSelector" in r["from"][0]
    ]  # only the probe is left
    problems = gate("staging", objects)
    denied = "[CHROMA_HOST]: CHROMA_HOST: the NetworkPolicies deny deployment-kga-staging-query.yaml"
    assert any(denied in p for p in problems), problems


def test_the_verifier_the_data_plane_calls_must_be_a_service_port() -> None:
    objects = _mutate("prod")
    objects["securitypolicy-kga-prod-api.yaml"]["spec"]["extAuth"]["http"]["backendRefs"][0]["port"] = 9999
    assert reported(
        gate("prod", objects),
        "securitypolicy-kga-prod-api.yaml: spec.extAuth.http.backendRefs[0]",
        "external auth: kga-prod-auth:9999 is not a port of a Service",
    )


def test_the_verifier_ingress_nginx_calls_must_be_a_service_port() -> None:
    env = parse_environment(env_data("prod", edge__sideBySideIngressNginx=True), source="prod.yaml")
    _, stack = build(env)
    objects = synth_objects([stack])["prod"]
    annotations = objects["ingress-kga-prod-api.yaml"]["metadata"]["annotations"]
    annotations[cross_reference.AUTH_URL] = annotations[cross_reference.AUTH_URL].replace(":8080/", ":9999/")
    assert reported(
        gate("prod", objects),
        f"ingress-kga-prod-api.yaml: metadata.annotations[{cross_reference.AUTH_URL}]",
        "external auth: kga-prod-auth.kga-prod.svc.cluster.local:9999 is not a port of a Service",
    )


def test_a_policy_or_route_attached_to_nothing_fails() -> None:
    objects = _mutate("prod")
    objects["backendtrafficpolicy-kga-prod-api.yaml"]["spec"]["targetRefs"][0]["name"] = "kga-prod-nope"
    objects["httproute-kga-prod-web.yaml"]["spec"]["parentRefs"][0]["name"] = "kga-elsewhere"
    problems = gate("prod", objects)
    assert reported(
        problems, "backendtrafficpolicy-kga-prod-api.yaml: spec.targetRefs[0]", "HTTPRoute kga-prod-nope does not exist"
    )
    assert reported(problems, "httproute-kga-prod-web.yaml: spec.parentRefs[0]", "Gateway kga-elsewhere does not exist")


@pytest.mark.parametrize(("wave", "why"), [("0", "never binds"), ("3", "consumer's pods stay Pending")])
def test_a_claim_outside_its_consumers_wave_fails(wave: str, why: str) -> None:
    """Issue 24: the indexer's PVC was in wave 0 and the indexer in wave 2; under a WaitForFirstConsumer class
    the claim stays Pending (Progressing to Argo CD) and the first sync never leaves wave 0 (argo-cd #12840)."""
    objects = _mutate("prod")
    claim = objects["persistentvolumeclaim-kga-prod-indexer.yaml"]
    claim["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"] = wave
    assert reported(
        gate("prod", objects),
        "persistentvolumeclaim-kga-prod-indexer.yaml: metadata.annotations[argocd.argoproj.io/sync-wave]",
        f"PVC kga-prod-indexer is in sync wave {wave}, its first consumer Deployment kga-prod-indexer in wave 2",
        why,
    )
