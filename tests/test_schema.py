"""kgstack.schema: custom resources are validated strictly against their vendored CRDs."""

from __future__ import annotations

import copy
from typing import Any

import yaml
from conftest import ROOT, kubernetes_yaml

from kgstack.schema import crd_kinds, schema_problems, strict


def load(path: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / path).read_text())  # type: ignore[no-any-return]


def test_every_custom_resource_in_dist_passes_its_crd() -> None:
    customs = [p for p in kubernetes_yaml() if "." in load(str(p))["apiVersion"].split("/")[0]]
    checked = [p for p in customs if p.name != "kustomization.yaml"]
    assert len(checked) >= 20
    assert [problem for p in checked for problem in schema_problems(load(str(p)), "1.33")] == []


def test_an_unknown_field_in_a_custom_resource_is_rejected() -> None:
    secret = load("dist/prod/externalsecret-kga-agent.yaml")
    secret["spec"]["refreshIntervl"] = "1h"
    (problem,) = schema_problems(secret, "1.33")
    assert problem.startswith("ExternalSecret/kga-agent.spec:") and "'refreshIntervl' was unexpected" in problem


def test_a_wrong_type_deep_in_a_custom_resource_is_rejected() -> None:
    rule = load("dist/prod/prometheusrule-kga-prod.yaml")
    rule["spec"]["groups"][0]["rules"][0]["for"] = 300
    (problem,) = schema_problems(rule, "1.33")
    assert ".spec.groups[0].rules[0].for" in problem and "is not of type 'string'" in problem


def test_an_unserved_version_is_rejected() -> None:
    app = load("dist/argocd/prod-eks/application-kga-prod.yaml")
    app["apiVersion"] = "argoproj.io/v1beta1"
    assert schema_problems(app, "1.33") == [
        "Application/kga-prod: argoproj.io/v1beta1 is not served by the Application.argoproj.io CRD"
    ]


def test_a_kind_without_a_vendored_crd_is_rejected() -> None:
    obj = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    (problem,) = schema_problems(obj, "1.33")
    assert "no vendored CRD for Widget.example.com" in problem


def test_strict_closes_listed_properties_but_keeps_maps_and_preserved_fields() -> None:
    schema = {
        "type": "object",
        "properties": {
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "raw": {"type": "object", "x-kubernetes-preserve-unknown-fields": True, "properties": {"a": {}}},
        },
    }
    before = copy.deepcopy(schema)
    closed = strict(schema)
    assert schema == before, "the cached CRD is not mutated"
    assert closed["additionalProperties"] is False
    assert closed["properties"]["labels"]["additionalProperties"] == {"type": "string"}
    assert "additionalProperties" not in closed["properties"]["raw"]


def test_the_gateway_api_and_envoy_gateway_kinds_are_vendored() -> None:
    assert {
        ("gateway.networking.k8s.io", "HTTPRoute"),
        ("gateway.networking.k8s.io", "Gateway"),
        ("gateway.networking.k8s.io", "BackendTLSPolicy"),
        ("gateway.networking.k8s.io", "ReferenceGrant"),
        ("gateway.envoyproxy.io", "SecurityPolicy"),
        ("gateway.envoyproxy.io", "BackendTrafficPolicy"),
        ("gateway.envoyproxy.io", "ClientTrafficPolicy"),
        ("gateway.envoyproxy.io", "EnvoyProxy"),
    } <= crd_kinds()


def test_a_gateway_api_route_is_validated_against_its_crd() -> None:
    route = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "api", "namespace": "kga-dev"},
        "spec": {"parentRefs": [{"name": "edge"}], "hostnames": ["kga.example.com"], "rulez": []},
    }
    (problem,) = schema_problems(route, "1.33")
    assert "'rulez' was unexpected" in problem
    del route["spec"]["rulez"]
    assert schema_problems(route, "1.33") == []
