"""WebUi: hardened unprivileged nginx, config.js from a ConfigMap, Service and PDB."""

from __future__ import annotations

from typing import Any

import cdk8s
from pss import pod_specs, violations

from kgstack.model import ImageRef
from kgstack.naming import Identity
from kgstack.publish import manifests
from kgstack.schema import schema_problems
from kgstack.web_ui import WebUi, WebUiProps

IDENTITY = Identity(name="kga", instance="kga-dev", version="0.3.0", component="web")
IMAGE = ImageRef(repository="ghcr.io/acme/kga-web", tag="0.3.0")


def render() -> dict[str, dict[str, Any]]:
    chart = cdk8s.Chart(cdk8s.App(), "dev", disable_resource_name_hashes=True)
    WebUi(
        chart,
        "Web",
        props=WebUiProps(
            identity=IDENTITY, namespace="kga-dev", image=IMAGE, api_base_url="https://kga.dev.example.com/api/v1"
        ),
    )
    return {f"{o['kind']}/{o['metadata']['name']}": o for o in manifests(chart).values()}


def test_objects_and_schema() -> None:
    objects = render()
    assert set(objects) == {
        "ConfigMap/kga-dev-web",
        "Deployment/kga-dev-web",
        "Service/kga-dev-web",
        "PodDisruptionBudget/kga-dev-web",
    }
    for version in ("1.27", "1.35"):
        assert [p for o in objects.values() for p in schema_problems(o, version)] == []


def test_config_js_sets_the_same_origin_api() -> None:
    objects = render()
    assert objects["ConfigMap/kga-dev-web"]["data"] == {
        "config.js": 'window.API_BASE_URL = "https://kga.dev.example.com/api/v1";\n'
    }
    spec = objects["Deployment/kga-dev-web"]["spec"]["template"]["spec"]
    mount = next(m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "config")
    assert mount == {
        "name": "config",
        "mountPath": "/usr/share/nginx/html/config.js",
        "subPath": "config.js",
        "readOnly": True,
    }
    assert "checksum/config" in objects["Deployment/kga-dev-web"]["spec"]["template"]["metadata"]["annotations"]


def test_restricted_read_only_and_writable_dirs() -> None:
    deployment = render()["Deployment/kga-dev-web"]
    for pod in pod_specs(deployment):
        assert violations(pod) == []
        (container,) = pod["containers"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/tmp", "/var/cache/nginx"}
        assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
        assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert pod["automountServiceAccountToken"] is False


def test_service_port() -> None:
    svc = render()["Service/kga-dev-web"]
    assert svc["spec"]["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP", "targetPort": "http"}]
    assert svc["spec"]["selector"]["app.kubernetes.io/component"] == "web"
