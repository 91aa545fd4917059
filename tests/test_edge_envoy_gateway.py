"""The Envoy Gateway policy pack: external auth, limits and retries, client traffic."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
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
    assert set(api["extAuth"]["headersToExtAuth"]) == {
        "authorization",
        "x-api-key",
        "x-request-id",
        "origin",
        "sec-fetch-site",
    }
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
    # Without retriable-status-codes Envoy ignores httpStatusCodes (issue 17; test_edge_traffic counts retries).
    assert set(reads["retry"]["retryOn"]["triggers"]) == {"connect-failure", "refused-stream", "retriable-status-codes"}
    assert reads["retry"]["retryOn"]["httpStatusCodes"] == [503]
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
    # generic: a network balancer that keeps the peer address; X-Forwarded-For is the client's own
    # word and must not pick the address the rate limits count (review: spoofable with 1 hop).
    assert "clientIPDetection" not in spec and "proxyProtocol" not in spec
    l7 = render(props(gateway={"clientIp": "x-forwarded-for", "trustedProxyHops": 1}))
    assert l7["ClientTrafficPolicy/kga-prod"]["spec"]["clientIPDetection"] == {"xForwardedFor": {"numTrustedHops": 1}}
    assert spec["headers"]["requestID"] == "PreserveOrGenerate"
    assert spec["path"]["escapedSlashesAction"] == "UnescapeAndRedirect"
    # The buffer holds the largest body a route accepts (1 MiB).
    assert spec["connection"]["bufferLimit"] == "1056Ki"


@pytest.mark.parametrize(
    ("provider", "annotations", "proxy_protocol"),
    [
        # EKS's default Classic ELB (staging) and its NLBs hand Envoy their own address: PROXY protocol.
        ("eks", {}, True),
        ("eks", {"service.beta.kubernetes.io/aws-load-balancer-type": "nlb"}, True),
        ("gke", {}, False),
        ("aks", {}, False),
        ("generic", {}, False),
    ],
)
def test_client_address_follows_the_cloud_load_balancer(
    provider: str, annotations: dict[str, str], proxy_protocol: bool
) -> None:
    p = props().model_copy(update={"cloud_provider": provider, "load_balancer_annotations": annotations})
    objects = render(p)
    spec = objects["ClientTrafficPolicy/kga-prod"]["spec"]
    lb = objects["Gateway/kga-prod"]["spec"].get("infrastructure", {}).get("annotations", {})
    if proxy_protocol:
        assert spec["proxyProtocol"] == {"optional": False}  # a connection without it is refused
        assert lb == {**annotations, "service.beta.kubernetes.io/aws-load-balancer-proxy-protocol": "*"}
    else:
        assert "proxyProtocol" not in spec and "clientIPDetection" not in spec
        assert lb == annotations


def test_client_ip_and_hops_agree() -> None:
    for bad in ({"trustedProxyHops": 1}, {"clientIp": "x-forwarded-for"}, {"clientIp": "peer", "trustedProxyHops": 2}):
        with pytest.raises(ValidationError, match="trustedProxyHops"):
            props(gateway=bad)
    explicit = props(gateway={"clientIp": "peer"}).model_copy(update={"cloud_provider": "eks"})
    assert "proxyProtocol" not in render(explicit)["ClientTrafficPolicy/kga-prod"]["spec"]
