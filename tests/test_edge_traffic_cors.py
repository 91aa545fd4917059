"""CORS from an allowed origin under real traffic: staging's edge rendered with one allowed origin.

A module of its own: tests/test_edge_traffic.py keeps one environment's edge running per module,
and only one Envoy Gateway can run at a time (tests/edge_harness.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import build, env_data
from edge_harness import EG_API, edge_objects, running_edge

from kgstack.environment import parse_environment
from kgstack.publish import manifests

pytestmark = pytest.mark.go_build("envoy-gateway")

FOREIGN = "https://evil.example.net"
QUERY = "query"


def test_cors_preflight_from_an_allowed_origin(tmp_path: Path) -> None:
    env = parse_environment(
        env_data("staging", edge__corsAllowedOrigins=["https://app.example.com"]), source="staging.yaml"
    )
    _, stack = build(env)
    rendered = [o for o in manifests(stack).values() if o["apiVersion"].startswith(("gateway.", EG_API))]
    edge_only = [o for o in rendered if o["kind"] in {o2["kind"] for o2 in edge_objects("staging")}]
    with running_edge("staging", tmp_path, edge=edge_only) as running:
        preflight = {
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "x-api-key,content-type",
        }
        allowed = running.request("OPTIONS", "/api/v1/query", {"Origin": "https://app.example.com", **preflight})
        assert allowed.status == 200
        assert allowed.header("access-control-allow-origin") == "https://app.example.com"
        assert "POST" in (allowed.header("access-control-allow-methods") or "")
        assert "x-api-key" in (allowed.header("access-control-allow-headers") or "").lower()
        assert allowed.header("access-control-allow-credentials") is None
        foreign = running.request("OPTIONS", "/api/v1/query", {"Origin": FOREIGN, **preflight})
        assert foreign.header("access-control-allow-origin") is None
        assert not [s for s in running.reached(QUERY) if s.method == "OPTIONS"]
