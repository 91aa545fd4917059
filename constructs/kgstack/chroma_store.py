"""Chroma, the in-cluster vector store: a single-node server on a PVC, reachable only by policy.

The app talks to Chroma over plain HTTP without auth (docs/agent.md), so
the server image is pinned to the release of the client (kgbackup and the app)
and only the agent tiers and the backup job may reach it (network policies).
"""

from __future__ import annotations

import json

from constructs import Construct

from ._plus import int_or_string, k8s
from .connections import Endpoint
from .model import ImageRef, Spec
from .naming import Identity, object_meta
from .pod_security import hardened_container
from .stateful_store import StatefulStore, StatefulStoreProps, StoreSettings, data_mount

PORT = 8000
HEARTBEAT = "/api/v2/heartbeat"


class ChromaSettings(StoreSettings):
    """The vector store's size and safety switches."""

    allow_reset: bool | None = None
    """Whether the reset API may wipe the store; default: only in dev."""


class ChromaStoreProps(Spec):
    identity: Identity
    namespace: str
    settings: ChromaSettings
    image: ImageRef
    """chromadb/chroma; keep it on the client release (docker/backup/requirements.txt)."""
    storage_class: str | None = None
    allow_reset: bool = False
    """Resolved reset switch (the stack turns it on only in dev)."""


class ChromaStore(Construct):
    """StatefulSet ``<release>-chroma`` serving HTTP on port 8000."""

    def __init__(self, scope: Construct, id: str, *, props: ChromaStoreProps) -> None:
        super().__init__(scope, id)
        self.props = props
        self.name = props.identity.resource_name
        config = {"port": PORT, "listen_address": "0.0.0.0", "persist_path": "/data", "allow_reset": props.allow_reset}
        k8s.KubeConfigMap(
            self,
            "Config",
            metadata=object_meta(props.identity, props.namespace),
            data={"config.yaml": json.dumps(config, indent=2) + "\n"},
        )
        heartbeat = k8s.HttpGetAction(path=HEARTBEAT, port=int_or_string("http"))
        server = hardened_container(
            name="chroma",
            image=props.image.reference,
            resources=props.settings.resources,
            ports=[self.endpoint.container_port()],
            # The image's entrypoint is `dumb-init -- chroma`; JSON is valid YAML for its config.
            args=["run", "/etc/chroma/config.yaml"],
            startup_probe=k8s.Probe(http_get=heartbeat, period_seconds=5, failure_threshold=60),
            readiness_probe=k8s.Probe(http_get=heartbeat, period_seconds=10, timeout_seconds=3),
            liveness_probe=k8s.Probe(http_get=heartbeat, period_seconds=20, timeout_seconds=5, failure_threshold=3),
            mounts=[data_mount("/data"), k8s.VolumeMount(name="config", mount_path="/etc/chroma", read_only=True)],
        )
        self.store = StatefulStore(
            self,
            "Store",
            props=StatefulStoreProps(
                identity=props.identity,
                namespace=props.namespace,
                settings=props.settings,
                storage_class=props.storage_class,
                endpoints=[self.endpoint],
            ),
            containers=[server],
            volumes=[k8s.Volume(name="config", config_map=k8s.ConfigMapVolumeSource(name=self.name))],
        )

    @property
    def endpoint(self) -> Endpoint:
        """Chroma's HTTP API (no auth and no TLS: only the policies protect it)."""
        return Endpoint.serving(self.props.identity, self.props.namespace, PORT, "http", health_path=HEARTBEAT)
