"""Edge: routing, blocked paths, auth, headers, limits, CORS rules, certificate; the verifier run in real nginx."""

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
)
from kgstack.model import ImageRef, Stage
from kgstack.naming import Identity
from kgstack.publish import manifests
from kgstack.schema import schema_problems

RELEASE = Identity(name="kga", instance="kga-prod", version="0.3.0")
IMAGE = ImageRef(repository="nginxinc/nginx-unprivileged", tag="1.30.5-alpine")
N = "nginx.ingress.kubernetes.io"


def props(stage: Stage = Stage.PROD, **settings: Any) -> EdgeProps:
    return EdgeProps(
        identity=RELEASE,
        namespace="kga-prod",
        stage=stage,
        domain="kga.example.com",
        ingress_class="nginx",
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


def routes(objects: dict[str, dict[str, Any]]) -> dict[str, tuple[str, int, str]]:
    out = {}
    for key, obj in objects.items():
        if obj["kind"] == "Ingress":
            for rule in obj["spec"]["rules"]:
                assert rule["host"] == "kga.example.com"
                for path in rule["http"]["paths"]:
                    svc = path["backend"]["service"]
                    out[path["path"]] = (svc["name"], svc["port"]["number"], key)
    return out


def test_schema_and_pod_security() -> None:
    objects = render()
    for version in ("1.27", "1.31", "1.35"):
        assert [p for o in objects.values() for p in schema_problems(o, version)] == []
    for obj in objects.values():
        for pod in pod_specs(obj):
            assert violations(pod) == []


def test_path_routing_and_blocked_endpoints() -> None:
    r = routes(render())
    assert r["/"][:2] == ("kga-prod-web", 8080)
    assert r["/api"][:2] == ("kga-prod-query", 8000)
    assert r["/api/v1/index"][:2] == r["/api/v1/workflows"][:2] == ("kga-prod-indexer", 8000)
    for path in BLOCKED_PATHS:
        assert r[path][:2] == ("kga-prod-auth", 8081)
        # Longest prefix wins in ingress-nginx: the block is longer than every route it shadows.
        assert all(len(path) > len(other) for other in r if path.startswith(other) and other != path)


def test_api_requires_a_key_ui_too_unless_public() -> None:
    objects = render()
    auth_url = "http://kga-prod-auth.kga-prod.svc.cluster.local:8080/verify"
    for name in ("api", "indexer", "web"):
        assert objects[f"Ingress/kga-prod-{name}"]["metadata"]["annotations"][f"{N}/auth-url"] == auth_url
    public = render(props(public_ui=True))
    assert f"{N}/auth-url" not in public["Ingress/kga-prod-web"]["metadata"]["annotations"]
    assert f"{N}/auth-url" in public["Ingress/kga-prod-api"]["metadata"]["annotations"]


def test_no_snippets_and_tls_everywhere() -> None:
    for key, obj in render().items():
        if obj["kind"] != "Ingress":
            continue
        annotations = obj["metadata"]["annotations"]
        assert not [a for a in annotations if "snippet" in a], key
        assert annotations[f"{N}/force-ssl-redirect"] == "true"
        assert obj["spec"]["tls"] == [{"hosts": ["kga.example.com"], "secretName": "kga-prod-tls"}]
        assert obj["spec"]["ingressClassName"] == "nginx"


def test_limits_and_timeouts() -> None:
    objects = render()
    api = objects["Ingress/kga-prod-api"]["metadata"]["annotations"]
    indexer = objects["Ingress/kga-prod-indexer"]["metadata"]["annotations"]
    assert int(api[f"{N}/proxy-read-timeout"]) >= 60  # LLM answers take tens of seconds
    assert int(indexer[f"{N}/proxy-read-timeout"]) > int(api[f"{N}/proxy-read-timeout"])
    assert api[f"{N}/limit-rps"] == "5" and api[f"{N}/limit-connections"] == "20"
    assert api[f"{N}/proxy-body-size"] == "1m"


def test_security_headers() -> None:
    objects = render()
    web = objects["ConfigMap/kga-prod-headers-web"]["data"]
    assert set(web) == set(SECURITY_HEADERS)
    assert web["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    assert web["X-Request-ID"] == "$req_id"
    csp = dict(d.split(" ", 1) for d in web["Content-Security-Policy"].split("; "))
    assert csp["script-src"] == "'self' 'unsafe-inline' https://cdnjs.cloudflare.com https://cdn.jsdelivr.net"
    assert csp["connect-src"] == "'self'" and csp["frame-ancestors"] == "'none'"
    assert "*" not in content_security_policy()
    assert (
        objects["Ingress/kga-prod-web"]["metadata"]["annotations"][f"{N}/custom-headers"]
        == "kga-prod/kga-prod-headers-web"
    )
    api = objects["ConfigMap/kga-prod-headers-api"]["data"]["Content-Security-Policy"]
    assert api.startswith("default-src 'none'")


def test_cors_allow_list_and_wildcard_only_in_dev() -> None:
    assert f"{N}/enable-cors" not in render()["Ingress/kga-prod-api"]["metadata"]["annotations"]
    listed = render(props(cors_allowed_origins=["https://app.example.com"]))
    assert (
        listed["Ingress/kga-prod-api"]["metadata"]["annotations"][f"{N}/cors-allow-origin"] == "https://app.example.com"
    )
    for bad in (["*"], ["http://localhost:3000"], ["app.example.com"]):
        with pytest.raises(ValidationError, match="corsAllowedOrigins"):
            props(cors_allowed_origins=bad)
    props(Stage.DEV, cors_allowed_origins=["*"])
    with pytest.raises(ValidationError, match="securityHeaders"):
        props(security_headers=False)


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
    assert _status(f"{url}/verify", {"X-API-Key": old})[0] == 204
    status, headers = _status(f"{url}/verify", {"X-API-Key": new})
    assert status == 204 and headers["X-Auth-Key-Id"] == "new-key"
    assert _status(f"{url}/verify", {"Authorization": f"Bearer {new}"})[0] == 204
    assert _status(f"{url}/verify", {"Authorization": f"Basic {basic}"})[0] == 204
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
