"""The portable half of the Gateway API edge: HTTPRoutes, and the Gateway when the stack owns one.

Only standard ``gateway.networking.k8s.io/v1`` fields are used here: path and
method matches, ``ResponseHeaderModifier`` for the security headers,
``RequestHeaderModifier`` to keep the API key from the backends,
``RequestRedirect`` for HTTP -> HTTPS, per-rule ``timeouts`` and
``BackendTLSPolicy``. What the standard lacks (CORS, API keys, limits, retries,
client IPs) is attached to these routes by name by a policy pack
(:mod:`kgstack.edge.envoy_gateway`), so a second implementation never touches
this module.

Routes (``<i>`` is the release instance), all on the one host:

* ``<i>-web``: ``/`` -> web UI;
* ``<i>-api``: ``/api`` -> query tier; ``<i>-api-reads``: the same for GET, which
  Gateway API precedence prefers (method match) and which alone may be retried;
* ``<i>-indexer``: ``/api/v1/index``, ``/api/v1/workflows``, ``/api/v1/commits`` -> the
  single indexer;
* ``<i>-blocked``: the maintenance endpoints and raw Cypher -> the verifier's 403 port
  (longest prefixes, so they win over the indexer and ``/api``);
* ``<i>-redirect``: every request on the HTTP listener -> 301 to HTTPS.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import cdk8s
from constructs import Construct

from ..connections import Endpoint
from ..custom_resource import custom_resource
from ..naming import Identity
from .common import (
    API_CSP,
    API_PREFIX,
    BLOCKED_PATHS,
    CREDENTIAL_HEADERS,
    INDEXER_PATHS,
    EdgeProps,
    content_security_policy,
    security_headers,
)

GROUP = "gateway.networking.k8s.io"
API_VERSION = f"{GROUP}/v1"
HTTPS_LISTENER = "https"
HTTP_LISTENER = "http"
UI_TIMEOUT_SECONDS = 30


@dataclass(frozen=True)
class GatewayRef:
    """The Gateway our routes attach to."""

    name: str
    namespace: str
    section_name: str
    """The HTTPS listener."""
    redirect_section_name: str | None
    """The HTTP listener the redirect route attaches to, if any."""
    owned: bool
    """The stack renders it (and may attach Gateway-level policies to it)."""


@dataclass(frozen=True)
class RouteNames:
    """The HTTPRoutes a policy pack attaches to, by role."""

    web: str
    api: str
    api_reads: str
    indexer: str
    blocked: str


def api_object(
    scope: Construct, id: str, *, api_version: str, kind: str, identity: Identity, name: str, namespace: str, spec: Any
) -> cdk8s.ApiObject:
    """A custom resource with the release labels (:func:`custom_resource`); ``spec`` is plain data."""
    metadata = {"name": name, "namespace": namespace, "labels": identity.labels}
    return custom_resource(scope, id, {"apiVersion": api_version, "kind": kind, "metadata": metadata, "spec": spec})


def blocked_regex() -> str:
    """Every blocked path and what lies below it, in any letter case and with ``\\`` for ``/`` (RE2, matched
    on the whole path)."""
    sep = r"[/\\]"
    spelled = (sep.join(re.escape(segment) for segment in path.split("/")) for path in BLOCKED_PATHS)
    return f"(?i)({'|'.join(spelled)})({sep}.*)?"


def _duration(seconds: int) -> str:
    return f"{seconds}s"


class GatewayApiRoutes(Construct):
    """The HTTPRoutes (and the stack-owned Gateway); policies come from a policy pack."""

    def __init__(self, scope: Construct, id: str, *, props: EdgeProps, tls_secret: str, deny: Endpoint) -> None:
        super().__init__(scope, id)
        self.props = props
        s = props.settings
        g = s.gateway
        instance = props.identity.instance
        self.identity = props.identity.of("edge")
        if g.platform_gateway is not None:
            p = g.platform_gateway
            self.gateway = GatewayRef(p.name, p.namespace, p.section_name, p.redirect_section_name, owned=False)
        else:
            self.gateway = GatewayRef(instance, props.namespace, HTTPS_LISTENER, HTTP_LISTENER, owned=True)
            self._gateway(tls_secret)

        self.names = RouteNames(
            web=f"{instance}-web",
            api=f"{instance}-api",
            api_reads=f"{instance}-api-reads",
            indexer=f"{instance}-indexer",
            blocked=f"{instance}-blocked",
        )
        web_headers = security_headers(s, content_security_policy()) if s.security_headers else {}
        api_headers = security_headers(s, API_CSP) if s.security_headers else {}
        web, query, indexer = ((e.service, e.port) for e in (props.web, props.query, props.indexer))
        self._route(self.names.web, [("/", None)], web, web_headers, UI_TIMEOUT_SECONDS)
        self._route(self.names.api, [(API_PREFIX, None)], query, api_headers, s.query_timeout_seconds)
        self._route(self.names.api_reads, [(API_PREFIX, "GET")], query, api_headers, s.query_timeout_seconds)
        self._route(
            self.names.indexer, [(p, None) for p in INDEXER_PATHS], indexer, api_headers, s.indexer_timeout_seconds
        )
        # Longer prefixes win by Gateway API precedence; the request never reaches the app. The regular
        # expression (which Envoy Gateway ranks above every prefix) also catches other spellings of case.
        self._route(
            self.names.blocked,
            [(p, None) for p in BLOCKED_PATHS],
            (deny.service, deny.port),
            api_headers,
            10,
            regex=blocked_regex(),
        )
        if self.gateway.redirect_section_name is not None:
            self._redirect()

    def parent_ref(self, section: str) -> dict[str, str]:
        ref = {"group": GROUP, "kind": "Gateway", "name": self.gateway.name, "sectionName": section}
        if self.gateway.namespace != self.props.namespace:
            ref["namespace"] = self.gateway.namespace
        return ref

    def _gateway(self, tls_secret: str) -> None:
        p = self.props
        same = {"namespaces": {"from": "Same"}}
        api_object(
            self,
            "Gateway",
            api_version=API_VERSION,
            kind="Gateway",
            identity=self.identity,
            name=self.gateway.name,
            namespace=p.namespace,
            spec={
                "gatewayClassName": p.settings.gateway.gateway_class,
                **({"infrastructure": {"annotations": p.gateway_annotations}} if p.gateway_annotations else {}),
                "listeners": [
                    {
                        "name": HTTPS_LISTENER,
                        "protocol": "HTTPS",
                        "port": 443,
                        "hostname": p.domain,
                        "tls": {"mode": "Terminate", "certificateRefs": [{"kind": "Secret", "name": tls_secret}]},
                        "allowedRoutes": same,
                    },
                    # Only the redirect route attaches here: plain HTTP never reaches the app.
                    {
                        "name": HTTP_LISTENER,
                        "protocol": "HTTP",
                        "port": 80,
                        "hostname": p.domain,
                        "allowedRoutes": same,
                    },
                ],
            },
        )

    def _route(
        self,
        name: str,
        matches: list[tuple[str, str | None]],
        backend: tuple[str, int],
        headers: dict[str, str],
        timeout_seconds: int,
        *,
        regex: str | None = None,
    ) -> None:
        p = self.props
        rule: dict[str, Any] = {
            "matches": [
                {"path": {"type": "PathPrefix", "value": path}, **({"method": method} if method else {})}
                for path, method in matches
            ]
            + ([{"path": {"type": "RegularExpression", "value": regex}}] if regex else []),
            "backendRefs": [{"kind": "Service", "name": backend[0], "port": backend[1]}],
            "timeouts": {"request": _duration(timeout_seconds)},
        }
        # The verifier has read the key by now (external auth runs before routing): the app gets its id
        # (X-Auth-Key-Id), never the key itself.
        rule["filters"] = [
            {"type": "RequestHeaderModifier", "requestHeaderModifier": {"remove": list(CREDENTIAL_HEADERS)}}
        ]
        if headers:
            rule["filters"].append(
                {
                    "type": "ResponseHeaderModifier",
                    "responseHeaderModifier": {"set": [{"name": k, "value": v} for k, v in headers.items()]},
                }
            )
        api_object(
            self,
            f"Route-{name}",
            api_version=API_VERSION,
            kind="HTTPRoute",
            identity=self.identity,
            name=name,
            namespace=p.namespace,
            spec={
                "parentRefs": [self.parent_ref(self.gateway.section_name)],
                "hostnames": [p.domain],
                "rules": [rule],
            },
        )

    def _redirect(self) -> None:
        p = self.props
        section = self.gateway.redirect_section_name
        assert section is not None
        api_object(
            self,
            "Route-redirect",
            api_version=API_VERSION,
            kind="HTTPRoute",
            identity=self.identity,
            name=f"{p.identity.instance}-redirect",
            namespace=p.namespace,
            spec={
                "parentRefs": [self.parent_ref(section)],
                "hostnames": [p.domain],
                "rules": [
                    {
                        "filters": [
                            {"type": "RequestRedirect", "requestRedirect": {"scheme": "https", "statusCode": 301}}
                        ]
                    }
                ],
            },
        )

    def backend_tls(self, service: str, hostname: str, ca_config_map: str) -> None:
        """``BackendTLSPolicy`` for a backend Service that speaks TLS (none of today's do)."""
        api_object(
            self,
            f"BackendTls-{service}",
            api_version=API_VERSION,
            kind="BackendTLSPolicy",
            identity=self.identity,
            name=service,
            namespace=self.props.namespace,
            spec={
                "targetRefs": [{"group": "", "kind": "Service", "name": service}],
                "validation": {
                    "hostname": hostname,
                    "caCertificateRefs": [{"group": "", "kind": "ConfigMap", "name": ca_config_map}],
                },
            },
        )
