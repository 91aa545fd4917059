"""Argo CD ``Application`` for one environment: Argo CD applies ``dist/<env>/`` as committed.

No typed package exists for Argo CD's CRDs, so the subset of
``argoproj.io/v1alpha1`` Application that we render is modelled here, with
``extra="forbid"`` at every level: a misspelt field is an error at synth, not
an Application that Argo CD silently reads differently.

The Application cannot order the objects it syncs; that is what the
``argocd.argoproj.io/sync-wave`` annotation on each object does. :func:`sync_wave`
gives the wave of a kind.

Deliberately absent: the ``resources-finalizer.argocd.argoproj.io`` finalizer.
Without it, deleting the Application leaves the workloads and their
PersistentVolumeClaims in place (no cascading delete of the indexer's state);
delete them explicitly when an environment is retired.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Self

from constructs import Construct
from pydantic import BaseModel, ConfigDict, Field, model_validator

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
    # configuration and storage
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


class ApplicationSpec(_Strict):
    project: NonEmpty
    source: ApplicationSource
    destination: ApplicationDestination
    sync_policy: SyncPolicy = Field(alias="syncPolicy")
    revision_history_limit: Annotated[int, Field(ge=1)] = Field(10, alias="revisionHistoryLimit")


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
            ),
        )
        self.api_object = custom_resource(self, "Resource", self.model)
