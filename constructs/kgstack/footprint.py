"""What a workload costs at maximum scale, for the namespace-wide invariants."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol, runtime_checkable

from .model import Resources


@dataclass(frozen=True, kw_only=True)
class Footprint:
    """A workload's worst case: all replicas at ``max_pods`` plus a rollout surge."""

    resource: str
    """``Deployment/kga-prod-query``: named in every error message."""
    max_pods: int
    """Replicas at maximum scale."""
    surge: int
    """Extra pods a rolling update may add on top of ``max_pods``."""
    pod_resources: tuple[Resources, ...]
    """One entry per container of the pod."""
    storage: Decimal = Decimal(0)
    """Bytes of PVC requests."""
    claims: int = 0
    """Number of PVCs."""

    @property
    def pods(self) -> int:
        return self.max_pods + self.surge

    def total(self, kind: str, key: str) -> Decimal:
        """Sum over pods and containers, e.g. ``total("limits", "memory")``."""
        per_pod = sum((r.total(kind, key) for r in self.pod_resources), Decimal(0))
        return per_pod * self.pods


@runtime_checkable
class HasFootprint(Protocol):
    """A construct that runs pods; the namespace quota sums all of them."""

    def footprint(self) -> Footprint: ...
