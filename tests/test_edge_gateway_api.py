"""The portable half: Gateway, HTTPRoutes (paths, timeouts, headers, redirect), platform Gateways, BackendTLSPolicy."""

from __future__ import annotations

from test_edge import props, render, rule

from kgstack.edge import BLOCKED_PATHS, SECURITY_HEADERS, content_security_policy


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
    blocked = [m["path"] for m in rule(objects, "blocked")["matches"]]
    assert [m["value"] for m in blocked if m["type"] == "PathPrefix"] == list(BLOCKED_PATHS)
    # Other letter cases and backslashes too (tests/test_edge_traffic.py sends them through Envoy).
    assert [m["type"] for m in blocked][-1] == "RegularExpression"
    assert [m["path"]["value"] for m in rule(objects, "indexer")["matches"]] == [
        "/api/v1/index",
        "/api/v1/workflows",
        "/api/v1/commits",  # indexed_commits.json and temp_repo/ live on the indexer (issue 16)
    ]
    assert rule(objects, "api")["timeouts"] == {"request": "180s"}  # LLM answers take tens of seconds
    assert rule(objects, "indexer")["timeouts"] == {"request": "600s"}
    assert render(props(query_timeout_seconds=240))["HTTPRoute/kga-prod-api"]["spec"]["rules"][0]["timeouts"] == {
        "request": "240s"
    }


def test_raw_cypher_is_refused_and_commit_tracking_reaches_the_indexer() -> None:
    """Issue 16 defects 9 and 6, written out here rather than read from BLOCKED_PATHS and INDEXER_PATHS:
    ``POST /api/v1/graph/query`` ran any Cypher it was sent against Memgraph; ``/api/v1/commits/*`` reads
    ``indexed_commits.json`` and ``temp_repo/`` on the indexer's volume and was routed to the query tier."""
    objects = render()
    blocked = [m["path"] for m in rule(objects, "blocked")["matches"]]
    assert {"type": "PathPrefix", "value": "/api/v1/graph/query"} in blocked
    assert rule(objects, "blocked")["backendRefs"][0]["name"] == "kga-prod-auth"  # the verifier's deny port
    indexer = [m["path"] for m in rule(objects, "indexer")["matches"]]
    assert {"type": "PathPrefix", "value": "/api/v1/commits"} in indexer


def test_security_headers_are_standard_response_header_modifiers() -> None:
    objects = render()

    def headers(route: str) -> dict[str, str]:
        (_, f) = rule(objects, route)["filters"]
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


def test_credentials_never_reach_a_backend() -> None:
    """Issue 17: X-API-Key and Authorization went on to the app after the verifier had read them."""
    for route in ("web", "api", "api-reads", "indexer", "blocked"):
        first = rule(render(), route)["filters"][0]
        assert first == {
            "type": "RequestHeaderModifier",
            "requestHeaderModifier": {"remove": ["Authorization", "X-API-Key"]},
        }


def test_backend_tls_policy_when_a_backend_speaks_tls() -> None:
    assert not [k for k in render() if k.startswith("BackendTLSPolicy/")]
    objects = render(props(backend_tls={"query": {"hostname": "query.kga.internal", "caConfigMap": "kga-ca"}}))
    spec = objects["BackendTLSPolicy/kga-prod-query"]["spec"]
    assert spec["targetRefs"] == [{"group": "", "kind": "Service", "name": "kga-prod-query"}]
    assert spec["validation"]["hostname"] == "query.kga.internal"


def test_load_balancer_annotations_reach_the_gateway_infrastructure() -> None:
    """cloud.loadBalancerAnnotations (prod asks for an NLB) were silently dropped before (review finding 3)."""
    plain = render()["Gateway/kga-prod"]["spec"]
    assert "infrastructure" not in plain
    nlb = {"service.beta.kubernetes.io/aws-load-balancer-type": "nlb"}
    gateway = render(props().model_copy(update={"load_balancer_annotations": nlb}))["Gateway/kga-prod"]["spec"]
    assert gateway["infrastructure"] == {"annotations": nlb}
