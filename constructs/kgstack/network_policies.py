"""NetworkPolicies from a typed connectivity matrix: default deny, cluster DNS, then declared flows.

A :class:`Flow` says who may open connections to whom on which ports. A peer is
a component of our namespace (its pods, by the release selector), another
namespace (by its ``kubernetes.io/metadata.name`` label), the public internet
(``0.0.0.0/0`` minus private, shared, link-local and cluster ranges) or an
explicit CIDR. :class:`NetworkPolicies` renders one NetworkPolicy per component
of our namespace, holding both its ingress (flows to it) and its egress (flows
from it), so a reviewer reads one file per workload. A flow between two of our
components is written on both sides, because the namespace denies both
directions by default.

:func:`stack_flows` is the matrix of the Knowledge Graph Agent stack;
docs/network.md shows it as a table and tests/test_network_policies.py proves
it with network-config-analyzer.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Literal, Self

from constructs import Construct
from pydantic import Field, model_validator

from ._plus import int_or_string, k8s
from .model import Spec
from .naming import Identity, object_meta

NAMESPACE_LABEL = "kubernetes.io/metadata.name"
"""Set by the API server on every namespace (Kubernetes >= 1.22); it cannot be forged by tenants."""

NON_INTERNET = (
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",  # RFC 1918
    "100.64.0.0/10",  # RFC 6598 shared address space (carrier-grade NAT, some pod networks)
    "169.254.0.0/16",  # link-local, including the cloud metadata endpoint 169.254.169.254
    "127.0.0.0/8",  # loopback
)
"""Ranges never counted as "the internet", on top of the cluster's own CIDRs."""


def _cidr(value: str) -> str:
    return str(ipaddress.IPv4Network(value, strict=True))


Cidr = Annotated[str, Field(pattern=r"^\d{1,3}(\.\d{1,3}){3}/\d{1,2}$")]


class NetworkSettings(Spec):
    """Where the stack's neighbours live, and the cluster ranges that are not the internet."""

    ingress_controller_namespace: str = "ingress-nginx"
    """Namespace of the ingress controller pods; the only source of traffic from outside."""
    monitoring_namespace: str = "monitoring"
    """Namespace of Prometheus and the blackbox exporter; may scrape metrics and probe health ports."""
    dns_namespace: str = "kube-system"
    """Namespace of the cluster DNS."""
    dns_pod_labels: dict[str, str] = Field(default_factory=lambda: {"k8s-app": "kube-dns"})
    """Labels of the cluster DNS pods (CoreDNS keeps ``k8s-app: kube-dns`` on every distribution)."""
    cluster_cidrs: list[Cidr] = Field(default_factory=list)
    """Pod and Service CIDRs when they lie outside the private ranges (e.g. GKE with non-RFC1918 ranges)."""
    internet_ports: list[Annotated[int, Field(ge=1, le=65535)]] = Field(default_factory=lambda: [443])
    """TCP ports the agent and backups may reach on the internet (LLM API, GitHub, object storage)."""

    @model_validator(mode="after")
    def _cidrs_parse(self) -> Self:
        for cidr in self.cluster_cidrs:
            try:
                _cidr(cidr)
            except ValueError as exc:
                raise ValueError(f"clusterCidrs: {cidr!r}: {exc}") from None
        return self


class ComponentPeer(Spec):
    """Pods of one component of our release, in our namespace."""

    kind: Literal["component"] = "component"
    component: str
    """``app.kubernetes.io/component`` value: ``query``, ``redis``, ``backup``..."""


class NamespacePeer(Spec):
    """Pods of another namespace (optionally only those with ``pod_labels``)."""

    kind: Literal["namespace"] = "namespace"
    namespace: str
    """Matched by the ``kubernetes.io/metadata.name`` label."""
    pod_labels: dict[str, str] = Field(default_factory=dict)
    """Narrow to these pods; empty means every pod of the namespace."""


class InternetPeer(Spec):
    """Public addresses: 0.0.0.0/0 except private, shared, link-local and cluster ranges."""

    kind: Literal["internet"] = "internet"


class CidrPeer(Spec):
    """An explicit address range (e.g. a NodeLocal DNS address or a private object store)."""

    kind: Literal["cidr"] = "cidr"
    cidr: Cidr
    """IPv4 range in CIDR notation."""


Peer = Annotated[ComponentPeer | NamespacePeer | InternetPeer | CidrPeer, Field(discriminator="kind")]


class PortSpec(Spec):
    port: Annotated[int, Field(ge=1, le=65535)]
    """Destination port (the container port, not the Service port)."""
    protocol: Literal["TCP", "UDP"] = "TCP"


class Flow(Spec):
    """``source`` may open connections to ``destination`` on ``ports``; replies are implied."""

    source: Peer
    destination: Peer
    ports: Annotated[list[PortSpec], Field(min_length=1)]
    purpose: str
    """Why the flow exists; shown in docs and test output."""

    @model_validator(mode="after")
    def _touches_our_namespace(self) -> Self:
        if not isinstance(self.source, ComponentPeer) and not isinstance(self.destination, ComponentPeer):
            raise ValueError(f"flow {self.purpose!r}: one side must be a component of our namespace")
        return self


def tcp(*ports: int) -> list[PortSpec]:
    return [PortSpec(port=p) for p in ports]


class NetworkPoliciesProps(Spec):
    identity: Identity
    """Release identity; ``component`` is ignored (each policy selects one component)."""
    namespace: str
    settings: NetworkSettings = NetworkSettings()
    flows: list[Flow]
    default_deny: bool = True
    """A namespace-wide deny of ingress and egress; every allowed flow is then explicit."""
    allow_dns: bool = True
    """Egress from every pod to the cluster DNS on UDP and TCP 53."""


class NetworkPolicies(Construct):
    """Default deny, DNS, and one NetworkPolicy per component of the declared flows."""

    def __init__(self, scope: Construct, id: str, *, props: NetworkPoliciesProps) -> None:
        super().__init__(scope, id)
        self.props = props
        release = props.identity.of("network")
        ns = props.namespace
        if props.default_deny:
            k8s.KubeNetworkPolicy(
                self,
                "DefaultDeny",
                metadata=object_meta(release, ns, name=f"{release.instance}-default-deny"),
                spec=k8s.NetworkPolicySpec(pod_selector=k8s.LabelSelector(), policy_types=["Ingress", "Egress"]),
            )
        if props.allow_dns:
            s = props.settings
            k8s.KubeNetworkPolicy(
                self,
                "Dns",
                metadata=object_meta(release, ns, name=f"{release.instance}-dns"),
                spec=k8s.NetworkPolicySpec(
                    pod_selector=k8s.LabelSelector(),
                    policy_types=["Egress"],
                    egress=[
                        k8s.NetworkPolicyEgressRule(
                            to=[self._peer(NamespacePeer(namespace=s.dns_namespace, pod_labels=s.dns_pod_labels))],
                            ports=[self._port(PortSpec(port=53, protocol=p)) for p in ("UDP", "TCP")],
                        )
                    ],
                ),
            )
        for component in self.components:
            self._policy(component)

    @property
    def components(self) -> list[str]:
        """Our components named by any flow, in first-seen order."""
        seen: dict[str, None] = {}
        for flow in self.props.flows:
            for peer in (flow.source, flow.destination):
                if isinstance(peer, ComponentPeer):
                    seen.setdefault(peer.component, None)
        return list(seen)

    def _policy(self, component: str) -> None:
        p = self.props
        identity = p.identity.of(component)
        ingress = [
            k8s.NetworkPolicyIngressRule(from_=[self._peer(f.source)], ports=[self._port(x) for x in f.ports])
            for f in p.flows
            if f.destination == ComponentPeer(component=component)
        ]
        egress = [
            k8s.NetworkPolicyEgressRule(to=[self._peer(f.destination)], ports=[self._port(x) for x in f.ports])
            for f in p.flows
            if f.source == ComponentPeer(component=component)
        ]
        k8s.KubeNetworkPolicy(
            self,
            f"Policy-{component}",
            metadata=object_meta(identity, p.namespace),
            spec=k8s.NetworkPolicySpec(
                pod_selector=k8s.LabelSelector(match_labels=identity.selector),
                # Both types, even when a list is empty: the policy documents that nothing else is allowed.
                policy_types=["Ingress", "Egress"],
                ingress=ingress or None,
                egress=egress or None,
            ),
        )

    def _peer(self, peer: ComponentPeer | NamespacePeer | InternetPeer | CidrPeer) -> k8s.NetworkPolicyPeer:
        if isinstance(peer, ComponentPeer):
            return k8s.NetworkPolicyPeer(
                pod_selector=k8s.LabelSelector(match_labels=self.props.identity.of(peer.component).selector)
            )
        if isinstance(peer, NamespacePeer):
            return k8s.NetworkPolicyPeer(
                namespace_selector=k8s.LabelSelector(match_labels={NAMESPACE_LABEL: peer.namespace}),
                pod_selector=k8s.LabelSelector(match_labels=peer.pod_labels) if peer.pod_labels else None,
            )
        if isinstance(peer, InternetPeer):
            return k8s.NetworkPolicyPeer(ip_block=k8s.IpBlock(cidr="0.0.0.0/0", except_=self.not_internet))
        return k8s.NetworkPolicyPeer(ip_block=k8s.IpBlock(cidr=_cidr(peer.cidr)))

    @property
    def not_internet(self) -> list[str]:
        extra = [_cidr(c) for c in self.props.settings.cluster_cidrs]
        return list(dict.fromkeys([*NON_INTERNET, *extra]))

    @staticmethod
    def _port(port: PortSpec) -> k8s.NetworkPolicyPort:
        return k8s.NetworkPolicyPort(port=int_or_string(port.port), protocol=port.protocol)


# --- The stack's matrix -------------------------------------------------------------------------

AGENT_PORT = 8000
WEB_PORT = 8080
AUTH_PORT = 8080
DENY_PORT = 8081
REDIS_PORT = 6379
REDIS_METRICS_PORT = 9121
CHROMA_PORT = 8000
MEMGRAPH_BOLT_PORT = 7687


@dataclass(frozen=True, kw_only=True)
class StackComponents:
    """Which workloads an environment runs; the matrix only names those that exist."""

    web: bool = True
    auth: bool = True
    query: bool = True
    indexer: bool = True
    redis: bool = True
    chroma: bool = True
    memgraph: bool = False
    backup: bool = True


def stack_flows(
    present: StackComponents,
    settings: NetworkSettings,
    extra: Sequence[Flow] = (),
    edge: Sequence[NamespacePeer] = (),
) -> list[Flow]:
    """Every connection the Knowledge Graph Agent stack needs, and nothing else.

    ``edge`` is where public traffic comes from (``kgstack.edge.edge_peers``: the gateway's
    data-plane pods); empty keeps the legacy ingress controller namespace."""
    edges = list(edge) or [NamespacePeer(namespace=settings.ingress_controller_namespace)]
    monitoring = NamespacePeer(namespace=settings.monitoring_namespace)
    internet = InternetPeer()
    c = ComponentPeer
    flows: list[Flow] = []

    def add(source: Peer, destination: Peer, ports: list[PortSpec], purpose: str) -> None:
        flows.append(Flow(source=source, destination=destination, ports=ports, purpose=purpose))

    tiers = [t for t in ("query", "indexer") if getattr(present, t)]
    for edge_peer in edges:
        if present.web:
            add(edge_peer, c(component="web"), tcp(WEB_PORT), "the edge serves the web UI")
        if present.auth:
            add(
                edge_peer,
                c(component="auth"),
                tcp(AUTH_PORT, DENY_PORT),
                "external auth and the deny backend of blocked paths",
            )
        for tier in tiers:
            add(edge_peer, c(component=tier), tcp(AGENT_PORT), f"the edge routes /api to the {tier} tier")
    if present.web:
        add(monitoring, c(component="web"), tcp(WEB_PORT), "blackbox probe of the UI's /healthz")
    for tier in tiers:
        add(monitoring, c(component=tier), tcp(AGENT_PORT), f"blackbox probe of the {tier} tier's /health")
    stores = [
        (name, port)
        for name, port, on in (
            ("redis", REDIS_PORT, present.redis),
            ("chroma", CHROMA_PORT, present.chroma),
            ("memgraph", MEMGRAPH_BOLT_PORT, present.memgraph),
        )
        if on
    ]
    clients = [*tiers, *(["backup"] if present.backup else [])]
    for client in clients:
        for store, port in stores:
            add(c(component=client), c(component=store), tcp(port), f"{client} uses {store}")
        add(
            c(component=client),
            internet,
            tcp(*settings.internet_ports),
            "object storage over HTTPS" if client == "backup" else "LLM and embedding APIs, GitHub clones",
        )
    if present.redis:
        add(monitoring, c(component="redis"), tcp(REDIS_METRICS_PORT), "Prometheus scrapes redis_exporter")
    if present.chroma:
        add(monitoring, c(component="chroma"), tcp(CHROMA_PORT), "blackbox probe of Chroma's heartbeat")
    flows.extend(extra)
    return flows
