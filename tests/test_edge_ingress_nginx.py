"""The legacy ingress-nginx edge, still selectable: routing, auth-url, headers, limits, the retirement notice."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import cdk8s
import yaml
from conftest import ROOT, env_data
from test_edge import props

from kgstack.edge import BLOCKED_PATHS, Edge, EdgeProps
from kgstack.edge.ingress_nginx import ALLOWED_RESPONSE_HEADERS, RETIRED_NOTICE
from kgstack.publish import manifests
from kgstack.schema import schema_problems

N = "nginx.ingress.kubernetes.io"


def render(p: EdgeProps | None = None) -> tuple[Edge, dict[str, dict[str, Any]]]:
    chart = cdk8s.Chart(cdk8s.App(), "prod", disable_resource_name_hashes=True)
    edge = Edge(chart, "Edge", props=p or props(controller="ingress-nginx"))
    return edge, {f"{o['kind']}/{o['metadata']['name']}": o for o in manifests(chart).values()}


def legacy(**settings: Any) -> dict[str, dict[str, Any]]:
    return render(props(controller="ingress-nginx", **settings))[1]


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


def test_selected_with_a_one_line_retirement_notice() -> None:
    edge, objects = render()
    assert edge.notices == [RETIRED_NOTICE] and "\n" not in RETIRED_NOTICE and "retired" in RETIRED_NOTICE
    assert not [k for k in objects if objects[k]["apiVersion"].startswith("gateway.")]
    assert render(props())[0].notices == []
    for version in ("1.27", "1.35"):
        assert [p for o in objects.values() for p in schema_problems(o, version)] == []


def test_path_routing_and_blocked_endpoints() -> None:
    r = routes(legacy())
    assert r["/"][:2] == ("kga-prod-web", 8080)
    assert r["/api"][:2] == ("kga-prod-query", 8000)
    assert r["/api/v1/index"][:2] == r["/api/v1/workflows"][:2] == ("kga-prod-indexer", 8000)
    for path in BLOCKED_PATHS:
        assert r[path][:2] == ("kga-prod-auth", 8081)
        assert all(len(path) > len(other) for other in r if path.startswith(other) and other != path)


def test_raw_cypher_is_refused_and_commit_tracking_reaches_the_indexer() -> None:
    """Issue 16 defects 9 and 6 on the legacy edge, written out here (not read from the path tables)."""
    r = routes(legacy())
    assert r["/api/v1/graph/query"][:2] == ("kga-prod-auth", 8081)
    assert r["/api/v1/commits"][:2] == ("kga-prod-indexer", 8000)


def test_api_requires_a_key_ui_too_unless_public() -> None:
    objects = legacy()
    auth_url = "http://kga-prod-auth.kga-prod.svc.cluster.local:8080/verify"
    for name in ("api", "indexer", "web"):
        assert objects[f"Ingress/kga-prod-{name}"]["metadata"]["annotations"][f"{N}/auth-url"] == auth_url
    public = legacy(public_ui=True)
    assert f"{N}/auth-url" not in public["Ingress/kga-prod-web"]["metadata"]["annotations"]


def test_no_snippets_tls_limits_and_headers() -> None:
    objects = legacy()
    for key, obj in objects.items():
        if obj["kind"] != "Ingress":
            continue
        annotations = obj["metadata"]["annotations"]
        assert not [a for a in annotations if "snippet" in a], key
        assert annotations[f"{N}/force-ssl-redirect"] == "true"
        assert obj["spec"]["tls"] == [{"hosts": ["kga.example.com"], "secretName": "kga-prod-tls"}]
    api = objects["Ingress/kga-prod-api"]["metadata"]["annotations"]
    assert api[f"{N}/limit-rps"] == "5" and api[f"{N}/proxy-body-size"] == "1m"
    assert int(objects["Ingress/kga-prod-indexer"]["metadata"]["annotations"][f"{N}/proxy-read-timeout"]) > int(
        api[f"{N}/proxy-read-timeout"]
    )
    web = objects["ConfigMap/kga-prod-headers-web"]["data"]
    assert set(web) == set(ALLOWED_RESPONSE_HEADERS) and web["X-Request-ID"] == "$req_id"


def test_synth_prints_the_notice_once_per_environment_that_chooses_it(tmp_path: Path) -> None:
    envdir = tmp_path / "environments"
    envdir.mkdir()
    data = env_data("dev")
    data["edge"] = {"controller": "ingress-nginx"}
    (envdir / "dev.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    result = subprocess.run(
        [sys.executable, str(ROOT / "app.py"), "--environments", str(envdir), "--outdir", str(tmp_path / "dist")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "constructs")},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    notices = [line for line in result.stderr.splitlines() if "retired" in line]
    assert notices == [f"environment dev: {RETIRED_NOTICE}"]
    assert (tmp_path / "dist" / "dev" / "ingress-kga-dev-api.yaml").exists()
