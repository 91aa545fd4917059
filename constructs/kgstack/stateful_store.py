"""A single-node data store: StatefulSet with a PVC, headless Service, PDB and ServiceAccount.

Redis, Chroma and Memgraph differ only in their containers; what they share
(stable identity, storage, disruption policy, security) lives here once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from constructs import Construct
from pydantic import Field

from ._plus import k8s, quantity
from .connections import Endpoint, expose
from .disruption_budget import disruption_budget
from .footprint import Footprint
from .model import Disruption, Resources, Spec
from .naming import Identity, object_meta
from .pod_security import RUNTIME_UID, pod_security_context
from .quantity import Quantity, parse_quantity
from .scheduling import apart_from_other_zonal_state, zonal_state_labels


class StoreSettings(Spec):
    """Per-environment size of a store; every store is a single-node server."""

    resources: Resources
    """Requests and limits of the store's main container."""
    storage_size: Quantity
    """PVC capacity of the data volume."""
    replicas: Annotated[int, Field(ge=0, le=1)] = 1
    """1, or 0 to park the store; these servers do not cluster, so never more than 1."""


class StatefulStoreProps(Spec):
    identity: Identity
    """Release identity with the store as component (``redis``, ``chroma``, ``memgraph``)."""
    namespace: str
    settings: StoreSettings
    storage_class: str | None = None
    """StorageClass of the data PVC; ``None`` uses the cluster default."""
    endpoints: list[Endpoint]
    """The ports the store serves (the store's own first), exposed by its headless Service."""
    termination_grace_seconds: Annotated[int, Field(ge=10)] = 60
    """Time to flush to disk after SIGTERM."""
    uid: int = RUNTIME_UID
    """UID/GID the pod runs as; the data volume is group-owned by it."""


class StatefulStore(Construct):
    """The shared shape of a store; containers come from the store's own construct.

    ``containers[0]`` is the store itself and must mount the ``data`` volume
    (:func:`data_mount`); further containers are sidecars (e.g. an exporter).
    Every pod gets a ``tmp`` emptyDir volume for /tmp.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        props: StatefulStoreProps,
        containers: Sequence[k8s.Container],
        sidecar_resources: Sequence[Resources] = (),
        init_containers: Sequence[k8s.Container] = (),
        volumes: Sequence[k8s.Volume] = (),
        pod_annotations: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None,
    ) -> None:
        super().__init__(scope, id)
        self.props = props
        self.name = props.identity.resource_name
        self._pod_resources = (props.settings.resources, *sidecar_resources)
        meta = object_meta(props.identity, props.namespace)
        selector = props.identity.selector

        k8s.KubeServiceAccount(self, "ServiceAccount", metadata=meta, automount_service_account_token=False)
        expose(self, props.identity, props.namespace, props.endpoints, headless=True)
        k8s.KubeStatefulSet(
            self,
            "StatefulSet",
            metadata=object_meta(props.identity, props.namespace, annotations=annotations),
            spec=k8s.StatefulSetSpec(
                service_name=self.name,
                replicas=props.settings.replicas,
                selector=k8s.LabelSelector(match_labels=selector),
                # Deleting or scaling the StatefulSet must never delete data.
                persistent_volume_claim_retention_policy=k8s.StatefulSetPersistentVolumeClaimRetentionPolicy(
                    when_deleted="Retain",
                    when_scaled="Retain",
                ),
                template=k8s.PodTemplateSpec(
                    metadata=k8s.ObjectMeta(
                        labels={**props.identity.labels, **zonal_state_labels()},
                        annotations=pod_annotations or None,
                    ),
                    spec=k8s.PodSpec(
                        affinity=apart_from_other_zonal_state(props.identity),
                        service_account_name=self.name,
                        automount_service_account_token=False,
                        enable_service_links=False,
                        termination_grace_period_seconds=props.termination_grace_seconds,
                        security_context=pod_security_context(props.uid),
                        init_containers=list(init_containers) or None,
                        containers=list(containers),
                        volumes=[
                            k8s.Volume(name="tmp", empty_dir=k8s.EmptyDirVolumeSource(size_limit=quantity("256Mi"))),
                            *volumes,
                        ],
                    ),
                ),
                volume_claim_templates=[
                    k8s.KubePersistentVolumeClaimProps(
                        metadata=k8s.ObjectMeta(name="data", labels=props.identity.labels),
                        spec=k8s.PersistentVolumeClaimSpec(
                            access_modes=["ReadWriteOnce"],
                            storage_class_name=props.storage_class,
                            resources=k8s.ResourceRequirements(
                                requests={"storage": quantity(props.settings.storage_size)}
                            ),
                        ),
                    )
                ],
            ),
        )
        # What a single-replica store's budget promises (docs/operations.md): a drain always
        # completes, and evicts this pod only through the Eviction API with its full grace period
        # to flush; the store is down from SIGTERM until the pod is Ready again in the same zone.
        # minAvailable: 1 would block every drain forever, so it is not an option.
        disruption_budget(self, props.identity, props.namespace, Disruption(max_unavailable=1))

    def footprint(self) -> Footprint:
        s = self.props.settings
        return Footprint(
            resource=f"StatefulSet/{self.name}",
            max_pods=s.replicas,
            surge=0,  # StatefulSets replace pods one at a time, never above replicas
            pod_resources=self._pod_resources,
            storage=parse_quantity(s.storage_size) * s.replicas,
            claims=s.replicas,
        )


def data_mount(path: str) -> k8s.VolumeMount:
    """The mount of the StatefulSet's ``data`` PVC."""
    return k8s.VolumeMount(name="data", mount_path=path)
