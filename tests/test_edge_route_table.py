"""The route table: every path the agent serves, and the blocked ones in disguise, through dist/'s HTTPRoutes.

For each request the test computes where the synthesized HTTPRoutes send it, by the
Gateway API's match precedence (HTTPRoute spec, "Rule precedence"): among the
matching rules of the routes attached to the listener and host, an Exact path beats
a prefix, a longer prefix beats a shorter one, then a method match, then more header
matches, more query matches, the older route (not known here), ``namespace/name``
alphabetically, and rule order.

Before matching, the path is normalised the way the gateway does it with the
ClientTrafficPolicy in dist/ (which this test also checks): Envoy Gateway turns on
Envoy's RFC 3986 normalisation (percent-decoding of unreserved characters, dot
segments, ``\\`` as ``/``), merges slashes, and redirects a path with an escaped
slash (``%2F``, ``%5C``) to its unescaped form, which the client then requests.

The expectations below are written out by hand (service names and ports), not taken
from the constructs: the app's API list (``src/api/routes.py`` of the app, mounted at
``/api/v1``), the health endpoints of docs/agent.md, and the UI's files.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import pytest
import yaml
from conftest import ENV_DIRS, ROOT

Manifest = dict[str, Any]
UNRESERVED = re.compile(r"%(?:[46][1-9A-Fa-f]|[57][0-9Aa]|3[0-9]|2[Dd]|2[Ee]|5[Ff]|7[Ee])")
"""Percent-encoded ALPHA / DIGIT / - . _ ~ (RFC 3986, section 2.3)."""
ESCAPED_SLASH = re.compile(r"%(2[Ff]|5[Cc])")


@dataclass(frozen=True)
class Outcome:
    kind: str
    """``backend``, ``redirect`` or ``none`` (404 from the gateway)."""
    target: str = ""
    """``service:port`` or the redirect's scheme."""


def load(env: str) -> list[Manifest]:
    return [
        yaml.safe_load(p.read_text())
        for p in sorted((ROOT / "dist" / env).glob("*.yaml"))
        if p.name != "kustomization.yaml"
    ]


def normalise(path: str) -> tuple[str, bool]:
    """The path the routes see, and whether the gateway first redirected an escaped slash."""
    path = path.split("?", 1)[0]
    redirected = bool(ESCAPED_SLASH.search(path))
    if redirected:  # UnescapeAndRedirect: the client comes back with the unescaped path
        path = ESCAPED_SLASH.sub(lambda m: unquote(m.group(0)), path)
    path = UNRESERVED.sub(lambda m: unquote(m.group(0)), path).replace("\\", "/")
    path = re.sub(r"/{2,}", "/", path)  # merge slashes
    trailing = path.endswith("/") and path != "/"
    path = posixpath.normpath(path) if path != "/" else path  # dot segments
    if path.startswith("//"):
        path = path[1:]
    return (path + "/" if trailing and not path.endswith("/") else path), redirected


def prefix_matches(prefix: str, path: str) -> bool:
    """PathPrefix matches whole path elements: ``/api`` matches ``/api/x``, not ``/apix``."""
    prefix = prefix.rstrip("/") or "/"
    return prefix in ("/", path) or path.startswith(prefix + "/")


def path_matches(match: dict[str, str], path: str) -> tuple[bool, int]:
    """Whether it matches, and 1 for an Exact match (which outranks every prefix)."""
    if match["type"] == "Exact":
        return match["value"] == path, 1
    if match["type"] == "PathPrefix":
        return prefix_matches(match["value"], path), 0
    pytest.fail(f"path type {match['type']} is not portable")


def route_for(objects: list[Manifest], listener: str, host: str, method: str, raw_path: str) -> tuple[Outcome, bool]:
    path, redirected = normalise(raw_path)
    candidates: list[tuple[tuple[int, int, int, int, int], str, int, Manifest]] = []
    for obj in objects:
        if obj["kind"] != "HTTPRoute":
            continue
        spec = obj["spec"]
        if not any(p.get("sectionName") == listener for p in spec["parentRefs"]):
            continue
        if host not in spec.get("hostnames", [host]):
            continue
        for index, rule in enumerate(spec["rules"]):
            for match in rule.get("matches", [{"path": {"type": "PathPrefix", "value": "/"}}]):
                p = match.get("path", {"type": "PathPrefix", "value": "/"})
                ok, exact = path_matches(p, path)
                if not ok or match.get("method", method) != method:
                    continue
                rank = (
                    exact,
                    len(p["value"]),
                    int("method" in match),
                    len(match.get("headers", [])),
                    len(match.get("queryParams", [])),
                )
                name = f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"
                candidates.append((rank, name, index, rule))
    if not candidates:
        return Outcome("none"), redirected
    # Highest rank first; ties go to the alphabetically first namespace/name, then rule order.
    candidates.sort(key=lambda c: (tuple(-x for x in c[0]), c[1], c[2]))
    rule = candidates[0][3]
    for f in rule.get("filters", []):
        if f["type"] == "RequestRedirect":
            return Outcome("redirect", f["requestRedirect"]["scheme"]), redirected
    (backend,) = rule["backendRefs"]
    return Outcome("backend", f"{backend['name']}:{backend['port']}"), redirected


def host_of(objects: list[Manifest]) -> str:
    (host,) = {h for o in objects if o["kind"] == "HTTPRoute" for h in o["spec"]["hostnames"]}
    return str(host)


# Where each request must land; the instance is kga-<env>.
WEB, QUERY, INDEXER, BLOCKED = "web:8080", "query:8000", "indexer:8000", "auth:8081"
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
    ("POST", "/api/v1/graph/query", QUERY),
    ("GET", "/api/v1/graph/info", QUERY),
    ("GET", "/api/v1/graph/health", QUERY),
    ("GET", "/api/v1/indexes", QUERY),  # not /api/v1/index: prefixes match whole segments
    # The single indexer: indexing runs and in-memory workflow state.
    ("POST", "/api/v1/index", INDEXER),
    ("POST", "/api/v1/index/repository", INDEXER),
    ("GET", "/api/v1/workflows", INDEXER),
    ("GET", "/api/v1/workflows/3f2a/status", INDEXER),
    ("GET", "/api/v1/workflows?status=running", INDEXER),
]
BLOCKED_REQUESTS = [
    ("POST", "/api/v1/fix/chroma-dimension"),
    ("GET", "/api/v1/fix/chroma-dimension"),
    ("GET", "/api/v1/workflows/debug"),
    ("GET", "/api/v1/workflows/debug/"),
    ("GET", "/api/v1/workflows/debug?verbose=1"),
    ("GET", "/api/v1/workflows//debug"),
    ("GET", "//api/v1/workflows/debug"),
    ("GET", "/api/v1/./workflows/debug"),
    ("GET", "/api/v1/workflows/x/../debug"),
    ("GET", "/api/v1/workflows/x/%2E%2E/debug"),
    ("GET", "/api/v1/index/../workflows/debug"),
    ("GET", "/api/v1/workflows/%64ebug"),
    ("GET", "/api/v1/workflows/%64%65%62%75%67"),
    ("POST", "/api/v1/fix/chroma%2Ddimension"),
    ("POST", "/api/v1/fix/%63hroma-dimension"),
    ("POST", "/api/v1/fix%2Fchroma-dimension"),
    ("POST", "/api/v1/fix%2fchroma-dimension"),
    ("POST", "/api%2Fv1%2Ffix%2Fchroma-dimension"),
    ("GET", "/api/v1/workflows\\debug"),
    ("GET", "/api/v1/workflows%5Cdebug"),
]


@pytest.fixture(scope="module", params=ENV_DIRS)
def shipped(request: pytest.FixtureRequest) -> tuple[str, list[Manifest]]:
    return str(request.param), load(str(request.param))


def test_the_gateway_normalises_paths_as_the_table_assumes(shipped: tuple[str, list[Manifest]]) -> None:
    _env, objects = shipped
    (policy,) = [o for o in objects if o["kind"] == "ClientTrafficPolicy"]
    assert policy["spec"]["path"] == {"escapedSlashesAction": "UnescapeAndRedirect", "disableMergeSlashes": False}


@pytest.mark.parametrize(("method", "path", "where"), AGENT_PATHS)
def test_agent_paths_reach_their_tier(shipped: tuple[str, list[Manifest]], method: str, path: str, where: str) -> None:
    env, objects = shipped
    outcome, _ = route_for(objects, "https", host_of(objects), method, path)
    assert outcome == Outcome("backend", f"kga-{env}-{where}"), (method, path)


@pytest.mark.parametrize(("method", "path"), BLOCKED_REQUESTS)
def test_maintenance_paths_are_blocked_in_every_disguise(
    shipped: tuple[str, list[Manifest]], method: str, path: str
) -> None:
    env, objects = shipped
    outcome, _ = route_for(objects, "https", host_of(objects), method, path)
    assert outcome == Outcome("backend", f"kga-{env}-{BLOCKED}"), (method, path)


@pytest.mark.parametrize(("method", "path"), [(m, p) for m, p, _ in AGENT_PATHS] + BLOCKED_REQUESTS)
def test_plain_http_only_redirects(shipped: tuple[str, list[Manifest]], method: str, path: str) -> None:
    _env, objects = shipped
    outcome, _ = route_for(objects, "http", host_of(objects), method, path)
    assert outcome == Outcome("redirect", "https"), (method, path)


def test_another_host_reaches_nothing(shipped: tuple[str, list[Manifest]]) -> None:
    _env, objects = shipped
    assert route_for(objects, "https", "other.example.com", "GET", "/api/v1/health")[0] == Outcome("none")


def test_the_table_can_fail() -> None:
    """Without the blocked route, the debug endpoint would reach the indexer, and %64ebug with it."""
    objects = [o for o in load(ENV_DIRS[0]) if not o["metadata"]["name"].endswith("-blocked")]
    host = host_of(objects)
    for path in ("/api/v1/workflows/debug", "/api/v1/workflows/%64ebug"):
        outcome, _ = route_for(objects, "https", host, "GET", path)
        assert outcome.target.endswith("-indexer:8000")
    assert normalise("/api/v1/fix%2Fchroma-dimension") == ("/api/v1/fix/chroma-dimension", True)
