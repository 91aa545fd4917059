"""Connections, declared once by the construct that opens them, in the manner of cdk8s-plus ``connections``.

A construct that makes traffic (the agent's store URLs, a blackbox Probe, a
ServiceMonitor, a backup CronJob, an edge route) says so with
``Connections.of(self).allow(source, endpoint, purpose=...)``, where ``endpoint``
is the :class:`Endpoint` the serving construct exposes: its Service, its
container port and the name of that port. The NetworkPolicies of the chart,
the URLs handed to clients and the architecture page are all derived from
those declarations, so a new probe or client cannot exist without its flow.

The declarations are trusted by nothing else: ``kgstack.cross_reference`` reads
the rendered objects (Probe targets, ServiceMonitors, env URLs) and evaluates
the rendered NetworkPolicies on its own, and the analyzer test proves the same
from ``dist/``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, ClassVar
from weakref import WeakKeyDictionary

import cdk8s
from constructs import Construct
from pydantic import Field

from ._plus import int_or_string, k8s
from .model import Spec
from .naming import Identity, object_meta
from .network_policies import ComponentPeer, Flow, Peer, PortSpec


class Endpoint(Spec):
    """A port that a component serves, reached through its Service."""

    component: str
    """``app.kubernetes.io/component`` of the pods behind the Service."""
    service: str
    """Service name (resolvable as ``<service>`` inside the namespace)."""
    namespace: str
    """Namespace of the Service."""
    port: Annotated[int, Field(ge=1, le=65535)]
    """Container port (the Service exposes the same number)."""
    port_name: str
    """Name of the container and Service port (ServiceMonitors select by it)."""
    protocol: str = "TCP"
    health_path: str | None = None
    """HTTP path that answers 200 when the component is healthy; ``None``: probe the TCP port."""

    @classmethod
    def serving(
        cls, identity: Identity, namespace: str, port: int, port_name: str, *, health_path: str | None = None
    ) -> Endpoint:
        """The port ``port_name`` of the component ``identity``, behind its Service ``<release>-<component>``."""
        return cls(
            component=identity.component,
            service=identity.resource_name,
            namespace=namespace,
            port=port,
            port_name=port_name,
            health_path=health_path,
        )

    def container_port(self) -> k8s.ContainerPort:
        """The container's port for this endpoint; the Service targets it by name."""
        return k8s.ContainerPort(name=self.port_name, container_port=self.port, protocol=self.protocol)

    def service_port(self) -> k8s.ServicePort:
        """The Service's port for this endpoint: same number, targeting the container port by name."""
        return k8s.ServicePort(
            name=self.port_name, port=self.port, target_port=int_or_string(self.port_name), protocol=self.protocol
        )

    @property
    def peer(self) -> ComponentPeer:
        return ComponentPeer(component=self.component)

    @property
    def address(self) -> str:
        """``host:port`` inside the namespace."""
        return f"{self.service}:{self.port}"

    @property
    def cluster_address(self) -> str:
        """``host.namespace.svc:port``: for callers outside the namespace (the blackbox exporter)."""
        return f"{self.service}.{self.namespace}.svc:{self.port}"

    def url(self, scheme: str, path: str = "", *, userinfo: str = "", cluster: bool = False) -> str:
        host = self.cluster_address if cluster else self.address
        return f"{scheme}://{userinfo + '@' if userinfo else ''}{host}{path}"


class Connections:
    """Every flow one chart declares; :meth:`of` finds the chart's instance."""

    _registry: ClassVar[WeakKeyDictionary[cdk8s.Chart, Connections]] = WeakKeyDictionary()

    def __init__(self) -> None:
        self._flows: list[Flow] = []

    @classmethod
    def of(cls, scope: Construct) -> Connections:
        chart = cdk8s.Chart.of(scope)
        if chart not in cls._registry:
            cls._registry[chart] = cls()
        return cls._registry[chart]

    def allow(self, source: Peer, to: Endpoint, *, purpose: str) -> None:
        """``source`` may open connections to ``to`` (its pods, on its container port)."""
        self.allow_ports(source, to.peer, [PortSpec(port=to.port)], purpose=purpose)

    def allow_ports(self, source: Peer, destination: Peer, ports: list[PortSpec], *, purpose: str) -> None:
        """A flow to a peer that is not one of our endpoints (the internet, another namespace)."""
        flow = Flow(source=source, destination=destination, ports=ports, purpose=purpose)
        if flow not in self._flows:
            self._flows.append(flow)

    @property
    def flows(self) -> list[Flow]:
        return list(self._flows)


def expose(
    scope: Construct, identity: Identity, namespace: str, endpoints: Sequence[Endpoint], *, headless: bool = False
) -> k8s.KubeService:
    """The Service ``<release>-<component>`` in front of ``endpoints``: ClusterIP, or headless for
    the stable per-pod DNS of a StatefulSet (clients then resolve the pod directly)."""
    return k8s.KubeService(
        scope,
        "Service",
        metadata=object_meta(identity, namespace),
        spec=k8s.ServiceSpec(
            type=None if headless else "ClusterIP",
            cluster_ip="None" if headless else None,
            selector=identity.selector,
            ports=[e.service_port() for e in endpoints],
        ),
    )
