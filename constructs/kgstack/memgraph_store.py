"""Memgraph, the optional graph store: bolt on 7687, auth from a Secret, data on a PVC."""

from __future__ import annotations

from typing import Annotated

from constructs import Construct
from pydantic import Field

from ._plus import int_or_string, k8s
from .agent_secrets import reload_on
from .connections import Endpoint
from .model import ImageRef, Spec
from .naming import Identity
from .pod_security import checkov_skips, hardened_container, unpinned_skip
from .quantity import parse_quantity
from .secret_ref import SecretRef
from .stateful_store import StatefulStore, StatefulStoreProps, StoreSettings, data_mount

BOLT_PORT = 7687
VOLUME_PATH = "/var/lib/memgraph"
"""Where the data PVC is mounted. Its root belongs to root (``fsGroup`` only makes it group-writable)."""
DATA_DIRECTORY = f"{VOLUME_PATH}/data"
"""``--data-directory``: a subdirectory Memgraph creates at first start, so its process owns it. Memgraph
aborts when the data directory exists and belongs to another uid than its own (the volume's root does)."""


class MemgraphSettings(StoreSettings):
    """The graph store's size and credentials."""

    username: str = "kga"
    """The user Memgraph creates at first start; the agent and the backup job log in as it."""
    secret_name: str = "kga-memgraph"
    """Secret whose ``password`` key is that user's password. Memgraph applies ``MEMGRAPH_PASSWORD`` only
    when it creates the user: rotate with ``SET PASSWORD`` first, then the Secret (docs/operations.md)."""
    snapshot_interval_seconds: int = 300
    """Periodic snapshots on top of the write-ahead log."""
    memory_limit_percent: Annotated[int, Field(ge=50, le=95)] = 80
    """``--memory-limit`` as a share of the container's memory limit; the rest covers the process itself."""


class MemgraphStoreProps(Spec):
    identity: Identity
    namespace: str
    settings: MemgraphSettings
    image: ImageRef
    """memgraph/memgraph (2.11 is what the app is tested with)."""
    storage_class: str | None = None


class MemgraphStore(Construct):
    """StatefulSet ``<release>-memgraph`` serving bolt."""

    def __init__(self, scope: Construct, id: str, *, props: MemgraphStoreProps) -> None:
        super().__init__(scope, id)
        self.props = props
        s = props.settings
        self.name = props.identity.resource_name
        self.username = s.username
        self.password = SecretRef(name=s.secret_name, key="password")
        bolt = k8s.TcpSocketAction(port=int_or_string("bolt"))
        server = hardened_container(
            name="memgraph",
            image=props.image.reference,
            resources=s.resources,
            ports=[self.endpoint.container_port()],
            args=[
                f"--data-directory={DATA_DIRECTORY}",
                "--log-file=",  # stderr only: the root filesystem is read-only
                "--also-log-to-stderr=true",
                "--telemetry-enabled=false",
                "--storage-wal-enabled=true",
                f"--storage-snapshot-interval-sec={s.snapshot_interval_seconds}",
                "--storage-recover-on-startup=true",
                # Memgraph sizes itself from the node's RAM otherwise, and is OOM-killed rather than
                # refusing a query that would not fit the container's limit.
                f"--memory-limit={self.memory_limit_mib(s)}",
            ],
            env=[k8s.EnvVar(name="MEMGRAPH_USER", value=s.username), self.password.env("MEMGRAPH_PASSWORD")],
            startup_probe=k8s.Probe(tcp_socket=bolt, period_seconds=5, failure_threshold=60),
            readiness_probe=k8s.Probe(tcp_socket=bolt, period_seconds=10, timeout_seconds=3),
            liveness_probe=k8s.Probe(tcp_socket=bolt, period_seconds=20, timeout_seconds=5, failure_threshold=3),
            mounts=[data_mount(VOLUME_PATH)],
        )
        self.store = StatefulStore(
            self,
            "Store",
            props=StatefulStoreProps(
                identity=props.identity,
                namespace=props.namespace,
                settings=s,
                storage_class=props.storage_class,
                # Snapshots of a large graph take a while; let them finish on shutdown.
                endpoints=[self.endpoint],
                termination_grace_seconds=120,
            ),
            containers=[server],
            annotations=reload_on([s.secret_name])
            | checkov_skips(
                CKV_K8S_35="Memgraph reads its initial credentials only from environment variables",
                **unpinned_skip(props.image),
            ),
        )

    @staticmethod
    def memory_limit_mib(s: MemgraphSettings) -> int:
        """``--memory-limit`` in MiB: ``memoryLimitPercent`` of the container's memory limit."""
        return int(parse_quantity(s.resources.limits.memory) * s.memory_limit_percent / 100 / 2**20)

    @property
    def endpoint(self) -> Endpoint:
        """The bolt port (TCP-probed: Memgraph has no HTTP health path)."""
        return Endpoint.serving(self.props.identity, self.props.namespace, BOLT_PORT, "bolt")

    @property
    def url(self) -> str:
        return self.endpoint.url("bolt")
