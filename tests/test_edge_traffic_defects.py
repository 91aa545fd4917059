"""Issue 17's four defects put back into dist/staging's edge: the traffic check that covers each fails on it.

Each old behaviour is the committed edge with that one fix taken out again (what commit 0149952 changed
in the rendered objects), not a second copy of the edge; the checks are tests/test_edge_traffic.py's own,
run on Envoy Gateway and Envoy by the same harness. Staging: its cloud's load balancer (EKS) is the one
behind defect 4. A module of its own: one edge runs at a time (tests/edge_harness.py).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import test_edge_traffic as traffic
from edge_harness import AWS_PROXY_PROTOCOL, RunningEdge, edge_objects, running_edge

pytestmark = pytest.mark.go_build("envoy-gateway")

Obj = dict[str, Any]
ENV = "staging"


def retries_without_the_trigger(edge: list[Obj]) -> None:
    """Defect 1: ``retryOn`` listed ``httpStatusCodes: [503]`` without the ``retriable-status-codes`` trigger."""
    for obj in edge:
        if obj["kind"] == "BackendTrafficPolicy" and "retry" in obj["spec"]:
            obj["spec"]["retry"]["retryOn"]["triggers"].remove("retriable-status-codes")


def credentials_forwarded(edge: list[Obj]) -> None:
    """Defect 2: no route removed ``Authorization`` and ``X-API-Key`` before the backends."""
    for obj in edge:
        if obj["kind"] == "HTTPRoute":
            for rule in obj["spec"]["rules"]:
                rule["filters"] = [f for f in rule.get("filters", []) if f["type"] != "RequestHeaderModifier"]


def verifier_blind_to_the_site(edge: list[Obj]) -> None:
    """Defect 3: external auth passed the verifier neither ``Origin`` nor ``Sec-Fetch-Site``."""
    for obj in edge:
        if obj["kind"] == "SecurityPolicy":
            ext = obj["spec"]["extAuth"]
            ext["headersToExtAuth"] = [h for h in ext["headersToExtAuth"] if h not in ("origin", "sec-fetch-site")]


def client_is_the_load_balancer(edge: list[Obj]) -> None:
    """Defect 4: the Gateway asked the EKS balancer for no PROXY protocol and the listener read none."""
    for obj in edge:
        if obj["kind"] == "Gateway":
            obj["spec"]["infrastructure"]["annotations"].pop(AWS_PROXY_PROTOCOL)
        if obj["kind"] == "ClientTrafficPolicy":
            del obj["spec"]["proxyProtocol"]


Check = Callable[[RunningEdge], None]
DEFECTS: dict[str, tuple[Callable[[list[Obj]], None], Check, str]] = {
    # defect: (put it back, the check that covers it, what the check says about it)
    "1-retries": (
        retries_without_the_trigger,
        traffic.test_retries_only_for_idempotent_reads,
        r"assert \(\d+ - \d+\) == 2",
    ),
    "2-credentials": (
        credentials_forwarded,
        traffic.test_backends_get_the_key_id_and_never_the_credentials,
        r"assert \('x-api-key' not in \{",
    ),
    "3-cross-site": (verifier_blind_to_the_site, traffic.test_cross_site_requests_are_refused, r"assert 200 == 403"),
    "4-client-address": (
        client_is_the_load_balancer,
        traffic.test_rate_limits_are_per_client_with_a_burst,
        # Every client counted as one address (Envoy's own for a connection from loopback).
        r"assert \{'[\d.]+'\} == \{'127\.1\.",
    ),
}


@pytest.mark.parametrize(
    "defects",
    # Defect 4 on an edge of its own: with every client in one bucket, the other checks would see 429s.
    [("1-retries", "2-credentials", "3-cross-site"), ("4-client-address",)],
    ids=["1-2-3", "4"],
)
def test_the_traffic_check_fails_on_the_old_behaviour(defects: tuple[str, ...], tmp_path: Path) -> None:
    edge = copy.deepcopy(edge_objects(ENV))
    for defect in defects:
        before = copy.deepcopy(edge)
        DEFECTS[defect][0](edge)
        assert edge != before, f"{defect}: the fix is no longer in the rendered edge to take out"
    with running_edge(ENV, tmp_path, edge=edge) as running:
        for defect in defects:
            _, check, says = DEFECTS[defect]
            with pytest.raises(AssertionError, match=says) as failed:
                check(running)
            said = next(line for line in str(failed.value).splitlines() if line.startswith("assert"))
            print(f"\n[{defect}] {check.__name__} fails: {said[:150]}")
