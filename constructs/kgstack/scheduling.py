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


def rolls_on(config: str) -> dict[str, str]:
    """Pod template annotation that rolls the pods whenever ``config`` changes (no hash-suffixed names)."""
    return {"checksum/config": hashlib.sha256(config.encode()).hexdigest()}
