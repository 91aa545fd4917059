"""NetworkPolicies from declared connections: default deny, cluster DNS, then one policy per component.

A :class:`Flow` says who may open connections to whom on which ports. A peer is
a component of our namespace (its pods, by the release selector), another
namespace (by its ``kubernetes.io/metadata.name`` label), the public internet
(``0.0.0.0/0`` minus private, shared, link-local and cluster ranges) or an
explicit CIDR. :class:`NetworkPolicies` renders one NetworkPolicy per component
of our namespace, holding both its ingress (flows to it) and its egress (flows
from it), so a reviewer reads one file per workload. A flow between two of our
components is written on both sides, because the namespace denies both
directions by default.

The flows come from :class:`kgstack.connections.Connections`, where each
construct declares the traffic it makes; tests/test_network_policies.py proves
the rendered policies with network-config-analyzer against the traffic the
rendered objects need.
"""

from __future__ import annotations

import ipaddress
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
    """Namespace of Prometheus and the blackbox exporter."""
    prometheus_pod_labels: dict[str, str] = Field(default_factory=lambda: {"app.kubernetes.io/name": "prometheus"})
    """Labels of the Prometheus pods (prometheus-operator sets ``app.kubernetes.io/name: prometheus``):
    the only pods of that namespace that may scrape ``/metrics``."""
    blackbox_pod_labels: dict[str, str] = Field(
        default_factory=lambda: {"app.kubernetes.io/name": "prometheus-blackbox-exporter"}
    )
    """Labels of the blackbox exporter pods (the prometheus-blackbox-exporter chart's): the only pods of
    that namespace that may probe health ports. Not Grafana, not anything else deployed there."""
    dns_namespace: str = "kube-system"
    """Namespace of the cluster DNS."""
    dns_pod_labels: dict[str, str] = Field(default_factory=lambda: {"k8s-app": "kube-dns"})
    """Labels of the cluster DNS pods (CoreDNS keeps ``k8s-app: kube-dns`` on every distribution)."""
    cluster_cidrs: list[Cidr] = Field(default_factory=list)
    """Pod and Service CIDRs when they lie outside the private ranges (e.g. GKE with non-RFC1918 ranges)."""
    internet_ports: list[Annotated[int, Field(ge=1, le=65535)]] = Field(default_factory=lambda: [443])
    """TCP ports the agent and backups may reach on the internet (LLM API, GitHub, object storage)."""
    object_storage_cidrs: list[Cidr] = Field(default_factory=list)
    """Private ranges of the backup target (S3/STS VPC interface endpoints, an in-cluster or VPC MinIO):
    "the internet" excludes private addresses, so list them here; only the backup runs may reach them."""

    @model_validator(mode="after")
    def _cidrs_parse(self) -> Self:
        for cidr in [*self.cluster_cidrs, *self.object_storage_cidrs]:
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
    pod_labels: dict[str, str] = Field(default_factory=dict)
    """Narrow to the component's pods with these labels too (one backup CronJob of several)."""

    @property
    def key(self) -> str:
        """Readable and unique per selection: ``backup-redis`` for the Redis backup's pods."""
        return "-".join([self.component, *(self.pod_labels[k] for k in sorted(self.pod_labels))])


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


class PodsPeer(Spec):
    """Pods of our namespace that another controller creates (cert-manager's HTTP-01 solver), by labels."""

    kind: Literal["pods"] = "pods"
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]*$")]
    """Readable name; the NetworkPolicy is ``<release>-<name>``."""
    pod_labels: Annotated[dict[str, str], Field(min_length=1)]
    """The labels that controller puts on its pods."""

    @property
    def key(self) -> str:
        return self.name


Peer = Annotated[ComponentPeer | NamespacePeer | InternetPeer | CidrPeer | PodsPeer, Field(discriminator="kind")]
Local = ComponentPeer | PodsPeer
"""A peer inside our namespace: it gets a NetworkPolicy of its own."""


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
        if not isinstance(self.source, ComponentPeer | PodsPeer) and not isinstance(
            self.destination, ComponentPeer | PodsPeer
        ):
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
    def components(self) -> list[Local]:
        """Our pod selections named by any flow, in first-seen order."""
        seen: dict[str, Local] = {}
        for flow in self.props.flows:
            for peer in (flow.source, flow.destination):
                if isinstance(peer, ComponentPeer | PodsPeer):
                    seen.setdefault(peer.key, peer)
        return list(seen.values())

    def _policy(self, component: Local) -> None:
        p = self.props
        identity = p.identity.of(component.component if isinstance(component, ComponentPeer) else "network")
        selector = (
            {**identity.selector, **component.pod_labels}
            if isinstance(component, ComponentPeer)
            else dict(component.pod_labels)
        )
        ingress = [
            k8s.NetworkPolicyIngressRule(from_=[self._peer(f.source)], ports=[self._port(x) for x in f.ports])
            for f in p.flows
            if f.destination == component
        ]
        egress = [
            k8s.NetworkPolicyEgressRule(to=[self._peer(f.destination)], ports=[self._port(x) for x in f.ports])
            for f in p.flows
            if f.source == component
        ]
        k8s.KubeNetworkPolicy(
            self,
            f"Policy-{component.key}",
            metadata=object_meta(identity, p.namespace, name=f"{identity.instance}-{component.key}"),
            spec=k8s.NetworkPolicySpec(
                pod_selector=k8s.LabelSelector(match_labels=selector),
                # Both types, even when a list is empty: the policy documents that nothing else is allowed.
                policy_types=["Ingress", "Egress"],
                ingress=ingress or None,
                egress=egress or None,
            ),
        )

    def _peer(self, peer: ComponentPeer | NamespacePeer | InternetPeer | CidrPeer | PodsPeer) -> k8s.NetworkPolicyPeer:
        if isinstance(peer, ComponentPeer):
            selector = {**self.props.identity.of(peer.component).selector, **peer.pod_labels}
            return k8s.NetworkPolicyPeer(pod_selector=k8s.LabelSelector(match_labels=selector))
        if isinstance(peer, PodsPeer):
            return k8s.NetworkPolicyPeer(pod_selector=k8s.LabelSelector(match_labels=dict(peer.pod_labels)))
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
