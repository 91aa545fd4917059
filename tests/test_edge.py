"""Edge (Gateway API + Envoy Gateway): routes, headers, timeouts, policies, certificate; the verifier in real nginx."""

from __future__ import annotations

import base64
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import cdk8s
import pytest
from cloudcoil.models.cert_manager import v1 as cert_manager
from pss import pod_specs, violations
from pydantic import ValidationError
from tools import free_port, require_tool

from kgstack.edge import (
    BLOCKED_PATHS,
    SECURITY_HEADERS,
    Edge,
    EdgeProps,
    EdgeSettings,
    auth_nginx_conf,
    content_security_policy,
    edge_peer,
    edge_peers,
)
from kgstack.model import ImageRef, Stage
from kgstack.naming import Identity
from kgstack.network_policies import NetworkSettings, StackComponents, stack_flows
from kgstack.publish import manifests
from kgstack.schema import schema_problems

RELEASE = Identity(name="kga", instance="kga-prod", version="0.3.0")
IMAGE = ImageRef(repository="nginxinc/nginx-unprivileged", tag="1.30.5-alpine")
EG = "gateway.envoyproxy.io/v1alpha1"


def props(stage: Stage = Stage.PROD, **settings: Any) -> EdgeProps:
    return EdgeProps(
        identity=RELEASE,
        namespace="kga-prod",
        stage=stage,
        domain="kga.example.com",
        auth_image=IMAGE,
        settings=EdgeSettings(**settings),
        web_service="kga-prod-web",
        query_service="kga-prod-query",
        indexer_service="kga-prod-indexer",
    )


def render(p: EdgeProps | None = None) -> dict[str, dict[str, Any]]:
    chart = cdk8s.Chart(cdk8s.App(), "prod", disable_resource_name_hashes=True)
    Edge(chart, "Edge", props=p or props())
    return {f"{o['kind']}/{o['metadata']['name']}": o for o in manifests(chart).values()}


def rule(objects: dict[str, dict[str, Any]], route: str) -> dict[str, Any]:
    (only,) = objects[f"HTTPRoute/kga-prod-{route}"]["spec"]["rules"]
    return only


def test_objects_schema_and_pod_security() -> None:
    objects = render()
    assert {k for k in objects if objects[k]["apiVersion"].startswith("gateway.")} == {
        "Gateway/kga-prod",
        *(f"HTTPRoute/kga-prod-{r}" for r in ("web", "api", "api-reads", "indexer", "blocked", "redirect")),
        "SecurityPolicy/kga-prod-api",
        "SecurityPolicy/kga-prod-web",
        "BackendTrafficPolicy/kga-prod-api",
        "BackendTrafficPolicy/kga-prod-api-reads",
        "BackendTrafficPolicy/kga-prod-web",
        "ClientTrafficPolicy/kga-prod",
    }
    assert not [k for k in objects if k.startswith(("Ingress/", "ConfigMap/kga-prod-headers"))]
    for version in ("1.27", "1.31", "1.35"):
        assert [p for o in objects.values() for p in schema_problems(o, version)] == []
    for obj in objects.values():
        for pod in pod_specs(obj):
            assert violations(pod) == []


def test_gateway_https_with_certificate_and_http_only_redirects() -> None:
    objects = render()
    listeners = {x["name"]: x for x in objects["Gateway/kga-prod"]["spec"]["listeners"]}
    assert listeners["https"]["protocol"] == "HTTPS" and listeners["https"]["port"] == 443
    assert listeners["https"]["tls"] == {
        "mode": "Terminate",
        "certificateRefs": [{"kind": "Secret", "name": "kga-prod-tls"}],
    }
    assert listeners["http"]["protocol"] == "HTTP"
    for key, obj in objects.items():
        if obj["kind"] != "HTTPRoute":
            continue
        (parent,) = obj["spec"]["parentRefs"]
        assert obj["spec"]["hostnames"] == ["kga.example.com"]
        if key == "HTTPRoute/kga-prod-redirect":
            assert parent["sectionName"] == "http"
            (r,) = obj["spec"]["rules"]
            assert "backendRefs" not in r  # plain HTTP never reaches a backend
            assert r["filters"] == [
                {"type": "RequestRedirect", "requestRedirect": {"scheme": "https", "statusCode": 301}}
            ]
        else:
            assert parent["sectionName"] == "https", key


def test_platform_gateway_gets_routes_only() -> None:
    objects = render(
        props(gateway={"platformGateway": {"name": "shared", "namespace": "gateways", "sectionName": "web-https"}})
    )
    assert "Gateway/kga-prod" not in objects and "ClientTrafficPolicy/kga-prod" not in objects
    assert "Certificate/kga-prod-tls" not in objects  # the platform's listener holds the certificate
    assert "HTTPRoute/kga-prod-redirect" not in objects
    parent = objects["HTTPRoute/kga-prod-api"]["spec"]["parentRefs"][0]
    assert parent == {
        "group": "gateway.networking.k8s.io",
        "kind": "Gateway",
        "name": "shared",
        "namespace": "gateways",
        "sectionName": "web-https",
    }


def test_backends_timeouts_and_blocked_paths() -> None:
    objects = render()
    backend = {r: rule(objects, r)["backendRefs"] for r in ("web", "api", "api-reads", "indexer", "blocked")}
    assert backend["web"] == [{"kind": "Service", "name": "kga-prod-web", "port": 8080}]
    assert backend["api"] == backend["api-reads"] == [{"kind": "Service", "name": "kga-prod-query", "port": 8000}]
    assert backend["indexer"] == [{"kind": "Service", "name": "kga-prod-indexer", "port": 8000}]
    assert backend["blocked"] == [{"kind": "Service", "name": "kga-prod-auth", "port": 8081}]
    assert rule(objects, "api-reads")["matches"] == [{"path": {"type": "PathPrefix", "value": "/api"}, "method": "GET"}]
    assert [m["path"]["value"] for m in rule(objects, "blocked")["matches"]] == list(BLOCKED_PATHS)
    assert rule(objects, "api")["timeouts"] == {"request": "180s"}  # LLM answers take tens of seconds
    assert rule(objects, "indexer")["timeouts"] == {"request": "600s"}
    assert render(props(query_timeout_seconds=240))["HTTPRoute/kga-prod-api"]["spec"]["rules"][0]["timeouts"] == {
        "request": "240s"
    }


def test_security_headers_are_standard_response_header_modifiers() -> None:
    objects = render()

    def headers(route: str) -> dict[str, str]:
        (f,) = rule(objects, route)["filters"]
        assert f["type"] == "ResponseHeaderModifier"
        return {h["name"]: h["value"] for h in f["responseHeaderModifier"]["set"]}

    web = headers("web")
    assert set(web) == set(SECURITY_HEADERS)
    assert web["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    csp = dict(d.split(" ", 1) for d in web["Content-Security-Policy"].split("; "))
    assert csp["script-src"] == "'self' 'unsafe-inline' https://cdnjs.cloudflare.com https://cdn.jsdelivr.net"
    assert csp["connect-src"] == "'self'" and csp["frame-ancestors"] == "'none'"
    assert "*" not in content_security_policy()
    for route in ("api", "api-reads", "indexer", "blocked"):
        assert headers(route)["Content-Security-Policy"].startswith("default-src 'none'")
    # Envoy reads %...% in a header value as a command operator: none may carry one.
    assert "%" not in str([headers(r) for r in ("web", "api")])


def test_api_keys_by_external_auth_to_the_verifier() -> None:
    objects = render()
    api = objects["SecurityPolicy/kga-prod-api"]["spec"]
    assert [t["name"] for t in api["targetRefs"]] == ["kga-prod-api", "kga-prod-api-reads", "kga-prod-indexer"]
    assert api["extAuth"]["http"] == {
        "backendRefs": [{"kind": "Service", "name": "kga-prod-auth", "port": 8080}],
        "path": "/verify",
        "headersToBackend": ["X-Auth-Key-Id"],
    }
    assert api["extAuth"]["failOpen"] is False
    assert set(api["extAuth"]["headersToExtAuth"]) == {"authorization", "x-api-key"}
    assert [t["name"] for t in objects["SecurityPolicy/kga-prod-web"]["spec"]["targetRefs"]] == ["kga-prod-web"]
    # The blocked route needs no key: everyone gets 403.
    targeted = {
        t["name"] for k, o in objects.items() if k.startswith("SecurityPolicy/") for t in o["spec"]["targetRefs"]
    }
    assert "kga-prod-blocked" not in targeted
    assert "SecurityPolicy/kga-prod-web" not in render(props(public_ui=True))


def test_cors_allow_list_and_wildcard_only_in_dev() -> None:
    assert "cors" not in render()["SecurityPolicy/kga-prod-api"]["spec"]
    listed = render(props(cors_allowed_origins=["https://app.example.com"]))["SecurityPolicy/kga-prod-api"]["spec"]
    assert listed["cors"]["allowOrigins"] == ["https://app.example.com"]
    assert listed["cors"]["allowCredentials"] is False
    for bad in (["*"], ["http://localhost:3000"], ["app.example.com"]):
        with pytest.raises(ValidationError, match="corsAllowedOrigins"):
            props(cors_allowed_origins=bad)
    props(Stage.DEV, cors_allowed_origins=["*"])
    with pytest.raises(ValidationError, match="securityHeaders"):
        props(security_headers=False)


def test_limits_and_retries_only_where_idempotent() -> None:
    objects = render()
    api = objects["BackendTrafficPolicy/kga-prod-api"]["spec"]
    reads = objects["BackendTrafficPolicy/kga-prod-api-reads"]["spec"]
    web = objects["BackendTrafficPolicy/kga-prod-web"]["spec"]
    assert [t["name"] for t in api["targetRefs"]] == ["kga-prod-api", "kga-prod-indexer", "kga-prod-blocked"]
    assert "retry" not in api  # POST queries run an LLM, indexing starts work
    assert reads["retry"]["numRetries"] == 2 and web["retry"]["numRetries"] == 2
    assert set(reads["retry"]["retryOn"]["triggers"]) == {"connect-failure", "refused-stream"}
    (limit,) = api["rateLimit"]["local"]["rules"]
    assert limit == {
        "clientSelectors": [{"sourceCIDR": {"type": "Distinct", "value": "0.0.0.0/0"}}],
        "limit": {"requests": 5, "unit": "Second"},
    }
    assert web["rateLimit"]["local"]["rules"][0]["limit"]["requests"] == 20
    assert api["requestBuffer"] == {"limit": "1Mi"} and web["requestBuffer"] == {"limit": "64Ki"}


def test_client_traffic_behind_the_load_balancer() -> None:
    spec = render()["ClientTrafficPolicy/kga-prod"]["spec"]
    assert spec["targetRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "kga-prod"}]
    assert spec["clientIPDetection"] == {"xForwardedFor": {"numTrustedHops": 1}}
    assert spec["headers"]["requestID"] == "PreserveOrGenerate"
    assert spec["path"]["escapedSlashesAction"] == "UnescapeAndRedirect"
    # The buffer holds the largest body a route accepts (1 MiB).
    assert spec["connection"]["bufferLimit"] == "1056Ki"


def test_backend_tls_policy_when_a_backend_speaks_tls() -> None:
    assert not [k for k in render() if k.startswith("BackendTLSPolicy/")]
    objects = render(props(backend_tls={"query": {"hostname": "query.kga.internal", "caConfigMap": "kga-ca"}}))
    spec = objects["BackendTLSPolicy/kga-prod-query"]["spec"]
    assert spec["targetRefs"] == [{"group": "", "kind": "Service", "name": "kga-prod-query"}]
    assert spec["validation"]["hostname"] == "query.kga.internal"


def test_edge_peer_is_the_data_plane() -> None:
    peer = edge_peer(EdgeSettings())
    assert peer.namespace == "envoy-gateway-system"
    assert peer.pod_labels == {"app.kubernetes.io/name": "envoy", "app.kubernetes.io/component": "proxy"}
    custom = edge_peer(EdgeSettings(gateway={"dataPlaneNamespace": "gw", "dataPlanePodLabels": {"app": "proxy"}}))
    assert (custom.namespace, custom.pod_labels) == ("gw", {"app": "proxy"})
    assert edge_peer(EdgeSettings(controller="ingress-nginx")).namespace == "ingress-nginx"


def test_side_by_side_migration_serves_both_edges_from_one_certificate_and_verifier() -> None:
    objects = render(props(side_by_side_ingress_nginx=True))
    assert "HTTPRoute/kga-prod-api" in objects and "Ingress/kga-prod-api" in objects
    assert [k for k in objects if k.startswith(("Certificate/", "Deployment/"))] == [
        "Certificate/kga-prod-tls",
        "Deployment/kga-prod-auth",
    ]
    assert objects["Ingress/kga-prod-api"]["spec"]["tls"][0]["secretName"] == "kga-prod-tls"
    settings = EdgeSettings(side_by_side_ingress_nginx=True)
    peers = edge_peers(settings)
    assert [p.namespace for p in peers] == ["envoy-gateway-system", "ingress-nginx"]
    flows = stack_flows(StackComponents(), NetworkSettings(), edge=peers)
    assert {f.source.namespace for f in flows if f.destination.model_dump().get("component") == "web"} >= {
        "envoy-gateway-system",
        "ingress-nginx",
    }
    assert edge_peers(EdgeSettings()) == [edge_peer(EdgeSettings())]
    with pytest.raises(ValidationError, match="sideBySideIngressNginx"):
        EdgeSettings(controller="ingress-nginx", side_by_side_ingress_nginx=True)


def test_certificate_is_strict_and_issuer_per_stage() -> None:
    cert = render()["Certificate/kga-prod-tls"]
    cert_manager.Certificate.model_validate(cert, extra="forbid")
    assert cert["spec"]["issuerRef"] == {
        "name": "letsencrypt-prod",
        "kind": "ClusterIssuer",
        "group": "cert-manager.io",
    }
    assert cert["spec"]["dnsNames"] == ["kga.example.com"]
    staging = render(props(Stage.STAGING))["Certificate/kga-prod-tls"]
    assert staging["spec"]["issuerRef"]["name"] == "letsencrypt-staging"
    assert render(props(issuer="corp-ca"))["Certificate/kga-prod-tls"]["spec"]["issuerRef"]["name"] == "corp-ca"


def test_verifier_deployment_mounts_keys_and_reloads() -> None:
    d = render()["Deployment/kga-prod-auth"]
    assert d["metadata"]["annotations"]["secret.reloader.stakater.com/reload"] == "kga-edge-keys"
    volumes = {v["name"]: v for v in d["spec"]["template"]["spec"]["volumes"]}
    assert volumes["keys"]["secret"]["secretName"] == "kga-edge-keys"
    svc = render()["Service/kga-prod-auth"]
    assert [(p["name"], p["port"]) for p in svc["spec"]["ports"]] == [("http", 8080), ("deny", 8081)]


# --- the verifier's nginx.conf, run for real -----------------------------------------------------


def _status(url: str, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(url, headers=headers)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, never a proxy
    try:
        with opener.open(request, timeout=5) as response:
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers)


@pytest.fixture
def verifier(tmp_path: Path) -> Any:
    nginx = require_tool("nginx", Path("/usr/sbin/nginx"), hint="apt-get install nginx-light")
    verify, deny = free_port(), free_port()
    (tmp_path / "keys").mkdir()
    conf = (
        auth_nginx_conf()
        .replace("/tmp/", f"{tmp_path}/")
        .replace("/etc/kga-auth/keys", str(tmp_path / "keys"))
        .replace("listen 8080;", f"listen 127.0.0.1:{verify};")
        .replace("listen 8081;", f"listen 127.0.0.1:{deny};")
        .replace("/dev/stdout", f"{tmp_path}/access.log")
    )
    (tmp_path / "nginx.conf").write_text(conf)
    old, new = "a" * 64, "0123456789abcdef" * 4
    basic = base64.b64encode(f"kga:{new}".encode()).decode()
    (tmp_path / "keys" / "keys.map").write_text(f'"{old}" old-key;\n"{new}" new-key;\n"basic:{basic}" new-key;\n')
    proc = subprocess.Popen([nginx, "-c", str(tmp_path / "nginx.conf"), "-e", "stderr", "-g", "daemon off;"])
    try:
        for _ in range(100):
            try:
                if (
                    _status(f"http://127.0.0.1:{verify}/healthz", {})[0] == 200
                    and _status(f"http://127.0.0.1:{deny}/", {})[0] == 403
                ):
                    break
            except OSError:
                pass
            assert proc.poll() is None, "nginx exited; see its stderr above"
            time.sleep(0.1)
        else:
            pytest.fail(f"the verifier nginx did not come up on ports {verify} and {deny}")
        yield f"http://127.0.0.1:{verify}", f"http://127.0.0.1:{deny}", old, new, basic
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_verifier_accepts_two_keys_and_refuses_others(verifier: Any) -> None:
    url, deny, old, new, basic = verifier
    assert _status(f"{url}/verify", {"X-API-Key": old})[0] == 200
    status, headers = _status(f"{url}/verify", {"X-API-Key": new})
    assert status == 200 and headers["X-Auth-Key-Id"] == "new-key"
    assert _status(f"{url}/verify", {"Authorization": f"Bearer {new}"})[0] == 200
    assert _status(f"{url}/verify", {"Authorization": f"Basic {basic}"})[0] == 200
    # Envoy's ext_authz appends the original path to /verify; ingress-nginx calls /verify itself.
    status, headers = _status(f"{url}/verify/api/v1/query", {"X-API-Key": old})
    assert status == 200 and headers["X-Auth-Key-Id"] == "old-key"
    assert _status(f"{url}/verify/api/v1/query", {"X-API-Key": "b" * 64})[0] == 401
    for bad in (
        {"X-API-Key": "b" * 64},
        {},
        {"Authorization": "Bearer "},
        {"Authorization": f"Token {new}"},
        {"X-API-Key": ""},
    ):
        status, headers = _status(f"{url}/verify", bad)
        assert status == 401, bad
        assert headers["WWW-Authenticate"].startswith("Basic realm=")
    for path in BLOCKED_PATHS:
        assert _status(f"{deny}{path}", {"X-API-Key": new})[0] == 403
