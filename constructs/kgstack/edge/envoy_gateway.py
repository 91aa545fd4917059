"""The Envoy Gateway policy pack (``gateway.envoyproxy.io/v1alpha1``): what the standard lacks.

Attached to the HTTPRoutes of :mod:`kgstack.edge.gateway_api` by name:

* ``SecurityPolicy``: the CORS allow-list and external auth to our API-key
  verifier (several keys valid at once; the key's id goes to the app as
  ``X-Auth-Key-Id``; cross-site requests refused). Why ext auth and not ``apiKeyAuth``: docs/edge.md.
* ``BackendTrafficPolicy``: per-client rate limits, a circuit breaker, the request
  body limit (``requestBuffer``: larger bodies get 413), connect timeout, and
  retries only on the routes that carry idempotent requests (the UI, GET /api).
* ``ClientTrafficPolicy`` (stack-owned Gateway only; a platform Gateway's is the
  platform's): the client's address as the cloud's load balancer delivers it (peer,
  PROXY protocol or ``X-Forwarded-For``),
  request IDs, path normalisation, connection limits and buffer size.
"""

from __future__ import annotations

from typing import Any

from constructs import Construct

from .common import (
    CREDENTIAL_HEADERS,
    CROSS_SITE_HEADERS,
    KEY_ID_HEADER,
    VERIFY_PATH,
    EdgeAuth,
    EdgeProps,
    byte_count,
)
from .gateway_api import GROUP, GatewayApiRoutes, api_object

API_VERSION = "gateway.envoyproxy.io/v1alpha1"
UI_BODY_LIMIT = "64Ki"
RETRY_ON = {"triggers": ["connect-failure", "refused-stream", "retriable-status-codes"], "httpStatusCodes": [503]}
"""Failures where the request never ran, or the backend refused it before doing anything. Envoy retries
the listed status codes only with the ``retriable-status-codes`` trigger."""
REQUEST_ID = "%REQ(X-REQUEST-ID)%"
"""Envoy command operator: the request's ID (the client's, or one Envoy generated)."""


class EnvoyGatewayPolicies(Construct):
    """SecurityPolicies, BackendTrafficPolicies and (own Gateway) a ClientTrafficPolicy."""

    def __init__(
        self, scope: Construct, id: str, *, props: EdgeProps, routes: GatewayApiRoutes, auth: EdgeAuth
    ) -> None:
        super().__init__(scope, id)
        self.props = props
        self.routes = routes
        s = props.settings
        n = routes.names
        instance = props.identity.instance

        def ext_auth(body_limit: str) -> dict[str, Any]:
            return {
                **verify,
                # External auth holds the request until the verifier answers, then hands the whole body on
                # at once, past requestBuffer's limit (seen with real traffic: 2 MiB reached the app). It
                # enforces the limit itself when it holds the body: 413 above it, the verifier never called.
                "bodyToExtAuth": {"maxRequestBytes": byte_count(body_limit)},
            }

        verify = {
            "http": {
                "backendRefs": [{"kind": "Service", "name": auth.verifier.service, "port": auth.verifier.port}],
                "path": VERIFY_PATH,
                "headersToBackend": [KEY_ID_HEADER],
            },
            # The credential, what tells a cross-site request, and the request ID the verifier logs.
            "headersToExtAuth": [h.lower() for h in (*CREDENTIAL_HEADERS, *CROSS_SITE_HEADERS, "X-Request-ID")],
            # A verifier outage refuses requests; it never opens the API.
            "failOpen": False,
            "timeout": "2s",
        }
        api_security: dict[str, Any] = {"extAuth": ext_auth(s.max_body_size)}
        cors = self._cors()
        if cors:
            api_security["cors"] = cors
        self._policy("SecurityPolicy", f"{instance}-api", [n.api, n.api_reads, n.indexer], api_security)
        if not s.public_ui:
            self._policy("SecurityPolicy", f"{instance}-web", [n.web], {"extAuth": ext_auth(UI_BODY_LIMIT)})

        g = s.gateway
        per_client = [{"sourceCIDR": {"type": "Distinct", "value": "0.0.0.0/0"}}]

        def traffic(rps: int, body: str, retry: bool) -> dict[str, Any]:
            spec: dict[str, Any] = {
                "rateLimit": {
                    "type": "Local",
                    "local": {"rules": [{"clientSelectors": per_client, "limit": {"requests": rps, "unit": "Second"}}]},
                },
                "circuitBreaker": {"maxParallelRequests": g.backend_max_parallel_requests},
                "requestBuffer": {"limit": body},
                "timeout": {"tcp": {"connectTimeout": "5s"}},
            }
            if retry and g.retries:
                spec["retry"] = {"numRetries": g.retries, "retryOn": RETRY_ON}
            return spec

        # Queries (POST) run an LLM and indexing starts work: never retried.
        self._policy(
            "BackendTrafficPolicy",
            f"{instance}-api",
            [n.api, n.indexer, n.blocked],
            traffic(s.rate_limit_rps, s.max_body_size, retry=False),
        )
        self._policy(
            "BackendTrafficPolicy",
            f"{instance}-api-reads",
            [n.api_reads],
            traffic(s.rate_limit_rps, s.max_body_size, retry=True),
        )
        self._policy(
            "BackendTrafficPolicy", f"{instance}-web", [n.web], traffic(s.ui_rate_limit_rps, UI_BODY_LIMIT, retry=True)
        )
        if routes.gateway.owned:
            self._client_traffic()

    def _cors(self) -> dict[str, Any]:
        origins = self.props.settings.cors_allowed_origins
        if not origins:
            return {}  # the UI is same-origin; browsers then refuse cross-origin reads
        return {
            "allowOrigins": list(origins),
            "allowMethods": ["GET", "POST", "OPTIONS"],
            "allowHeaders": ["Content-Type", "Authorization", "X-API-Key", "X-Request-ID"],
            "exposeHeaders": ["X-Request-ID"],
            # Cross-origin callers send their key explicitly; no cookies or cached Basic credentials.
            "allowCredentials": False,
            "maxAge": "600s",
        }

    def _policy(self, kind: str, name: str, routes: list[str], spec: dict[str, Any]) -> None:
        targets = [{"group": GROUP, "kind": "HTTPRoute", "name": r} for r in routes]
        api_object(
            self,
            f"{kind}-{name}",
            api_version=API_VERSION,
            kind=kind,
            identity=self.routes.identity,
            name=name,
            namespace=self.props.namespace,
            spec={"targetRefs": targets, **spec},
        )

    def _client_ip(self) -> dict[str, Any]:
        """The address the per-client rate limits count, as the cloud's load balancer delivers it."""
        source = self.props.client_ip
        if source == "proxy-protocol":
            # Required, not optional: a connection without the header would be counted as the balancer.
            return {"proxyProtocol": {"optional": False}}
        if source == "x-forwarded-for":
            return {
                "clientIPDetection": {
                    "xForwardedFor": {"numTrustedHops": self.props.settings.gateway.trusted_proxy_hops}
                }
            }
        # The peer is the client (a network balancer that keeps it); a client-written X-Forwarded-For
        # must not choose the address the rate limits count.
        return {}

    def _client_traffic(self) -> None:
        p = self.props
        g = p.settings.gateway
        largest = max(byte_count(p.settings.max_body_size), byte_count(UI_BODY_LIMIT))
        api_object(
            self,
            "ClientTrafficPolicy",
            api_version=API_VERSION,
            kind="ClientTrafficPolicy",
            identity=self.routes.identity,
            name=self.routes.gateway.name,
            namespace=p.namespace,
            spec={
                "targetRefs": [{"group": GROUP, "kind": "Gateway", "name": self.routes.gateway.name}],
                **self._client_ip(),
                "headers": {
                    "requestID": "PreserveOrGenerate",
                    # The app and the access log see the same ID the client gets back.
                    "lateResponseHeaders": {"set": [{"name": "X-Request-ID", "value": REQUEST_ID}]},
                    # As nginx does (underscores_in_headers off): such headers never reach the app.
                    "withUnderscoresAction": "DropHeader",
                },
                # Matching sees the normalised path the app will see: no %2F or %5C tricks past a block.
                "path": {"escapedSlashesAction": "UnescapeAndRedirect", "disableMergeSlashes": False},
                "connection": {
                    # Room to buffer the largest body the routes accept (their limit answers 413).
                    "bufferLimit": f"{largest // 1024 + 32}Ki",
                    "connectionLimit": {"value": g.connection_limit},
                },
            },
        )
