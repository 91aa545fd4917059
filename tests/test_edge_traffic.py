"""Every environment's edge under real traffic: dist/<env>'s Gateway, routes and policies on Envoy Gateway and Envoy.

The harness (tests/edge_harness.py) starts Envoy Gateway in standalone mode on the edge
objects of dist/<env>, the verifier of dist/<env> on nginx, and stand-in backends that
record what reaches them. Path normalisation is Envoy's own: the requests below go out
exactly as written. Expectations are written out by hand from the app's routes
(``src/api/routes.py`` of the app, mounted at ``/api/v1``) and docs/edge.md.
"""

from __future__ import annotations

import base64
import concurrent.futures
import json
import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import edge_harness
import pytest
import yaml
from conftest import ENV_DIRS
from edge_harness import (
    KEY,
    OLD_KEY,
    Answer,
    RunningEdge,
    basic_credential,
    edge_objects,
    running_edge,
    self_signed,
    translate,
)
from rendered import objects, of_kind

pytestmark = pytest.mark.go_build("envoy-gateway")

WEB, QUERY, INDEXER = "web", "query", "indexer"
AGENT_PATHS = [
    # The UI's own files (same origin as the API).
    ("GET", "/", WEB),
    ("GET", "/index.html", WEB),
    ("GET", "/config.js", WEB),
    ("GET", "/healthz", WEB),
    # The app's root /health is for probes inside the cluster; the edge never routes it to the app.
    ("GET", "/health", WEB),
    ("GET", "/apidocs", WEB),
    # The query tier: everything under /api except the indexer's and the blocked paths.
    ("GET", "/api/v1/", QUERY),
    ("POST", "/api/v1/query", QUERY),
    ("GET", "/api/v1/repositories", QUERY),
    ("GET", "/api/v1/health", QUERY),
    ("GET", "/api/v1/stats", QUERY),
    ("GET", "/api/v1/graph/info", QUERY),
    ("GET", "/api/v1/graph/health", QUERY),
    ("GET", "/api/v1/indexes", QUERY),  # not /api/v1/index: prefixes match whole segments
    ("GET", "/api/v1/commitsx", QUERY),
    # The single indexer: indexing runs, in-memory workflow state, the commit tracking (issue 16).
    ("POST", "/api/v1/index", INDEXER),
    ("POST", "/api/v1/index/repository", INDEXER),
    ("GET", "/api/v1/workflows", INDEXER),
    ("GET", "/api/v1/workflows/3f2a/status", INDEXER),
    ("GET", "/api/v1/workflows?status=running", INDEXER),
    ("GET", "/api/v1/commits/tracking", INDEXER),
    ("DELETE", "/api/v1/commits/tracking/acme/kga", INDEXER),
    ("GET", "/api/v1/commits/diff/acme/kga", INDEXER),
]
BLOCKED_REQUESTS = [
    ("POST", "/api/v1/fix/chroma-dimension"),
    ("GET", "/api/v1/fix/chroma-dimension"),
    ("GET", "/api/v1/workflows/debug"),
    ("GET", "/api/v1/workflows/debug/"),
    ("GET", "/api/v1/workflows/debug?verbose=1"),
    # Raw Cypher (issue 16): refused, not only for the method the app serves.
    ("POST", "/api/v1/graph/query"),
    ("GET", "/api/v1/graph/query"),
    ("POST", "/api/v1/graph/query/"),
    ("POST", "/api/v1/graph//query"),
    ("POST", "/api/v1/graph/%71uery"),
    ("POST", "/api/v1/graph%2Fquery"),
    ("POST", "/api/v1/GRAPH/Query"),
    # Double slashes, dot segments.
    ("GET", "/api/v1/workflows//debug"),
    ("GET", "//api/v1/workflows/debug"),
    ("GET", "/api/v1/./workflows/debug"),
    ("GET", "/api/v1/workflows/x/../debug"),
    ("GET", "/api/v1/workflows/x/%2E%2E/debug"),
    ("GET", "/api/v1/index/../workflows/debug"),
    ("GET", "/api/v1/workflows/debug/."),
    # Percent-encoding of ordinary characters, and of the slash and backslash.
    ("GET", "/api/v1/workflows/%64ebug"),
    ("GET", "/api/v1/workflows/%64%65%62%75%67"),
    ("POST", "/api/v1/fix/chroma%2Ddimension"),
    ("POST", "/api/v1/fix/%63hroma-dimension"),
    ("POST", "/api/v1/fix%2Fchroma-dimension"),
    ("POST", "/api/v1/fix%2fchroma-dimension"),
    ("POST", "/api%2Fv1%2Ffix%2Fchroma-dimension"),
    ("GET", "/api/v1/workflows\\debug"),
    ("GET", "/api/v1/workflows%5Cdebug"),
    # Letter case.
    ("GET", "/api/v1/workflows/DEBUG"),
    ("GET", "/API/v1/workflows/debug"),
    ("POST", "/Api/V1/Fix/Chroma-Dimension"),
]
FOREIGN = "https://evil.example.net"


@pytest.fixture(scope="module", params=ENV_DIRS)
def edge(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEdge]:
    root = tmp_path_factory.mktemp(f"edge-{request.param}")
    with (
        running_edge(str(request.param), root, slow_seconds=40) as running,
        concurrent.futures.ThreadPoolExecutor(1) as pool,
    ):
        # The UI route's 30 s timeout runs out meanwhile (test_route_timeouts_are_what_the_routes_say).
        running.slow = pool.submit(_timed, running, "/slow")
        yield running


def _timed(edge: RunningEdge, path: str) -> tuple[int, float]:
    started = time.monotonic()
    answer = edge.request("GET", path, key())
    return answer.status, time.monotonic() - started


def key(form: str = "x-api-key", value: str = KEY) -> dict[str, str]:
    return {
        "x-api-key": {"X-API-Key": value},
        "bearer": {"Authorization": f"Bearer {value}"},
        "basic": {"Authorization": basic_credential()},
    }[form]


def tier_of(answer: Answer) -> str:
    assert answer.status == 200, (answer.status, answer.body[:200])
    return str(json.loads(answer.body)["tier"])


def follow(edge: RunningEdge, method: str, path: str, headers: dict[str, str]) -> tuple[list[int], Answer]:
    """The request, then each same-host redirect the gateway answers (as a client follows them)."""
    statuses = []
    for _ in range(4):
        answer = edge.request(method, path, headers)
        statuses.append(answer.status)
        location = answer.header("location")
        if answer.status not in (301, 302, 307, 308) or not location:
            return statuses, answer
        path = location.split(edge.domain, 1)[1] if "://" in location else location
    pytest.fail(f"{method} {path}: redirect loop {statuses}")


# --- routing ---------------------------------------------------------------------------------------


def test_plain_http_only_redirects_to_https(edge: RunningEdge) -> None:
    edge.clear()
    for method, path in [(m, p) for m, p, _ in AGENT_PATHS] + BLOCKED_REQUESTS:
        answer = edge.request(method, path, key(), plain_http=True)
        # An escaped slash is first sent back unescaped (307), on the same plain-HTTP listener.
        assert answer.status == 301 or (("%2f" in path.lower() or "%5c" in path.lower()) and answer.status == 307), (
            method,
            path,
            answer.status,
        )
        location = answer.header("location") or ""
        assert location.startswith(f"https://{edge.domain}/" if answer.status == 301 else "/"), (path, location)
        if (method, path) not in BLOCKED_REQUESTS:  # a disguised path comes back normalised
            assert location == f"https://{edge.domain}{path}", (path, location)
    assert edge.reached_paths() == []


@pytest.mark.parametrize(("method", "path", "tier"), AGENT_PATHS)
def test_agent_paths_reach_the_tier_that_owns_them(edge: RunningEdge, method: str, path: str, tier: str) -> None:
    answer = edge.request(method, path, key(), b"{}" if method == "POST" else None)
    assert tier_of(answer) == tier, (method, path)
    assert json.loads(answer.body)["path"] == path


_SELECTOR = re.compile(r"\b(envoy_[a-z_]+)\{([^}]*)\}")
_MATCHER = re.compile(r'([a-z_]+)(=~|!~|!=|=)"((?:[^"\\]|\\.)*)"')


def _prometheus_series(edge: RunningEdge) -> dict[str, list[dict[str, str]]]:
    """Envoy's own Prometheus exposition (admin ``/stats/prometheus``, the path the PodMonitor scrapes)."""
    url = f"http://127.0.0.1:{edge.admin_port}/stats/prometheus"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    out: dict[str, list[dict[str, str]]] = {}
    for line in text.splitlines():
        if match := re.match(r"([a-z_]+)(?:\{(.*)\})? \S+$", line):
            labels = {k: v for k, _, v in _MATCHER.findall(match.group(2) or "")}
            out.setdefault(match.group(1), []).append(labels)
    return out


def test_the_alert_rules_select_the_series_envoy_exports(edge: RunningEdge) -> None:
    """Issue 25: the SLIs and KgaEdgeMetricsAbsent read the proxies' series by cluster name. Every Envoy
    selector of dist/'s PrometheusRule, after one request down each agent path, finds series of the real
    Envoy that Envoy Gateway drives from dist/: the same metric, every cluster name pattern, the bucket
    bound. (No request failed here, so a response class is only checked to be a label Envoy sets.)"""
    for method, path, _ in AGENT_PATHS:
        edge.request(method, path, key(), b"{}" if method == "POST" else None)
    exported = _prometheus_series(edge)
    (rule,) = of_kind(edge.env, "PrometheusRule")
    exprs = [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]
    selectors = {(m.group(1), m.group(2)) for expr in exprs for m in _SELECTOR.finditer(expr)}
    assert {name for name, _ in selectors} >= {"envoy_cluster_upstream_rq_total", "envoy_cluster_upstream_rq_xx"}

    def matches(labels: dict[str, str], name: str, op: str, value: str) -> bool:
        if name == "envoy_response_code_class":
            return name in labels
        found = re.fullmatch(value, labels.get(name, "")) if "~" in op else labels.get(name, "") == value
        return bool(found) == (op in ("=", "=~"))

    unmatched = [
        f"{metric}{{{matchers}}}"
        for metric, matchers in sorted(selectors)
        if not any(all(matches(labels, *m) for m in _MATCHER.findall(matchers)) for labels in exported.get(metric, []))
    ]
    clusters = sorted({s.get("envoy_cluster_name", "") for s in exported.get("envoy_cluster_upstream_rq_total", [])})
    assert unmatched == [], f"no exported series for {unmatched}; Envoy's clusters: {clusters}"
    print(f"\n{edge.env}: {len(selectors)} Envoy selectors of the rules, each matched by an exported series")


@pytest.mark.parametrize(("method", "path"), BLOCKED_REQUESTS)
def test_blocked_paths_are_refused_in_every_disguise(edge: RunningEdge, method: str, path: str) -> None:
    edge.clear()
    statuses, answer = follow(edge, method, path, key())
    assert answer.status == 403, (method, path, statuses)
    assert edge.reached_paths() == [], (method, path)


def test_another_host_reaches_nothing(edge: RunningEdge) -> None:
    answer = edge.request("GET", "/api/v1/health", key(), host=f"other.{edge.domain}")
    assert answer.status == 404 and not edge.reached(QUERY)


# --- keys ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["x-api-key", "bearer", "basic"])
def test_each_credential_form_is_accepted(edge: RunningEdge, form: str) -> None:
    edge.clear()
    assert tier_of(edge.request("GET", "/api/v1/health", key(form))) == QUERY
    (seen,) = edge.reached(QUERY)
    assert seen.headers["x-auth-key-id"] == "new-key"


def test_the_old_key_works_during_rotation_and_a_wrong_one_is_refused(edge: RunningEdge) -> None:
    edge.clear()
    assert tier_of(edge.request("GET", "/api/v1/health", key(value=OLD_KEY))) == QUERY
    assert edge.reached(QUERY)[0].headers["x-auth-key-id"] == "old-key"
    edge.clear()
    for wrong in (
        {"X-API-Key": "b" * 64},
        {"Authorization": "Bearer " + "b" * 64},
        {"Authorization": "Token " + KEY},
        {},
    ):
        for path in ("/api/v1/health", "/", "/api/v1/index"):
            answer = edge.request("GET", path, wrong)
            assert answer.status == 401, (wrong, path, answer.status)
            assert (answer.header("www-authenticate") or "").startswith("Basic realm=")
    assert edge.reached_paths() == []


def test_backends_get_the_key_id_and_never_the_credentials(edge: RunningEdge) -> None:
    """Issue 17, defect 2: X-API-Key and Authorization reached the app after the verifier accepted them."""
    for form in ("x-api-key", "bearer", "basic"):
        edge.clear()
        for method, path in (
            ("GET", "/"),
            ("POST", "/api/v1/query"),
            ("GET", "/api/v1/stats"),
            ("POST", "/api/v1/index"),
        ):
            assert edge.request(method, path, {**key(form), "X-Auth-Key-Id": "forged"}, b"{}").status == 200
        seen = [s for b in edge.backends.values() for s in b.seen if s.path != "/slow"]
        assert len(seen) == 4
        for s in seen:
            assert s.headers["x-auth-key-id"] == "new-key", s  # the verifier's, not the client's
            assert "x-api-key" not in s.headers and "authorization" not in s.headers, (form, s.path)


def test_the_verifier_is_called_only_with_what_it_needs(edge: RunningEdge) -> None:
    policy = edge.policies[f"SecurityPolicy/kga-{edge.env}-api"]["spec"]["extAuth"]
    assert policy["failOpen"] is False


# --- headers -------------------------------------------------------------------------------------

HSTS = "max-age=31536000; includeSubDomains"
COMMON = {
    "strict-transport-security": HSTS,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "permissions-policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
}


def test_security_headers_and_csp_on_every_route(edge: RunningEdge) -> None:
    web = edge.request("GET", "/", key())
    for name, value in COMMON.items():
        assert web.header(name) == value, name
    csp = dict(d.split(" ", 1) for d in (web.header("content-security-policy") or "").split("; "))
    assert csp["default-src"] == "'self'"
    assert csp["script-src"] == "'self' 'unsafe-inline' https://cdnjs.cloudflare.com https://cdn.jsdelivr.net"
    assert csp["connect-src"] == "'self'" and csp["frame-ancestors"] == "'none'" and csp["object-src"] == "'none'"
    for method, path in (
        ("GET", "/api/v1/health"),
        ("POST", "/api/v1/query"),
        ("GET", "/api/v1/workflows"),
        ("GET", "/api/v1/workflows/debug"),
    ):
        answer = edge.request(method, path, key(), b"{}" if method == "POST" else None)
        assert answer.header("content-security-policy") == "default-src 'none'; frame-ancestors 'none'", path
        for name, value in COMMON.items():
            assert answer.header(name) == value, (path, name)


def test_request_ids_are_kept_or_made(edge: RunningEdge) -> None:
    edge.clear()
    kept = edge.request("GET", "/api/v1/health", {**key(), "X-Request-ID": "rid-test-42"})
    assert kept.header("x-request-id") == "rid-test-42"
    made = edge.request("GET", "/api/v1/health", key())
    rid = made.header("x-request-id") or ""
    assert len(rid) == 36 and rid.count("-") == 4  # a UUID from Envoy
    assert [s.headers["x-request-id"] for s in edge.reached(QUERY)] == ["rid-test-42", rid]


# --- limits --------------------------------------------------------------------------------------


def test_bodies_over_the_limit_get_413(edge: RunningEdge) -> None:
    limit = edge.policies[f"BackendTrafficPolicy/kga-{edge.env}-api"]["spec"]["requestBuffer"]["limit"]
    assert limit == "1Mi"
    edge.clear()
    assert edge.request("POST", "/api/v1/query", key(), b"x" * (1024 * 1024)).status == 200
    assert edge.request("POST", "/api/v1/query", key(), b"x" * (1024 * 1024 + 1)).status == 413
    assert edge.request("POST", "/api/v1/index", key(), b"x" * (2 * 1024 * 1024)).status == 413
    assert edge.request("POST", "/", key(), b"x" * (64 * 1024 + 1)).status == 413  # the UI takes 64 KiB
    assert [s.body for s in edge.reached(QUERY)] == [1024 * 1024]
    assert not edge.reached(INDEXER) and edge.reached_paths() == ["/api/v1/query"]


def _burst(edge: RunningEdge, client: str, count: int) -> list[int]:
    conn = edge.connection(client_ip=client)
    try:
        return [edge.send(conn, "GET", "/api/v1/health", key()).status for _ in range(count)]
    finally:
        conn.close()


def test_rate_limits_are_per_client_with_a_burst(edge: RunningEdge) -> None:
    """Issue 17, defect 4: behind the load balancer of staging's cloud, every client shared one bucket."""
    client, other = edge.fresh_client(), edge.fresh_client()
    edge.clear()
    conn = edge.connection(client_ip=client)
    try:
        first = [edge.send(conn, "GET", "/api/v1/health", key()).status for _ in range(12)]
        # A client-written X-Forwarded-For never picks the bucket: these share the client's.
        spoofed = [
            edge.send(conn, "GET", "/api/v1/health", {**key(), "X-Forwarded-For": f"198.51.100.{n}"}).status
            for n in range(1, 12)
        ]
    finally:
        conn.close()
    # Another client, through the same load balancer, has its own bucket.
    second = _burst(edge, other, 3)
    # The address Envoy keys the buckets on, as it appends it to X-Forwarded-For: each client's own
    # (on EKS from the PROXY header), never the load balancer's.
    counted = {s.headers["x-forwarded-for"].rsplit(",", 1)[-1].strip() for s in edge.reached(QUERY)}
    assert counted == {client, other}, counted
    assert first[:5] == [200] * 5, first  # the burst: 5 per second
    assert 429 in first, first
    assert 429 in spoofed, spoofed
    assert second == [200] * 3, second


def _retries(edge: RunningEdge, route: str) -> int:
    marker = f"/kga-{edge.env}/kga-{edge.env}-{route}/"
    return sum(v for k, v in edge.stats().items() if marker in k and k.endswith(".upstream_rq_retry"))


def test_retries_only_for_idempotent_reads(edge: RunningEdge) -> None:
    """Issue 17, defect 1: without the retriable-status-codes trigger Envoy never retried a 503."""
    before = {r: _retries(edge, r) for r in ("api-reads", "api", "indexer")}
    edge.clear()
    assert edge.request("GET", "/api/v1/fail503", key()).status == 503
    assert edge.request("POST", "/api/v1/fail503", key(), b"{}").status == 503
    assert edge.request("GET", "/api/v1/workflows/fail503", key()).status == 503
    after = {r: _retries(edge, r) for r in ("api-reads", "api", "indexer")}
    assert after["api-reads"] - before["api-reads"] == 2  # numRetries
    assert after["api"] == before["api"] and after["indexer"] == before["indexer"]
    assert [(s.method, s.path) for s in edge.reached(QUERY)] == [("GET", "/api/v1/fail503")] * 3 + [
        ("POST", "/api/v1/fail503")
    ]


def test_route_timeouts_are_what_the_routes_say(edge: RunningEdge) -> None:
    """Envoy's own route table carries each HTTPRoute's timeout; one runs out for real (the UI's, 30 s)."""
    dump = edge.config_dump()
    timeouts: dict[str, set[str]] = {}
    for config in dump["configs"]:
        for dynamic in config.get("dynamic_route_configs", []):
            for vhost in dynamic["route_config"].get("virtual_hosts", []):
                for route in vhost["routes"]:
                    name = route.get("name", "").split("/")
                    if len(name) > 2 and "route" in route:
                        timeouts.setdefault(name[2], set()).add(route["route"].get("timeout", ""))
    for name, obj in edge.routes.items():
        if name.endswith("-redirect"):
            continue
        (rule,) = obj["spec"]["rules"]
        assert timeouts[name] == {rule["timeouts"]["request"]}, name
    assert edge.slow is not None
    status, elapsed = edge.slow.result(timeout=60)
    assert status == 504 and 29 <= elapsed < 38, (status, elapsed)


# --- browsers ------------------------------------------------------------------------------------


def test_cross_site_requests_are_refused(edge: RunningEdge) -> None:
    """Issue 17, defect 3: a form on any site could start indexing with a browser's cached Basic credentials."""
    edge.clear()
    basic = key("basic")
    own = f"https://{edge.domain}"
    for headers in (
        {"Origin": FOREIGN, "Sec-Fetch-Site": "cross-site"},
        {"Origin": "null", "Sec-Fetch-Site": "cross-site"},  # a sandboxed or privacy-redirected form
        {"Sec-Fetch-Site": "cross-site"},
        {"Origin": f"https://other.{edge.domain}", "Sec-Fetch-Site": "same-site"},
    ):
        for path in ("/api/v1/index", "/api/v1/query"):
            answer = edge.request("POST", path, {**basic, **headers, "Content-Type": "text/plain"}, b"{}")
            assert answer.status == 403, (headers, path, answer.status)
    # A cross-site <img> or link to the API does not start work either.
    assert edge.request("GET", "/api/v1/commits/diff/acme/kga", {**basic, "Sec-Fetch-Site": "cross-site"}).status == 403
    assert edge.reached_paths() == []
    # The UI's own calls, API clients (no browser headers), and a link to the UI from elsewhere work.
    assert (
        tier_of(edge.request("POST", "/api/v1/index", {**basic, "Origin": own, "Sec-Fetch-Site": "same-origin"}, b"{}"))
        == INDEXER
    )
    assert tier_of(edge.request("POST", "/api/v1/query", key(), b"{}")) == QUERY
    navigate = {**basic, "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}
    assert tier_of(edge.request("GET", "/", navigate)) == WEB


def test_cors_preflight_from_a_foreign_origin_gets_no_grant(edge: RunningEdge) -> None:
    answer = edge.request(
        "OPTIONS",
        "/api/v1/query",
        {"Origin": FOREIGN, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-api-key"},
    )
    assert answer.header("access-control-allow-origin") is None
    assert answer.status in (401, 403)
    assert not edge.reached(QUERY) or all(s.method != "OPTIONS" for s in edge.reached(QUERY))


def test_the_verifier_down_refuses_everything(edge: RunningEdge) -> None:
    """Fail closed. Runs last for each environment: it stops the verifier."""
    edge.verifier.terminate()
    edge.verifier.wait(timeout=10)
    edge.clear()
    for path in ("/", "/api/v1/health", "/api/v1/index"):
        answer = edge.request("GET", path, key())
        assert answer.status == 403, (path, answer.status)
    assert edge.reached_paths() == []


# --- status from the real translator -------------------------------------------------------------


def _accepted(obj: dict[str, Any]) -> list[str]:
    """The problems in an object's status: each parent/ancestor must say Accepted (and ResolvedRefs) True."""
    status = obj.get("status") or {}
    problems = []
    if obj["kind"] == "Gateway":  # egctl reports the listeners' conditions (the Gateway's own need a cluster)
        conditions = {c["type"]: c for c in status.get("conditions", [])}
        if conditions.get("Accepted", {}).get("status", "True") != "True":
            problems.append(f"Gateway {conditions.get('Accepted')}")
        if not status.get("listeners"):
            problems.append("Gateway: no listener status")
        for listener in status.get("listeners", []):
            lc = {c["type"]: c["status"] for c in listener["conditions"]}
            if lc.get("Accepted") != "True" or lc.get("ResolvedRefs") != "True":
                problems.append(f"listener {listener['name']}: {listener['conditions']}")
        return problems
    parents = status.get("parents") or status.get("ancestors") or []
    if not parents:
        return [f"{obj['kind']}/{obj['metadata']['name']}: no status"]
    for parent in parents:
        for c in parent["conditions"]:
            if c["type"] in ("Accepted", "ResolvedRefs") and c["status"] != "True":
                problems.append(f"{obj['kind']}/{obj['metadata']['name']}: {c['type']} {c['reason']}: {c['message']}")
    return problems


STATUS_KINDS = {"Gateway", "HTTPRoute", "SecurityPolicy", "BackendTrafficPolicy", "ClientTrafficPolicy"}


def _status_problems(env: str, tmp_path: Path, *, drop_service: str = "") -> tuple[set[str], list[str]]:
    """egctl x translate (Envoy Gateway's own translator) on dist/<env>'s edge and the Services it names:
    the objects it reported on, and the problems in their status."""
    edge = edge_objects(env)
    services = [o for o in objects(env).values() if o["kind"] == "Service" and o["metadata"]["name"] != drop_service]
    (gateway,) = [o for o in edge if o["kind"] == "Gateway"]
    cert, private_key = self_signed(gateway["spec"]["listeners"][0]["hostname"], tmp_path)
    # What the cluster adds: the Secret cert-manager issues, each Service's endpoints.
    issued = [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": {"name": ref["name"], "namespace": gateway["metadata"]["namespace"]},
            "data": {"tls.crt": base64.b64encode(cert).decode(), "tls.key": base64.b64encode(private_key).decode()},
        }
        for listener in gateway["spec"]["listeners"]
        for ref in listener.get("tls", {}).get("certificateRefs", [])
    ]
    endpoints = [
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": f"{svc['metadata']['name']}-1",
                "namespace": svc["metadata"]["namespace"],
                "labels": {"kubernetes.io/service-name": svc["metadata"]["name"]},
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [f"10.0.0.{n + 1}"], "conditions": {"ready": True}}],
            "ports": [
                {
                    "name": p.get("name"),
                    "port": p["targetPort"] if isinstance(p.get("targetPort"), int) else p["port"],
                    "protocol": "TCP",
                }
                for p in svc["spec"]["ports"]
            ],
        }
        for n, svc in enumerate(services)
    ]
    # ... and the cluster IP the API server assigns (external auth goes to it).
    services = [{**svc, "spec": {"clusterIP": f"10.96.0.{n + 1}", **svc["spec"]}} for n, svc in enumerate(services)]
    extra = [
        *issued,
        *endpoints,
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "GatewayClass",
            "metadata": {"name": gateway["spec"]["gatewayClassName"]},
            "spec": {"controllerName": "gateway.envoyproxy.io/gatewayclass-controller"},
        },
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": gateway["metadata"]["namespace"]}},
        *services,
    ]
    translated = translate(edge, extra, tmp_path)
    seen = {f"{o['kind']}/{o['metadata']['name']}" for o in translated if o.get("kind") in STATUS_KINDS}
    return seen, [p for o in translated if o.get("kind") in STATUS_KINDS for p in _accepted(o)]


@pytest.mark.parametrize("env", ENV_DIRS)
def test_every_gateway_route_and_policy_is_accepted(env: str, tmp_path: Path) -> None:
    seen, problems = _status_problems(env, tmp_path)
    assert seen == {f"{o['kind']}/{o['metadata']['name']}" for o in edge_objects(env)}
    assert problems == [], yaml.safe_dump(problems)


def test_the_status_check_can_fail(tmp_path: Path) -> None:
    """Without the query Service, its routes do not resolve; the check above would say so."""
    env = ENV_DIRS[0]
    _, problems = _status_problems(env, tmp_path, drop_service=f"kga-{env}-query")
    assert any(f"HTTPRoute/kga-{env}-api: ResolvedRefs" in p for p in problems), problems


# --- never skipped in CI ---------------------------------------------------------------------------


def test_a_missing_edge_tool_fails_in_ci_and_skips_only_elsewhere(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """.ci/run sets CI=true: there a missing envoy-gateway, egctl or Envoy wheel fails the traffic tests
    instead of skipping them (the harness's own look-ups, with nothing to find)."""
    monkeypatch.setattr(edge_harness, "EG_TOOLS", tmp_path)
    monkeypatch.setattr(edge_harness, "importlib", SimpleNamespace(util=SimpleNamespace(find_spec=lambda _: None)))
    monkeypatch.setenv("PATH", str(tmp_path))
    looks = {"envoy-gateway": edge_harness.envoy_gateway, "egctl": edge_harness.egctl, "envoy": edge_harness.envoy}
    for ci in ("true", None):
        if ci:
            monkeypatch.setenv("CI", ci)
        else:
            monkeypatch.delenv("CI", raising=False)
        for name, look in looks.items():
            with pytest.raises(pytest.fail.Exception if ci else pytest.skip.Exception, match=name) as caught:
                look()
            assert ("required in CI" in str(caught.value)) == bool(ci), (name, str(caught.value))
