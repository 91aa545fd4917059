"""Typed value objects shared by the environment file and the construct props.

Every model is frozen, keyword-only and rejects unknown fields, so a typo in an
environment file is an error, not a silently ignored setting. Field names are
camelCase in YAML (like Kubernetes and Helm values) and snake_case in Python.
"""

from __future__ import annotations

import re
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from .quantity import Quantity, parse_quantity


class Stage(StrEnum):
    """How strict the environment is; ``prod`` turns on the production rules."""

    DEV = "dev"
    STAGING = "staging"
    PROD = "prod"


class FieldError(ValueError):
    """Problems a validator found, each at a field path relative to the model that raised it.

    The environment loader prints each as ``file: <model path>.<path>: reason``, so a
    cross-field rule names the field to change rather than the model that checked it.
    """

    def __init__(self, *problems: tuple[str, str]) -> None:
        super().__init__("; ".join(f"{path}: {reason}" for path, reason in problems))
        self.problems = problems


class Spec(BaseModel):
    """Base of every props and settings model."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        use_attribute_docstrings=True,
    )


_REPOSITORY = re.compile(
    r"^(?:(?P<registry>[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*(:\d+)?)/)?"
    r"[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*$"
)

DNS_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
"""One DNS label (RFC 1123): Kubernetes object and namespace names."""

DnsLabel = Annotated[str, Field(pattern=rf"^{DNS_LABEL}$", max_length=63)]

DigestStr = Annotated[str, Field(pattern=r"^sha256:[a-f0-9]{64}$")]


class ImageRef(Spec):
    """A container image: ``repository:tag`` and, to make it immutable, ``@digest``."""

    repository: str
    """Registry and path, e.g. ``ghcr.io/acme/knowledge-graph-agent``."""
    tag: Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")]
    """Human-readable version; kept next to the digest for reviewers."""
    digest: DigestStr | None = None
    """``sha256:<64 hex>``; when set, the digest (not the tag) decides what runs."""

    @model_validator(mode="after")
    def _repository_is_a_reference(self) -> Self:
        if not _REPOSITORY.match(self.repository):
            raise ValueError(
                f"repository {self.repository!r} is not a valid image reference "
                "(lowercase registry/path, e.g. ghcr.io/acme/agent)"
            )
        return self

    @property
    def reference(self) -> str:
        """What goes into ``image:``."""
        ref = f"{self.repository}:{self.tag}"
        return f"{ref}@{self.digest}" if self.digest else ref


class ComputeAmounts(Spec):
    """CPU and memory, as Kubernetes quantities."""

    cpu: Quantity
    """Cores: ``250m``, ``1``, ``1.5``."""
    memory: Quantity
    """Bytes: ``512Mi``, ``4Gi``."""

    def as_dict(self) -> dict[str, str]:
        return {"cpu": self.cpu, "memory": self.memory}


class Resources(Spec):
    """Container requests and limits; every container in the stack has both."""

    requests: ComputeAmounts
    """What the scheduler reserves; the HPA's utilisation is relative to it."""
    limits: ComputeAmounts
    """The ceiling; memory over it is an OOM kill, CPU over it is throttling."""

    @model_validator(mode="after")
    def _requests_within_limits(self) -> Self:
        for key in ("cpu", "memory"):
            request, limit = getattr(self.requests, key), getattr(self.limits, key)
            if parse_quantity(request) > parse_quantity(limit):
                raise ValueError(f"limits.{key} ({limit}) is below requests.{key} ({request})")
        return self

    def total(self, kind: str, key: str) -> Decimal:
        """``total("requests", "cpu")`` in base units."""
        amounts: ComputeAmounts = getattr(self, kind)
        return parse_quantity(getattr(amounts, key))

    def to_k8s(self) -> dict[str, dict[str, str]]:
        return {"requests": self.requests.as_dict(), "limits": self.limits.as_dict()}


class Autoscaling(Spec):
    """HorizontalPodAutoscaler bounds and targets (autoscaling/v2)."""

    min_replicas: Annotated[int, Field(ge=1)] = 2
    """Floor; also the scale the PDB must tolerate a disruption at."""
    max_replicas: Annotated[int, Field(ge=1)] = 6
    """Ceiling; the namespace quota must cover this many pods."""
    target_in_flight: Annotated[int, Field(ge=1)] = 2
    """Average ``kga_http_requests_in_flight`` per pod the HPA aims at (a Pods metric through the custom metrics
    API; the prometheus-adapter rule is ``kgstack.agent_tier.prometheus_adapter_rules``). Requests waiting on
    the LLM raise it while CPU stays idle. The app answers one request at a time on its event loop (the LLM
    call blocks it), so more than 2 means requests queue. Must be below ``agent.runtime.maxInFlight``, where
    a pod leaves its Service."""
    target_cpu_utilization: Annotated[int, Field(ge=1, le=100)] = 70
    """Average CPU, percent of requests (embedding, parsing and the event loop's own work)."""
    scale_down_stabilization_seconds: Annotated[int, Field(ge=0, le=3600)] = 300
    """How long load must stay low before pods are removed (LLM traffic is bursty)."""

    @model_validator(mode="after")
    def _bounds(self) -> Self:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"minReplicas ({self.min_replicas}) is greater than maxReplicas ({self.max_replicas})")
        return self


class Disruption(Spec):
    """PodDisruptionBudget: how many pods a voluntary disruption may take at once."""

    max_unavailable: Annotated[int, Field(ge=0)] | None = 1
    """Pods that may be down at once; exclusive with ``minAvailable``."""
    min_available: Annotated[int, Field(ge=0)] | None = None
    """Pods that must stay up; exclusive with ``maxUnavailable``."""

    @model_validator(mode="after")
    def _one_of(self) -> Self:
        if (self.max_unavailable is None) == (self.min_available is None):
            raise ValueError("set exactly one of maxUnavailable and minAvailable")
        return self

    def allowed_disruptions(self, replicas: int) -> int:
        """Voluntary evictions the budget allows when ``replicas`` are healthy."""
        if self.max_unavailable is not None:
            return min(self.max_unavailable, replicas)
        assert self.min_available is not None
        return max(replicas - self.min_available, 0)
