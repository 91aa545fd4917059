"""How the stack's Deployments roll out and spread: shared by every stateless tier."""

from __future__ import annotations

import hashlib

from ._plus import int_or_string, k8s
from .naming import Identity

SURGE = 1
"""Rollouts add one pod before removing one: never below the desired count."""


def rolling_update() -> k8s.DeploymentStrategy:
    """``maxSurge: 1, maxUnavailable: 0``."""
    return k8s.DeploymentStrategy(
        type="RollingUpdate",
        rolling_update=k8s.RollingUpdateDeployment(max_surge=int_or_string(SURGE), max_unavailable=int_or_string(0)),
    )


def zone_and_node_spread(identity: Identity) -> list[k8s.TopologySpreadConstraint]:
    """Soft spread over zones and nodes: a single-zone or small cluster must still schedule every replica."""
    return [
        k8s.TopologySpreadConstraint(
            topology_key=key,
            max_skew=1,
            when_unsatisfiable="ScheduleAnyway",
            label_selector=k8s.LabelSelector(match_labels=identity.selector),
        )
        for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname")
    ]


ZONAL_STATE = "kgstack/zonal-state"
"""Pod label of a single-replica component whose data sits on a zonal volume (indexer and stores)."""


def zonal_state_labels() -> dict[str, str]:
    """Pod labels that :func:`apart_from_other_zonal_state` keeps apart."""
    return {ZONAL_STATE: "true"}


def apart_from_other_zonal_state(identity: Identity) -> k8s.Affinity:
    """Prefer a zone that holds no other zonal-state pod of the release.

    A zone loss then takes at most one store down instead of (say) Chroma and the indexer
    together. Preferred, not required: staging runs four such components and a dev cluster
    may have a single zone. The volume pins the pod to its zone afterwards anyway.
    """
    return k8s.Affinity(
        pod_anti_affinity=k8s.PodAntiAffinity(
            preferred_during_scheduling_ignored_during_execution=[
                k8s.WeightedPodAffinityTerm(
                    weight=100,
                    pod_affinity_term=k8s.PodAffinityTerm(
                        topology_key="topology.kubernetes.io/zone",
                        label_selector=k8s.LabelSelector(
                            match_labels={
                                "app.kubernetes.io/instance": identity.instance,
                                **zonal_state_labels(),
                            }
                        ),
                    ),
                )
            ]
        )
    )


def recreate() -> k8s.DeploymentStrategy:
    """For a single replica on a ReadWriteOnce volume: the old pod releases the volume first.

    A surge pod would need the old pod's node (the volume attaches to one node), and a
    required self-affinity that forces that pins the replacement to a cordoned node during a
    drain (issue 9, defect 6).
    """
    return k8s.DeploymentStrategy(type="Recreate")


def rolls_on(config: str) -> dict[str, str]:
    """Pod template annotation that rolls the pods whenever ``config`` changes (no hash-suffixed names)."""
    return {"checksum/config": hashlib.sha256(config.encode()).hexdigest()}
