"""Argo CD ``Application`` for one environment: Argo CD applies ``dist/<env>/`` as committed.

No typed package exists for Argo CD's CRDs, so the subset of
``argoproj.io/v1alpha1`` Application that we render is modelled here, with
``extra="forbid"`` at every level: a misspelt field is an error at synth, not
an Application that Argo CD silently reads differently.

The Application cannot order the objects it syncs; that is what the
``argocd.argoproj.io/sync-wave`` annotation on each object does. :func:`sync_wave`
gives the wave of a kind; :func:`claim_waves` moves each PersistentVolumeClaim into the
wave of its first consumer, read from the rendered pod specs (argo-cd #12840: a claim
under a WaitForFirstConsumer StorageClass stays Pending, which Argo CD reports as
Progressing, until a pod uses it).

Deliberately absent: the ``resources-finalizer.argocd.argoproj.io`` finalizer.
Without it, deleting the Application leaves the workloads and their
PersistentVolumeClaims in place (no cascading delete of the indexer's state);
delete them explicitly when an environment is retired.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Literal, Self

from constructs import Construct
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .custom_resource import custom_resource
from .model import Spec

SYNC_WAVE_ANNOTATION = "argocd.argoproj.io/sync-wave"
IN_CLUSTER = "https://kubernetes.default.svc"
FULL_COMMIT = re.compile(r"^[0-9a-f]{40}$")
"""A Git commit named in full: the only revision that cannot move."""

# ---------------------------------------------------------------- sync waves
# Argo CD applies waves in ascending order and waits for each wave to be healthy
# before the next. Within a wave it already orders by kind (Namespace first, then
# ServiceAccounts, ConfigMaps ..., workloads), so waves are only needed where a
# dependency crosses that order: objects of CRD-backed kinds must exist (and, for
# ExternalSecret/Certificate, be Ready) before the pods that mount their Secrets.
_WAVES: dict[str, int] = {
    # the tenant fence: nothing else can be created before it
    "Namespace": -2,
    "ResourceQuota": -2,
    "LimitRange": -2,
    # identities, policies and custom resources that produce Secrets the pods mount
    "ServiceAccount": -1,
    "Role": -1,
    "RoleBinding": -1,
    "NetworkPolicy": -1,
    "Secret": -1,
    "SecretStore": -1,
    "ClusterSecretStore": -1,
    "ExternalSecret": -1,
    "Issuer": -1,
    # configuration; a claim only when nothing mounts it (else its consumer's wave: claim_waves)
    "ConfigMap": 0,
    "PersistentVolumeClaim": 0,
    "Service": 0,
    # workloads (stateful stores before the agent that calls them)
    "StatefulSet": 1,
    "Deployment": 2,
    "CronJob": 2,
    "Job": 2,
    "HorizontalPodAutoscaler": 2,
    "VerticalPodAutoscaler": 2,
    "PodDisruptionBudget": 2,
    # edge policies before the routes they protect: a route never serves without its auth and limits
    "SecurityPolicy": 2,
    "BackendTrafficPolicy": 2,
    "ClientTrafficPolicy": 2,
    "BackendTLSPolicy": 2,
    # the edge and monitoring, once there is something healthy behind them
    "Ingress": 3,
    # With the Gateway that serves it, not before: an HTTP-01 challenge is answered through that
    # Gateway, and Argo CD would otherwise wait on a Certificate that cannot be issued yet.
    "Certificate": 3,
    "Gateway": 3,
    "HTTPRoute": 3,
    "ServiceMonitor": 3,
    "PodMonitor": 3,
    "Probe": 3,
    "PrometheusRule": 3,
    "AlertmanagerConfig": 3,
}
_DEFAULT_WAVE = 0


def sync_wave(kind: str) -> str:
    """The ``argocd.argoproj.io/sync-wave`` value for an object of ``kind`` (a string, as annotations are)."""
    return str(_WAVES.get(kind, _DEFAULT_WAVE))


STARTS_PODS_AT_SYNC = frozenset({"Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"})
"""Kinds whose pods exist as soon as they are applied; a CronJob's only at its schedule, so it cannot be the
first consumer that binds a claim during a sync."""


def pod_spec(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The pod spec an object runs (its template's, a CronJob's job template's), or ``None``."""
    kind, spec = obj.get("kind"), obj.get("spec") or {}
    if kind == "Pod":
        return spec
    if kind == "CronJob":
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    elif kind not in STARTS_PODS_AT_SYNC:
        return None
    return (spec.get("template") or {}).get("spec")


def claims_used(obj: Mapping[str, Any]) -> Iterator[str]:
    """The PersistentVolumeClaims an object's pods mount (``volumes[].persistentVolumeClaim.claimName``)."""
    for volume in (pod_spec(obj) or {}).get("volumes") or []:
        claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
        if claim:
            yield claim


def wave_of(obj: Mapping[str, Any]) -> int:
    """The object's sync wave as Argo CD reads it (gitops-engine ``syncwaves.Wave``: the annotation, else 0)."""
    text = ((obj.get("metadata") or {}).get("annotations") or {}).get(SYNC_WAVE_ANNOTATION)
    try:
        return int(text) if text is not None else 0
    except ValueError:
        return 0


def consumer_waves(objects: Mapping[str, Mapping[str, Any]]) -> dict[tuple[str, str], int]:
    """``{(namespace, claim): wave}``: the earliest wave of an object whose pods mount the claim when it is
    applied (a CronJob counts only when nothing else mounts the claim)."""
    first: dict[tuple[str, str], int] = {}
    later: dict[tuple[str, str], int] = {}
    for obj in objects.values():
        namespace = obj.get("metadata", {}).get("namespace", "")
        for claim in claims_used(obj):
            into = first if obj["kind"] in STARTS_PODS_AT_SYNC else later
            key = (namespace, claim)
            into[key] = min(into.get(key, wave_of(obj)), wave_of(obj))
    return later | first


def claim_waves(objects: Mapping[str, dict[str, Any]]) -> None:
    """Give every PersistentVolumeClaim without a wave of its own the wave of its first consumer (in place).

    A claim must not come earlier: under a WaitForFirstConsumer StorageClass (EBS gp3, GKE standard-rwo, AKS
    managed-csi, local-path) it stays Pending until a pod uses it, Argo CD reports a Pending claim as
    Progressing and never starts the next wave. Nor later: the consumer's pods would wait for a claim that
    does not exist yet. A claim nothing mounts keeps its kind's wave."""
    waves = consumer_waves(objects)
    for obj in objects.values():
        if obj["kind"] != "PersistentVolumeClaim":
            continue
        key = (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
        annotations = obj["metadata"].setdefault("annotations", {})
        wave = waves.get(key)
        annotations.setdefault(SYNC_WAVE_ANNOTATION, sync_wave(obj["kind"]) if wave is None else str(wave))


# ---------------------------------------------------------------- the Application model
class _Strict(BaseModel):
    """Argo CD's own field names (camelCase, ``repoURL``); unknown fields are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_by_name=True, validate_by_alias=True)


NonEmpty = Annotated[str, Field(min_length=1)]


class ApplicationMetadata(_Strict):
    name: NonEmpty
    namespace: NonEmpty
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class ApplicationSourceHelm(_Strict):
    release_name: NonEmpty = Field(alias="releaseName")
    values_object: dict[str, Any] | None = Field(None, alias="valuesObject")


class ApplicationSource(_Strict):
    """A folder of a Git repository (``path``), or a Helm chart of a chart repository (``chart``)."""

    repo_url: NonEmpty = Field(alias="repoURL")
    target_revision: NonEmpty = Field(alias="targetRevision")
    path: NonEmpty | None = None
    chart: NonEmpty | None = None
    helm: ApplicationSourceHelm | None = None


class ApplicationDestination(_Strict):
    server: NonEmpty
    namespace: NonEmpty


class SyncPolicyAutomated(_Strict):
    prune: bool
    self_heal: bool = Field(alias="selfHeal")
    allow_empty: bool = Field(False, alias="allowEmpty")


class Backoff(_Strict):
    duration: NonEmpty
    factor: Annotated[int, Field(ge=1)]
    max_duration: NonEmpty = Field(alias="maxDuration")


class RetryStrategy(_Strict):
    limit: Annotated[int, Field(ge=0)]
    backoff: Backoff


class SyncPolicy(_Strict):
    automated: SyncPolicyAutomated | None = None
    sync_options: list[NonEmpty] = Field(default_factory=list, alias="syncOptions")
    retry: RetryStrategy | None = None


_POINTER = re.compile(r"^(/([^~/]|~[01])+)+$")
"""An RFC 6901 JSON pointer to a field (not the whole document, no empty key): ``~`` only as ``~0`` or ``~1``."""


class IgnoreDifference(_Strict):
    """One ``spec.ignoreDifferences`` entry: the fields at ``jsonPointers`` of the matching objects are left out
    of the diff (Argo CD removes them from the live and the desired object before comparing) and, with the
    ``RespectIgnoreDifferences=true`` sync option, a sync keeps their live value."""

    group: str = ""
    """API group of the objects (``apps``; empty for the core group)."""
    kind: NonEmpty
    """Kind of the objects."""
    name: NonEmpty | None = None
    """Only the object of this name; ``None``: every object of the kind."""
    namespace: NonEmpty | None = None
    """Only objects in this namespace; ``None``: any."""
    json_pointers: list[str] = Field(alias="jsonPointers", min_length=1)
    """RFC 6901 pointers to the ignored fields; ``/`` inside a key is written ``~1``."""

    @field_validator("json_pointers")
    @classmethod
    def _pointers(cls, pointers: list[str]) -> list[str]:
        for pointer in pointers:
            if not _POINTER.match(pointer):
                raise ValueError(f"jsonPointers: {pointer!r} is not a JSON pointer to a field (RFC 6901)")
        if len(set(pointers)) != len(pointers):
            raise ValueError("jsonPointers: a pointer is listed twice")
        return pointers


class ApplicationSpec(_Strict):
    project: NonEmpty
    source: ApplicationSource
    destination: ApplicationDestination
    sync_policy: SyncPolicy = Field(alias="syncPolicy")
    revision_history_limit: Annotated[int, Field(ge=1)] = Field(10, alias="revisionHistoryLimit")
    ignore_differences: list[IgnoreDifference] | None = Field(None, alias="ignoreDifferences")


class Application(_Strict):
    """``argoproj.io/v1alpha1`` Application, the subset this project renders."""

    api_version: Literal["argoproj.io/v1alpha1"] = Field("argoproj.io/v1alpha1", alias="apiVersion")
    kind: Literal["Application"] = "Application"
    metadata: ApplicationMetadata
    spec: ApplicationSpec


# ---------------------------------------------------------------- settings and construct
class GitOpsSettings(Spec):
    """Where Argo CD finds the manifests, and how it syncs them."""

    repo_url: str = Field(alias="repoURL", min_length=1)
    """The Git repository holding ``dist/`` (HTTPS or SSH URL)."""
    target_revision: str = Field("main", min_length=1)
    """Branch, tag or commit Argo CD tracks. With ``promotedFrom``: the full 40-hex commit promoted."""
    promoted_from: str | None = None
    """Promotion by commit: the environment whose validated commit this one deploys (``staging`` for prod).
    ``targetRevision`` must then be that commit in full, written by ``scripts/promote.py`` from the Argo CD
    status of that environment (synced and healthy on it), never a branch whose head moves before a sync.
    Default ``None``: Argo CD tracks ``targetRevision`` as given."""
    argocd_namespace: str = "argocd"
    """Namespace Argo CD runs in; the Application object lives there."""
    project: str = "default"
    """Argo CD AppProject; restrict its destinations and source repos in the cluster."""
    automated: bool | None = None
    """Sync on every commit; ``None`` lets the caller decide (automatic outside prod)."""
    prune: bool = True
    """With automated sync: delete objects that disappeared from ``dist/``."""
    self_heal: bool = True
    """With automated sync: revert changes made in the cluster by hand."""

    @model_validator(mode="after")
    def _promoted_commit(self) -> Self:
        if self.promoted_from is not None and not FULL_COMMIT.match(self.target_revision):
            raise ValueError(
                f"targetRevision: {self.target_revision!r} is not a full 40-hex commit; with promotedFrom "
                f"({self.promoted_from}) it is the commit {self.promoted_from} validated (scripts/promote.py), "
                "never a branch or tag, whose head can move before the sync"
            )
        return self


def automated_by_default(stage: str) -> bool:
    """dev and staging follow ``main`` automatically; prod is synced by a person."""
    return stage != "prod"


class ArgoCdApplication(Construct):
    """One Application that syncs ``path`` (``dist/<env>``), or a Helm ``source``, into ``namespace`` of
    the cluster at ``server``."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        name: str,
        namespace: str,
        settings: GitOpsSettings,
        automated: bool,
        server: str = IN_CLUSTER,
        path: str | None = None,
        source: ApplicationSource | None = None,
        labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None,
        create_namespace: bool = False,
        ignore_differences: list[IgnoreDifference] | None = None,
    ) -> None:
        super().__init__(scope, id)
        if (path is None) == (source is None):
            raise ValueError(f"{name}: give exactly one of path and source")
        policy = SyncPolicy(
            automated=SyncPolicyAutomated(prune=settings.prune, self_heal=settings.self_heal) if automated else None,
            sync_options=[
                # dist/<env> carries its own Namespace (with Pod Security labels); a chart gets one made
                f"CreateNamespace={str(create_namespace).lower()}",
                # deletions last, after the new objects are healthy
                "PruneLast=true",
                # never adopt an object another Application manages
                "FailOnSharedResource=true",
                # CRDs of the platform's charts exceed the client-side apply annotation limit
                *(["ServerSideApply=true"] if source is not None else []),
                # a sync (self-heal included) keeps the live value of an ignored field, not Git's
                *(["RespectIgnoreDifferences=true"] if ignore_differences else []),
            ],
            retry=RetryStrategy(limit=5, backoff=Backoff(duration="10s", factor=2, max_duration="3m")),
        )
        self.model = Application(
            metadata=ApplicationMetadata(
                name=name,
                namespace=settings.argocd_namespace,
                labels=labels or None,
                annotations=annotations or None,
            ),
            spec=ApplicationSpec(
                project=settings.project,
                source=source
                or ApplicationSource(repo_url=settings.repo_url, target_revision=settings.target_revision, path=path),
                destination=ApplicationDestination(server=server, namespace=namespace),
                sync_policy=policy,
                ignore_differences=ignore_differences or None,
            ),
        )
        self.api_object = custom_resource(self, "Resource", self.model)
