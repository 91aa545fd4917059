"""The PodDisruptionBudget every workload of the stack gets, from one typed :class:`Disruption`."""

from __future__ import annotations

from constructs import Construct

from ._plus import int_or_string, k8s
from .model import Disruption
from .naming import Identity, object_meta


def disruption_budget(
    scope: Construct, identity: Identity, namespace: str, disruption: Disruption
) -> k8s.KubePodDisruptionBudget:
    """PDB ``<release>-<component>`` over the component's pods."""
    d = disruption
    return k8s.KubePodDisruptionBudget(
        scope,
        "Budget",
        metadata=object_meta(identity, namespace),
        spec=k8s.PodDisruptionBudgetSpec(
            selector=k8s.LabelSelector(match_labels=identity.selector),
            max_unavailable=None if d.max_unavailable is None else int_or_string(d.max_unavailable),
            min_available=None if d.min_available is None else int_or_string(d.min_available),
            # A crash-looping pod must not block node drains.
            unhealthy_pod_eviction_policy="AlwaysAllow",
        ),
    )
