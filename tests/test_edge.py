"""Edge, shared parts: objects, certificate, verifier in real nginx, CORS rules, edge peers, migration."""

from __future__ import annotations

import base64
import re
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import cdk8s
import pytest
from cloudcoil.models.cert_manager import v1 as cert_manager
from conftest import build, env_data
from pss import pod_specs, violations
from pydantic import ValidationError
from rendered import LocalPod, envs_with, objects
from tools import require_tool

from kgstack.connections import Connections, Endpoint
from kgstack.edge import (
    ACME_SOLVER,
    ACME_SOLVER_PORT,
    BLOCKED_PATHS,
    Edge,
    EdgeProps,
    EdgeSettings,
    edge_peer,
    edge_peers,
)
from kgstack.environment import parse_environment
from kgstack.model import ImageRef, Stage
from kgstack.naming import Identity
from kgstack.network_policies import NamespacePeer
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
        web=Endpoint.serving(RELEASE.of("web"), "kga-prod", 8080, "http"),
        query=Endpoint.serving(RELEASE.of("query"), "kga-prod", 8000, "http"),
        indexer=Endpoint.serving(RELEASE.of("indexer"), "kga-prod", 8000, "http"),
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
    # Both edges reach the web UI through the declared connections, and nothing else changes.
    env = parse_environment(env_data("staging", edge__sideBySideIngressNginx=True), source="staging.yaml")
    _, stack = build(env)
    web = next(
        o for o in manifests(stack).values() if o["kind"] == "NetworkPolicy" and o["metadata"]["name"].endswith("-web")
    )
    sources = {
        peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        for rule in web["spec"]["ingress"]
        for peer in rule["from"]
    }
    assert sources >= {"envoy-gateway-system", "ingress-nginx"}
    assert edge_peers(EdgeSettings()) == [edge_peer(EdgeSettings())]
    with pytest.raises(ValidationError, match="sideBySideIngressNginx"):
        EdgeSettings(controller="ingress-nginx", side_by_side_ingress_nginx=True)


def test_the_edge_declares_the_flows_it_is_handed() -> None:
    """Issue 21: AgentStack declared the edge's traffic, so an Edge in a chart of its own reached nothing."""
    chart = cdk8s.Chart(cdk8s.App(), "prod")
    edge = Edge(chart, "Edge", props=props(side_by_side_ingress_nginx=True))
    flows = {
        (f.source.namespace, f.destination.key, f.ports[0].port)  # type: ignore[union-attr]
        for f in Connections.of(chart).flows
        if isinstance(f.source, NamespacePeer)
    }
    verifier = {(e.peer.key, e.port) for e in edge.endpoints}
    assert verifier  # the edge calls the verifier
    handed = {("web", 8080), ("query", 8000), ("indexer", 8000), *verifier, (ACME_SOLVER.key, ACME_SOLVER_PORT)}
    for namespace in ("envoy-gateway-system", "ingress-nginx"):  # both edges while they serve one host
        assert {(dest, port) for source, dest, port in flows if source == namespace} == handed


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


@pytest.fixture(params=envs_with("auth"))
def verifier(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """The auth Deployment of dist/<env>, on the Debian nginx: its command, nginx.conf and keys mount."""
    nginx = require_tool("nginx", Path("/usr/sbin/nginx"), hint="apt-get install nginx-light")
    old, new = "a" * 64, "0123456789abcdef" * 4
    basic = base64.b64encode(f"kga:{new}".encode()).decode()
    keys = f'"{old}" old-key;\n"{new}" new-key;\n"basic:{basic}" new-key;\n'
    pod = LocalPod.of(request.param, "auth", tmp_path, secrets={"kga-edge-keys": {"keys.map": keys}})
    (container,) = pod.spec["containers"]
    verify, deny = pod.port(container, "http"), pod.port(container, "deny")
    ready = container["readinessProbe"]["httpGet"]["path"]
    command = pod.command(container)
    conf = pod.local_file(container, container["command"][container["command"].index("-c") + 1])
    # Loopback only, and the access log in a file rather than the test runner's stdout.
    text = re.sub(r"listen (\d+);", r"listen 127.0.0.1:\1;", conf.read_text()).replace(
        "/dev/stdout", f"{tmp_path}/access.log"
    )
    conf.write_text(text)
    command[command.index("-c") + 1] = str(conf)
    proc = subprocess.Popen([nginx, *command[1:]])
    try:
        for _ in range(100):
            try:
                if (
                    _status(f"http://127.0.0.1:{verify}{ready}", {})[0] == 200
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


def test_verifier_refuses_cross_site_requests(verifier: Any, request: pytest.FixtureRequest) -> None:
    """Issue 17, defect 3: Envoy sends the client's method and path (/verify/<path>); ingress-nginx
    calls GET /verify with X-Original-Method and X-Original-URL. Both ways, a foreign Origin, or a
    cross-site browser request without one that is unsafe or aims at /api, is refused before the key."""
    url, _deny, _old, new, basic = verifier
    env = request.node.callspec.params["verifier"]
    (domain,) = {h for o in objects(env).values() if o["kind"] == "HTTPRoute" for h in o["spec"]["hostnames"]}
    own = f"https://{domain}"
    creds = {"Authorization": f"Basic {basic}"}

    def envoy(method: str, path: str, headers: dict[str, str]) -> int:
        request = urllib.request.Request(f"{url}/verify{path}", headers={**creds, **headers}, method=method)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(request, timeout=5) as response:
                return int(response.status)
        except urllib.error.HTTPError as error:
            return error.code

    def ingress(method: str, path: str, headers: dict[str, str]) -> int:
        original = {"X-Original-Method": method, "X-Original-URL": f"{own}{path}"}
        return _status(f"{url}/verify", {**creds, **original, **headers})[0]

    for call in (envoy, ingress):
        refused = [
            ("POST", "/api/v1/index", {"Origin": "https://evil.example.net", "Sec-Fetch-Site": "cross-site"}),
            ("POST", "/api/v1/index", {"Origin": "null"}),
            ("POST", "/api/v1/index", {"Sec-Fetch-Site": "cross-site"}),
            ("POST", "/", {"Sec-Fetch-Site": "same-site"}),
            ("GET", "/api/v1/commits/diff/acme/kga", {"Sec-Fetch-Site": "cross-site"}),
            ("GET", "/api", {"Sec-Fetch-Site": "cross-site"}),
            ("GET", "/api/v1/stats", {"Origin": f"{own}.evil.example.net"}),
        ]
        for method, path, headers in refused:
            assert call(method, path, headers) == 403, (call.__name__, method, path, headers)
        allowed = [
            ("POST", "/api/v1/index", {"Origin": own, "Sec-Fetch-Site": "same-origin"}),
            ("POST", "/api/v1/query", {}),  # an API client: no browser headers
            ("GET", "/", {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}),  # a link to the UI
            ("GET", "/apidocs", {"Sec-Fetch-Site": "cross-site"}),
            ("GET", "/api/v1/stats", {"Sec-Fetch-Site": "none"}),  # typed into the address bar
        ]
        for method, path, headers in allowed:
            assert call(method, path, headers) == 200, (call.__name__, method, path, headers)
    # The key check still applies to an allowed origin.
    assert _status(f"{url}/verify", {"Origin": own, "X-API-Key": "b" * 64})[0] == 401
    assert _status(f"{url}/verify", {"Origin": own, "X-API-Key": new})[0] == 200
