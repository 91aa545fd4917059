"""The public edge: TLS, routing, security headers, limits, CORS and API keys.

The seam (docs/edge.md):

* :mod:`.gateway_api` renders the portable half, standard Gateway API only: the
  HTTPRoutes (paths, security headers, timeouts, redirect), the stack-owned
  Gateway, BackendTLSPolicy. It knows no implementation.
* a **policy pack** per implementation adds what the standard lacks, attached to
  those routes by name: :mod:`.envoy_gateway` is the first. A second
  implementation is a new module with the same constructor, registered in
  :data:`POLICY_PACKS`, and a new value of ``edge.gateway.implementation``; the
  routes do not change.
* :mod:`.ingress_nginx` is the legacy edge (the controller is retired), still
  selectable with ``edge.controller: ingress-nginx``.

Both controllers share :mod:`.common`: the settings, the blocked and indexer
paths, the security headers, the cert-manager Certificate and the API-key
verifier.
"""

from __future__ import annotations

from collections.abc import Callable

from constructs import Construct

from ..connections import Connections, Endpoint
from ..custom_resource import custom_resource
from ..network_policies import NamespacePeer, PodsPeer, tcp
from .common import (
    API_CSP,
    BLOCKED_PATHS,
    CDN_ORIGINS,
    INDEXER_PATHS,
    KEY_ID_HEADER,
    SECURITY_HEADERS,
    EdgeAuth,
    EdgeAuthProps,
    EdgeProps,
    EdgeSettings,
    GatewaySettings,
    PlatformGateway,
    auth_nginx_conf,
    content_security_policy,
    security_headers,
)
from .envoy_gateway import EnvoyGatewayPolicies
from .gateway_api import GatewayApiRoutes
from .ingress_nginx import RETIRED_NOTICE, IngressNginxEdge

__all__ = [
    "ACME_SOLVER",
    "ACME_SOLVER_PORT",
    "API_CSP",
    "BLOCKED_PATHS",
    "CDN_ORIGINS",
    "INDEXER_PATHS",
    "KEY_ID_HEADER",
    "POLICY_PACKS",
    "SECURITY_HEADERS",
    "Edge",
    "EdgeAuth",
    "EdgeAuthProps",
    "EdgeProps",
    "EdgeSettings",
    "GatewaySettings",
    "PlatformGateway",
    "auth_nginx_conf",
    "content_security_policy",
    "edge_peer",
    "edge_peers",
    "security_headers",
]

PolicyPack = Callable[..., Construct]
"""``pack(scope, id, *, props=EdgeProps, routes=GatewayApiRoutes, auth=EdgeAuth)``."""
ACME_SOLVER = PodsPeer(name="acme-solver", pod_labels={"acme.cert-manager.io/http01-solver": "true"})
"""The pods cert-manager starts to answer an HTTP-01 challenge (they listen on 8089)."""
ACME_SOLVER_PORT = 8089

POLICY_PACKS: dict[str, PolicyPack] = {"envoy-gateway": EnvoyGatewayPolicies}
"""``edge.gateway.implementation`` -> its policy pack."""

INGRESS_NGINX_NAMESPACE = "ingress-nginx"
"""Where the legacy controller runs by default (any pod of that namespace is its peer)."""


def edge_peer(settings: EdgeSettings, ingress_nginx_namespace: str = INGRESS_NGINX_NAMESPACE) -> NamespacePeer:
    """Where edge traffic comes from: the gateway's data-plane pods, or the legacy controller's namespace."""
    if settings.controller == "ingress-nginx":
        return NamespacePeer(namespace=ingress_nginx_namespace)
    g = settings.gateway
    return NamespacePeer(namespace=g.data_plane_namespace, pod_labels=dict(g.data_plane_pod_labels))


def edge_peers(settings: EdgeSettings, ingress_nginx_namespace: str = INGRESS_NGINX_NAMESPACE) -> list[NamespacePeer]:
    """Every source of edge traffic: the chosen controller's, plus the legacy one during a side-by-side migration."""
    peers = [edge_peer(settings, ingress_nginx_namespace)]
    if settings.controller == "gateway-api" and settings.side_by_side_ingress_nginx:
        peers.append(NamespacePeer(namespace=ingress_nginx_namespace))
    return peers


class Edge(Construct):
    """Certificate, the API-key verifier, and the routes of the chosen controller with their policies."""

    def __init__(self, scope: Construct, id: str, *, props: EdgeProps) -> None:
        super().__init__(scope, id)
        self.props = props
        s = props.settings
        instance = props.identity.instance
        edge = props.identity.of("edge")
        self.tls_secret = f"{instance}-tls"
        self.notices: list[str] = []
        self.acme_solver: PodsPeer | None = None
        """cert-manager's HTTP-01 solver pods, when this edge's Certificate may be issued through it."""

        # A platform Gateway terminates TLS with its own certificate.
        if s.controller == "ingress-nginx" or s.side_by_side_ingress_nginx or s.gateway.platform_gateway is None:
            # Plain data, checked against the vendored cert-manager CRD at synth (kgstack.schema).
            certificate = {
                "apiVersion": "cert-manager.io/v1",
                "kind": "Certificate",
                "metadata": {"labels": edge.labels, "name": self.tls_secret, "namespace": props.namespace},
                "spec": {
                    "dnsNames": [props.domain],
                    "issuerRef": {"group": "cert-manager.io", "kind": s.issuer_kind, "name": props.issuer},
                    "privateKey": {"algorithm": "ECDSA", "rotationPolicy": "Always", "size": 256},
                    "secretName": self.tls_secret,
                    "secretTemplate": {"labels": edge.labels},
                },
            }
            custom_resource(self, "Certificate", certificate)
            # An HTTP-01 challenge is answered by cert-manager's solver pod in this namespace, through
            # the edge: without a flow to it default-deny fails every issuance and renewal.
            self.acme_solver = ACME_SOLVER

        self.auth = EdgeAuth(
            self,
            "Auth",
            props=EdgeAuthProps(
                identity=props.identity.of("auth"),
                namespace=props.namespace,
                image=props.auth_image,
                keys_secret=s.keys_secret,
                origins=props.allowed_origins,
                replicas=s.auth_replicas,
                resources=s.auth_resources,
                pod_labels=props.pod_labels,
            ),
        )
        self._connect()
        if s.controller == "ingress-nginx" or s.side_by_side_ingress_nginx:
            # Side by side: same host, certificate, verifier and keys as the Gateway; removed once DNS has moved.
            IngressNginxEdge(self, "IngressNginx", props=props, auth=self.auth, tls_secret=self.tls_secret)
        if s.controller == "ingress-nginx":
            self.notices.append(RETIRED_NOTICE)
            return
        if s.side_by_side_ingress_nginx:
            self.notices.append(
                f"edge.sideBySideIngressNginx: the retired ingress-nginx edge also serves {props.domain}"
            )
        self.routes = GatewayApiRoutes(self, "GatewayApi", props=props, tls_secret=self.tls_secret, deny=self.auth.deny)
        backends = {"web": props.web, "query": props.query, "indexer": props.indexer}
        for backend, tls in sorted(s.backend_tls.items()):
            self.routes.backend_tls(backends[backend].service, tls.hostname, tls.ca_config_map)
        POLICY_PACKS[s.gateway.implementation](self, "Policies", props=props, routes=self.routes, auth=self.auth)

    def _connect(self) -> None:
        """The edge's traffic to what it was handed: the web UI, both tiers, the verifier and cert-manager's
        solver; from the chosen controller, plus the legacy one while both serve the host (docs/edge.md)."""
        p, connections = self.props, Connections.of(self)
        for edge in edge_peers(p.settings, p.ingress_nginx_namespace):
            connections.allow(edge, p.web, purpose="the edge serves the web UI")
            for tier in (p.query, p.indexer):
                connections.allow(edge, tier, purpose=f"the edge routes /api to the {tier.component} tier")
            for endpoint in self.endpoints:
                connections.allow(edge, endpoint, purpose=f"the edge calls the verifier's {endpoint.port_name} port")
            if self.acme_solver is not None:
                connections.allow_ports(
                    edge,
                    self.acme_solver,
                    tcp(ACME_SOLVER_PORT),
                    purpose="an ACME HTTP-01 challenge reaches cert-manager's solver",
                )

    @property
    def peer(self) -> NamespacePeer:
        return edge_peer(self.props.settings)

    @property
    def endpoints(self) -> list[Endpoint]:
        """What the edge calls besides the app's backends: the verifier and the deny backend."""
        return self.auth.endpoints
