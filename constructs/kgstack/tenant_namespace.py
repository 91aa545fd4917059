"""The environment's namespace, fenced: Pod Security ``restricted``, a quota, container defaults."""

from __future__ import annotations

from constructs import Construct

from ._plus import k8s, quantity
from .environment import ContainerDefaults, Quota
from .footprint import Footprint, HasFootprint
from .model import Spec
from .naming import Identity, object_meta
from .validation import add_check, quota_problems


class TenantNamespaceProps(Spec):
    identity: Identity
    """Release identity; the namespace carries its labels."""
    namespace: str
    """Namespace name."""
    pod_security_version: str
    """Pinned Pod Security Standards version, ``v1.31``; ``latest`` would drift with upgrades."""
    quota: Quota
    """ResourceQuota; must cover every workload in the scope at maximum scale."""
    container_defaults: ContainerDefaults = ContainerDefaults()
    """LimitRange defaults for containers that set no resources."""


class TenantNamespace(Construct):
    """Namespace + ResourceQuota + LimitRange, and the check that the quota fits the stack.

    The quota check runs at synth over every construct in ``quota_scope`` (by
    default this construct's parent) that exposes a :class:`Footprint`.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        props: TenantNamespaceProps,
        quota_scope: Construct | None = None,
    ) -> None:
        super().__init__(scope, id)
        self.props = props
        self.name = props.namespace
        level = {"enforce", "audit", "warn"}
        psa = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in sorted(level)}
        psa |= {f"pod-security.kubernetes.io/{mode}-version": props.pod_security_version for mode in sorted(level)}
        identity = props.identity.of("tenant")
        k8s.KubeNamespace(
            self,
            "Namespace",
            metadata=k8s.ObjectMeta(name=props.namespace, labels={**identity.labels, **psa}),
        )
        q = props.quota
        k8s.KubeResourceQuota(
            self,
            "Quota",
            metadata=object_meta(identity, props.namespace, name=props.identity.resource_name),
            spec=k8s.ResourceQuotaSpec(
                hard={
                    "requests.cpu": quantity(q.requests.cpu),
                    "requests.memory": quantity(q.requests.memory),
                    "limits.cpu": quantity(q.limits.cpu),
                    "limits.memory": quantity(q.limits.memory),
                    "pods": quantity(q.pods),
                    "requests.storage": quantity(q.storage),
                    "persistentvolumeclaims": quantity(q.persistent_volume_claims),
                }
            ),
        )
        d = props.container_defaults
        k8s.KubeLimitRange(
            self,
            "LimitRange",
            metadata=object_meta(identity, props.namespace, name=props.identity.resource_name),
            spec=k8s.LimitRangeSpec(
                limits=[
                    k8s.LimitRangeItem(
                        type="Container",
                        default_request={k: quantity(v) for k, v in d.default_request.as_dict().items()},
                        default={k: quantity(v) for k, v in d.default_limit.as_dict().items()},
                    )
                ]
            ),
        )
        self._quota_scope = quota_scope or scope
        add_check(self, self._quota_problems)

    def footprints(self) -> list[Footprint]:
        return sorted(
            (c.footprint() for c in self._quota_scope.node.find_all() if isinstance(c, HasFootprint)),
            key=lambda f: f.resource,
        )

    def _quota_problems(self) -> list[str]:
        """The ResourceQuota must admit every workload at maximum scale plus surge."""
        return quota_problems(self.footprints(), self.props.quota)
