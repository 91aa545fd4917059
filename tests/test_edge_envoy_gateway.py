"""The Envoy Gateway policy pack: external auth, limits and retries, client traffic."""

from __future__ import annotations

from test_edge import props, render


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
    assert set(api["extAuth"]["headersToExtAuth"]) == {"authorization", "x-api-key", "x-request-id"}
    assert [t["name"] for t in objects["SecurityPolicy/kga-prod-web"]["spec"]["targetRefs"]] == ["kga-prod-web"]
    # The blocked route needs no key: everyone gets 403.
    targeted = {
        t["name"] for k, o in objects.items() if k.startswith("SecurityPolicy/") for t in o["spec"]["targetRefs"]
    }
    assert "kga-prod-blocked" not in targeted
    assert "SecurityPolicy/kga-prod-web" not in render(props(public_ui=True))


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
    # Default: an L4 balancer (AWS NLB) appends nothing, so X-Forwarded-For is the client's own
    # word and must not pick the address the rate limits count (review: spoofable with 1 hop).
    assert "clientIPDetection" not in spec
    l7 = render(props(gateway={"trustedProxyHops": 1}))["ClientTrafficPolicy/kga-prod"]["spec"]
    assert l7["clientIPDetection"] == {"xForwardedFor": {"numTrustedHops": 1}}
    assert spec["headers"]["requestID"] == "PreserveOrGenerate"
    assert spec["path"]["escapedSlashesAction"] == "UnescapeAndRedirect"
    # The buffer holds the largest body a route accepts (1 MiB).
    assert spec["connection"]["bufferLimit"] == "1056Ki"
