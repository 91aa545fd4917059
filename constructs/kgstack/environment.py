"""The environment file: one YAML per environment, validated before anything is built.

``load_environment`` turns every problem in a file into one line that names the
file, the field path and the reason, so a user never reads a traceback for a
typo. The JSON Schema of :class:`Environment` is published next to the files
(``environments/schema.json``) for editor completion.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Self, get_args

import yaml
from pydantic import AfterValidator, BaseModel, Field, ValidationError, model_validator

from .agent_secrets import SecretsSettings
from .agent_settings import AgentSettings, Chunking, Embedding, Graph, Llm, Repository, VectorStore, Workflow
from .argocd_application import GitOpsSettings
from .backup_schedule import BackupSettings
from .chroma_store import ChromaSettings
from .cluster_platform import Cluster
from .edge import EdgeSettings
from .memgraph_store import MemgraphSettings
from .model import (
    DNS_LABEL,
    Autoscaling,
    ComputeAmounts,
    Disruption,
    DnsLabel,
    FieldError,
    ImageRef,
    Resources,
    Spec,
    Stage,
)
from .monitoring import MonitoringSettings
from .network_policies import NetworkSettings
from .object_patch import ObjectPatch
from .quantity import Quantity
from .redis_cache import RedisSettings
from .reindex_schedule import ReindexSettings
from .workload_settings import WorkloadSettings

__all__ = [
    # The agent's settings live in agent_settings.py; re-exported for existing imports.
    "AgentSettings",
    "Chunking",
    "Embedding",
    "Environment",
    "EnvironmentFileError",
    "Graph",
    "Llm",
    "Repository",
    "VectorStore",
    "Workflow",
    "json_schema",
    "load_environment",
    "load_environments",
    "markdown_reference",
    "parse_environment",
]

SUPPORTED_KUBERNETES = tuple(f"1.{minor}" for minor in range(27, 36))
"""Versions every manifest is validated against; the target must be one of them."""

_DOMAIN = re.compile(rf"^(?=.{{1,253}}$){DNS_LABEL}(\.{DNS_LABEL})+$")


def _domain(value: str) -> str:
    if not _DOMAIN.match(value):
        raise ValueError(f"{value!r} is not a lowercase DNS name with at least two labels")
    return value


def _environment_name(value: str) -> str:
    if value == "argocd":
        raise ValueError("'argocd' is reserved: dist/argocd/ holds the Argo CD Applications")
    if value == "clusters":
        raise ValueError("'clusters' is reserved: docs/environments/clusters/ holds the install procedures")
    return value


def _kubernetes_version(value: str) -> str:
    if value not in SUPPORTED_KUBERNETES:
        raise ValueError(f"{value!r} is not one of {', '.join(SUPPORTED_KUBERNETES)}")
    return value


class CloudProvider(StrEnum):
    GENERIC = "generic"
    EKS = "eks"
    GKE = "gke"
    AKS = "aks"


_DEFAULT_STORAGE_CLASS: dict[CloudProvider, str | None] = {
    CloudProvider.GENERIC: None,  # the cluster's default StorageClass
    CloudProvider.EKS: "gp3",
    CloudProvider.GKE: "standard-rwo",
    CloudProvider.AKS: "managed-csi",
}
_IDENTITY_ANNOTATION: dict[CloudProvider, str] = {
    CloudProvider.EKS: "eks.amazonaws.com/role-arn",
    CloudProvider.GKE: "iam.gke.io/gcp-service-account",
    CloudProvider.AKS: "azure.workload.identity/client-id",
}


class CloudProfile(Spec):
    """What differs between clusters: storage, ingress and workload identity."""

    provider: CloudProvider = CloudProvider.GENERIC
    """generic, eks, gke or aks; picks the defaults below."""
    storage_class: str | None = None
    """StorageClass for every PVC; default per provider (generic: cluster default)."""
    ingress_class: str = "nginx"
    """IngressClass that serves the environment's host."""
    load_balancer_annotations: dict[str, str] = Field(default_factory=dict)
    """Annotations for the edge load balancer (e.g. AWS NLB or GCP NEG settings)."""
    workload_identity: str | None = None
    """Cloud identity for pods: IAM role ARN (eks), GSA email (gke), client ID (aks)."""

    @model_validator(mode="after")
    def _identity_needs_a_cloud(self) -> Self:
        if self.workload_identity and self.provider is CloudProvider.GENERIC:
            raise FieldError(("workloadIdentity", "needs cloud.provider eks, gke or aks (generic has no identity)"))
        return self

    @property
    def storage_class_name(self) -> str | None:
        return self.storage_class or _DEFAULT_STORAGE_CLASS[self.provider]

    @property
    def service_account_annotations(self) -> dict[str, str]:
        if not self.workload_identity:
            return {}
        return {_IDENTITY_ANNOTATION[self.provider]: self.workload_identity}

    @property
    def pod_labels(self) -> dict[str, str]:
        # AKS injects the federated token only into pods that opt in.
        if self.workload_identity and self.provider is CloudProvider.AKS:
            return {"azure.workload.identity/use": "true"}
        return {}


OWN_IMAGES = ("agent", "web", "backup", "redis")
"""Images built from docker/; their digests come only from the release workflow (kgstack.releases)."""


def _upstream(repository: str, tag: str, digest: str | None) -> ImageRef:
    return ImageRef(repository=repository, tag=tag, digest=digest)


class Images(Spec):
    """Every image the environment runs.

    Ours (agent, web, backup, redis) are built from docker/ and pinned per environment
    by the release pipeline. Upstream images default to versions pinned by index
    digest (multi-arch); memgraph has no published digest we could verify, so an
    environment that enables the graph store in prod must mirror it and pin it.
    """

    agent: ImageRef
    """The agent API image (query tier and indexer run the same image)."""
    web: ImageRef
    """The web UI image (docker/web: the app's index.html on unprivileged nginx)."""
    backup: ImageRef
    """The kgbackup image (docker/backup)."""
    redis: ImageRef
    """The cache's server (docker/redis): Debian's maintained redis-server 7.0.15, the build the tests run
    and the RDB version the backup image's redis-server reads."""
    redis_exporter: ImageRef = _upstream(
        "docker.io/oliver006/redis_exporter",
        "v1.66.0",
        "sha256:d98e6db8094f491b95791e9f776b0ba30a20aeacb90e18334935d5e51bf2e6a1",
    )
    """Prometheus exporter sidecar of Redis."""
    chroma: ImageRef = _upstream(
        "docker.io/chromadb/chroma",
        "1.5.9",
        "sha256:1e0b73a187a28757c572acba508c46f48c9e8b0acaf5c20e6d95cdedce1acdf6",
    )
    """Chroma server; the same release as the chromadb client in docker/backup."""
    memgraph: ImageRef = _upstream("docker.io/memgraph/memgraph", "2.11.0", None)
    """Memgraph, the release the app documents."""
    nginx: ImageRef = _upstream(
        "docker.io/nginxinc/nginx-unprivileged",
        "1.27.5-alpine",
        "sha256:65e3e85dbaed8ba248841d9d58a899b6197106c23cb0ff1a132b7bfe0547e4c0",
    )
    """Unprivileged nginx for the edge's API-key verifier."""

    def all(self) -> dict[str, ImageRef]:
        return {name: getattr(self, name) for name in type(self).model_fields}

    def in_use(self, env: Environment) -> dict[str, ImageRef]:
        """The images ``env`` actually deploys (a disabled store needs no digest)."""
        unused = {store for store, on in env.optional_stores.items() if not on}
        return {name: ref for name, ref in self.all().items() if name not in unused}


class QueryTier(Spec):
    """The horizontally scaled tier that answers ``/api`` queries."""

    resources: Resources
    """Per pod; the app's compose file suggests limits of 2 CPU and 4Gi."""
    autoscaling: Autoscaling = Autoscaling()
    """HPA bounds; ``minReplicas`` is also the Deployment's initial size."""
    disruption: Disruption = Disruption()
    """PDB; must allow one eviction at ``autoscaling.minReplicas``."""
    termination_grace_seconds: Annotated[int, Field(ge=10, le=3700)] | None = None
    """Time in-flight requests get after SIGTERM. Default: ``edge.queryTimeoutSeconds`` plus the
    10 s pre-stop delay plus 10 s, so a rollout never cuts off an answer the edge still waits for;
    a smaller value is an error."""
    scratch_size: Quantity = "1Gi"
    """emptyDir size limit for the working directory (the app's ``logs/`` and ``workflow_states/``). The
    vector store is not there: the runtime layer points the app at the Chroma server."""


class IndexerTier(Spec):
    """The single replica that owns indexing and in-memory workflow state."""

    resources: Resources
    """Per pod; git clones and embedding batches make this the larger tier."""
    storage_size: Quantity = "20Gi"
    """PVC for ``temp_repo/`` clones (~500 MB per repository) and indexing state."""
    disruption: Disruption = Disruption()
    """PDB; ``maxUnavailable: 1`` lets drains proceed, the grace period protects work."""
    termination_grace_seconds: Annotated[int, Field(ge=30)] | None = None
    """Default: ``agent.workflow.timeoutSeconds`` + 60, so a rollout never cuts a run."""


class Stores(Spec):
    """Sizes of the stateful tier; a store the environment does not use may be left out."""

    redis: RedisSettings
    """The cache (always deployed)."""
    chroma: ChromaSettings | None = None
    """Required when ``agent.vectorStore.type`` is chroma."""
    memgraph: MemgraphSettings | None = None
    """Required when ``agent.graph.enabled``."""


class Quota(Spec):
    """The namespace ResourceQuota; checked at synth against every workload at maximum scale."""

    requests: ComputeAmounts
    """Sum of CPU and memory requests the namespace may hold."""
    limits: ComputeAmounts
    """Sum of CPU and memory limits the namespace may hold."""
    pods: Annotated[int, Field(ge=1)]
    """Pods, counting the extra pod a rolling update surges."""
    storage: Quantity
    """Sum of all PVC requests."""
    persistent_volume_claims: Annotated[int, Field(ge=0)]
    """Number of PVCs."""


class ContainerDefaults(Spec):
    """The namespace LimitRange: defaults for containers that set nothing."""

    default_request: ComputeAmounts = ComputeAmounts(cpu="100m", memory="128Mi")
    """Requests given to a container that sets none."""
    default_limit: ComputeAmounts = ComputeAmounts(cpu="500m", memory="512Mi")
    """Limits given to a container that sets none."""


def _missing_digest(name: str, ref: ImageRef) -> str:
    """Why a prod image needs a digest, and how to get one."""
    reason = "required in stage prod (a tag can be moved; a digest cannot)"
    default = Images.model_fields[name].default
    if isinstance(default, ImageRef) and default.repository == ref.repository:
        # An upstream image with no verified default digest: it must be mirrored, then pinned.
        return (
            f"{reason}: {ref.repository}:{ref.tag} has no default digest; mirror it to your registry, "
            f"read the digest with `crane digest <mirror>:{ref.tag}` (or `skopeo inspect docker://<mirror>:{ref.tag}`),"
            f" then set images.{name}.repository and images.{name}.digest"
        )
    return f"{reason}: read it with `crane digest {ref.repository}:{ref.tag}`, then set images.{name}.digest"


class Target(StrEnum):
    """Where an environment runs; each target has its own renderer and output folder."""

    KUBERNETES = "kubernetes"
    COMPOSE = "compose"
    ECS = "ecs"
    ACI = "aci"


RENDERED_TARGETS = (Target.KUBERNETES, Target.COMPOSE, Target.ECS, Target.ACI)
"""Targets with a renderer today; the others are accepted by the type and refused at load."""

TARGET_FOLDERS: dict[Target, str] = {
    Target.KUBERNETES: "",
    Target.COMPOSE: "compose",
    Target.ECS: "ecs",
    Target.ACI: "aci",
}
"""Each target's folder under ``dist/<env>/`` (Kubernetes: the folder itself, as before targets existed)."""

KUBERNETES_ONLY = (
    "namespace",
    "kubernetes_version",
    "cluster",
    "cloud",
    "network",
    "secrets",
    "gitops",
    "monitoring",
    "quota",
    "container_defaults",
    "workloads",
    "patches",
)
"""Fields that only the Kubernetes target reads: required (the ones without a default) when ``targets``
holds ``kubernetes``, refused when it does not (a setting no renderer honours is a mistake)."""

CLOUD_READS = ("secrets", "monitoring")
"""Kubernetes-only fields the cloud targets read too: the remote key layout (Secrets Manager, Key Vault)
and the SLOs their alarms mirror."""

KUBERNETES_REQUIRED = ("namespace", "kubernetes_version", "cluster", "quota")
"""Of those, the ones an environment that targets Kubernetes must set."""


def _unique_targets(value: list[Target]) -> list[Target]:
    repeated = sorted({t.value for t in value if value.count(t) > 1})
    if repeated:
        raise ValueError(f"{', '.join(repeated)} listed more than once; list each target once")
    return value


class KubernetesPlacement(Spec):
    """The Kubernetes-only fields of an environment that targets Kubernetes, never ``None``."""

    namespace: str
    kubernetes_version: str
    cluster: Cluster
    quota: Quota


class Environment(Spec):
    """One deployment of the Knowledge Graph Agent (``environments/<name>.yaml``)."""

    name: Annotated[DnsLabel, AfterValidator(_environment_name)]
    """Must equal the file name; used as the release instance (``kga-<name>``)."""
    stage: Stage
    """dev, staging or prod; prod requires image digests."""
    targets: Annotated[list[Target], Field(min_length=1), AfterValidator(_unique_targets)] = Field(
        default_factory=lambda: [Target.KUBERNETES]
    )
    """Where the environment runs, each rendered under ``dist/<name>/``: ``kubernetes`` (manifests in the
    folder itself), ``compose`` (one server: ``compose/compose.yaml`` and its config files, see
    docs/single-server.md), ``ecs`` (``ecs/template.json``: CloudFormation for ECS on Fargate, see
    docs/cloud-ecs.md), ``aci`` (``aci/azuredeploy.json`` and its parameters: Azure Container Instances, see
    docs/cloud-aci.md; ``secrets`` and ``monitoring`` are read by both). The Kubernetes-only fields
    (``namespace``, ``kubernetesVersion``, ``cluster``, ``cloud``, ``network``, ``secrets``, ``gitops``,
    ``monitoring``, ``quota``, ``containerDefaults``, ``workloads``, ``patches``) are required (those without a
    default) with ``kubernetes`` and refused without it."""
    namespace: DnsLabel | None = None
    """Kubernetes only (required there): the namespace that holds every namespaced object of the environment."""
    domain: Annotated[str, AfterValidator(_domain)]
    """Public host of the web UI and API, e.g. ``kga.example.com``."""
    kubernetes_version: Annotated[str, AfterValidator(_kubernetes_version)] | None = None
    """Kubernetes only (required there): target cluster version, ``1.27`` to ``1.35``; pins the Pod Security
    level version."""
    cluster: Cluster | None = None
    """Kubernetes only (required there): the cluster the environment runs on (name and API server):
    ``dist/argocd/<name>/`` is its Argo CD bundle, and environments on one cluster share its platform
    layer (they must declare it alike)."""
    cloud: CloudProfile = CloudProfile()
    """Cluster flavour: storage class, ingress class, workload identity."""
    images: Images
    """Every container image, as repository + tag + optional digest."""
    query: QueryTier
    """The query tier (scales horizontally)."""
    indexer: IndexerTier
    """The single indexer replica."""
    agent: AgentSettings
    """The agent's own settings, rendered to its environment variables."""
    repositories: Annotated[list[Repository], Field(min_length=1)]
    """Becomes ``appSettings.json``."""
    stores: Stores
    """Redis, Chroma and Memgraph sizes."""
    backup: BackupSettings
    """Scheduled backups of every store to object storage."""
    reindex: ReindexSettings = ReindexSettings()
    """Scheduled incremental re-indexing of ``repositories`` through the indexer's API; off without a schedule."""
    edge: EdgeSettings = EdgeSettings()
    """Gateway API routes and policies (or the retired ingress-nginx), TLS, headers, limits, CORS and
    API keys (docs/edge.md)."""
    network: NetworkSettings = NetworkSettings()
    """Neighbour namespaces and cluster CIDRs for the NetworkPolicies (docs/network.md)."""
    secrets: SecretsSettings = SecretsSettings()
    """External Secrets store of staging and prod (docs/secrets.md); ``storeName`` is required outside dev."""
    gitops: GitOpsSettings | None = None
    """Argo CD Application for this environment in ``dist/argocd/<cluster>/``; ``None`` renders none."""
    monitoring: MonitoringSettings = MonitoringSettings()
    """Prometheus, Alertmanager and Grafana objects; see docs/observability.md."""
    quota: Quota | None = None
    """Kubernetes only (required there): namespace ResourceQuota, checked against the stack at maximum scale."""
    container_defaults: ContainerDefaults = ContainerDefaults()
    """Namespace LimitRange defaults."""
    workloads: WorkloadSettings = WorkloadSettings()
    """Tolerations, node selector, image pull Secrets, priority class, extra labels, annotations and env
    for every pod (the settings a Helm chart's values offer); applied to every workload and Job."""
    patches: list[ObjectPatch] = Field(default_factory=list)
    """One-off changes to rendered objects (strategic merge or RFC 6902), applied in order after
    rendering and before the schema check and the cross-reference gate (docs/customizing.md)."""

    @model_validator(mode="after")
    def _rules(self) -> Self:
        problems = [
            *self._target_rules(),
            *self._store_switches(),
            *self._access_rules(),
            *self._saturation_rules(),
            *self._reindexable_repositories(),
            *self._promotion_rules(),
        ]
        if self.stage is Stage.PROD:
            problems += [(f"images.{name}.digest", _missing_digest(name, ref)) for name, ref in self._unpinned()]
        if problems:
            raise FieldError(*problems)
        return self

    @property
    def on_kubernetes(self) -> bool:
        return Target.KUBERNETES in self.targets

    @property
    def placement(self) -> KubernetesPlacement:
        """The Kubernetes-only fields, checked present; an environment without the target has none."""
        if not (self.namespace and self.kubernetes_version and self.cluster and self.quota):
            raise ValueError(f"environment {self.name}: targets has no kubernetes, so it has no Kubernetes placement")
        return KubernetesPlacement(
            namespace=self.namespace, kubernetes_version=self.kubernetes_version, cluster=self.cluster, quota=self.quota
        )

    def _target_rules(self) -> list[tuple[str, str]]:
        problems = [
            (
                "targets",
                f"{target.value!r} is not available yet: no renderer for it; "
                f"available: {', '.join(t.value for t in RENDERED_TARGETS)}",
            )
            for target in self.targets
            if target not in RENDERED_TARGETS
        ]
        alias = {name: field.alias or name for name, field in type(self).model_fields.items()}
        if self.on_kubernetes:
            problems += [
                (alias[f], "required: targets includes kubernetes (see docs/environment-reference.md#environment)")
                for f in KUBERNETES_REQUIRED
                if getattr(self, f) is None
            ]
        else:
            shown = ", ".join(t.value for t in self.targets)
            problems += [
                (alias[f], f"Kubernetes only, and targets ({shown}) has no kubernetes: remove it")
                for f in KUBERNETES_ONLY
                if f in self.model_fields_set and not (f in CLOUD_READS and self.on_cloud)
            ]
        return problems + self._cloud_rules()

    @property
    def on_cloud(self) -> bool:
        return bool({Target.ECS, Target.ACI} & set(self.targets))

    def _cloud_rules(self) -> list[tuple[str, str]]:
        """What ECS and ACI cannot honour (their renderers: kgstack.ecs_stack, kgstack.aci_template)."""
        problems: list[tuple[str, str]] = []
        ecs, aci = Target.ECS in self.targets, Target.ACI in self.targets
        if not (ecs or aci):
            return problems
        shown = "ECS" if ecs else "ACI"
        if ecs and self.cloud.storage_class:
            problems.append(("cloud.storageClass", "ECS keeps state on EFS: a StorageClass means nothing there"))
        if self.stores.memgraph is not None:
            problems.append(("stores.memgraph", f"the {shown} target has no graph store: turn agent.graph off"))
        if self.edge.cors_allowed_origins:
            problems.append(("edge.corsAllowedOrigins", "the cloud edge serves the UI's own origin only"))
        if self.edge.backend_tls:
            problems.append(("edge.backendTls", "the cloud edge reaches its backends inside the network over HTTP"))
        if aci:
            a = self.query.autoscaling
            if a.max_replicas != a.min_replicas:
                problems.append(
                    (
                        "query.autoscaling.maxReplicas",
                        f"ACI has no autoscaling: set it equal to minReplicas ({a.min_replicas}), the fixed number "
                        "of query container groups",
                    )
                )
            if self.stores.chroma is not None:
                problems.append(
                    (
                        "stores.chroma",
                        "Chroma keeps SQLite on its volume, and ACI's only durable volume is Azure Files (SMB), "
                        "whose locking SQLite does not trust: use agent.vectorStore.type pinecone on ACI",
                    )
                )
            if self.reindex.schedule:
                problems.append(("reindex.schedule", "ACI has no scheduler: leave it out (docs/cloud-aci.md)"))
        return problems

    @property
    def optional_stores(self) -> dict[str, bool]:
        """Whether each optional store is deployed, by its switch: Chroma serves the chroma vector
        store, Memgraph the graph features. A valid environment sizes exactly the deployed ones."""
        return {"chroma": self.agent.vector_store.type == "chroma", "memgraph": self.agent.graph.enabled}

    def _store_switches(self) -> list[tuple[str, str]]:
        """A store is sized exactly when its switch deploys it; a size that does nothing is a mistake."""
        graph = "true" if self.agent.graph.enabled else "false"
        switches = [  # store, its name, the switch, its value, the value that deploys the store
            ("chroma", "Chroma", "agent.vectorStore.type", self.agent.vector_store.type, "chroma"),
            ("memgraph", "Memgraph", "agent.graph.enabled", graph, "true"),
        ]
        problems = []
        for store, title, switch, value, on in switches:
            deployed, sized = self.optional_stores[store], getattr(self.stores, store) is not None
            if deployed and not sized:
                problems.append((f"stores.{store}", f"required: {switch} is {value}, so {title} needs a size"))
            if sized and not deployed:
                reason = f"has no effect: {switch} is {value}, so no {title} is deployed"
                problems.append((f"stores.{store}", f"{reason}; remove stores.{store} or set {switch}: {on}"))
        return problems

    def _promotion_rules(self) -> list[tuple[str, str]]:
        """Prod deploys the commit another environment validated, never the head of a branch at sync time."""
        if self.stage is not Stage.PROD or self.gitops is None or self.gitops.promoted_from is not None:
            return []
        return [
            (
                "gitops.promotedFrom",
                f"required in stage prod: Argo CD would deploy whatever {self.gitops.target_revision!r} holds when "
                "someone syncs; name the environment that validates a commit first (promotedFrom: staging) and "
                "promote its commit with scripts/promote.py (docs/deployment.md)",
            )
        ]

    def _reindexable_repositories(self) -> list[tuple[str, str]]:
        """The re-index CronJob goes through ``POST /api/v1/index/repository``, which takes GitHub URLs only
        (422 otherwise): refuse at synth what would fail every night."""
        if not self.reindex.schedule:
            return []
        return [
            (
                f"repositories[{i}].url",
                f"{repo.url!r} is not a GitHub URL (https://github.com/...), which the indexer's incremental "
                "endpoint requires for scheduled re-indexing (reindex.schedule)",
            )
            for i, repo in enumerate(self.repositories)
            if not repo.url.startswith("https://github.com/")
        ]

    def _saturation_rules(self) -> list[tuple[str, str]]:
        """The HPA must add pods before readiness takes them out: at ``maxInFlight`` a pod leaves its Service."""
        target, limit = self.query.autoscaling.target_in_flight, self.agent.runtime.max_in_flight
        if target < limit:
            return []
        return [
            (
                "query.autoscaling.targetInFlight",
                f"is {target} but agent.runtime.maxInFlight is {limit}: pods would leave their Service (readiness) "
                f"before the HPA adds any; set it below {limit}",
            )
        ]

    def _access_rules(self) -> list[tuple[str, str]]:
        problems = []
        # Workload identity: a Kubernetes service account's (cloud.workloadIdentity) or an ECS task role.
        without_identity = sorted(t.value for t in self.targets if t in (Target.COMPOSE, Target.ACI))
        if self.backup.credentials_secret is None and without_identity:
            problems.append(
                (
                    "backup.credentialsSecret",
                    f"is null, but the {' and '.join(without_identity)} target has no workload identity: "
                    "name the file of object storage credentials (a Docker secret on Compose)",
                )
            )
        elif self.backup.credentials_secret is None and self.on_kubernetes and not self.cloud.workload_identity:
            problems.append(
                (
                    "backup.credentialsSecret",
                    "is null, so backups use workload identity: set cloud.workloadIdentity, "
                    "or name a Secret with object storage credentials",
                )
            )
        if (
            self.on_kubernetes
            and self.stage is Stage.PROD
            and self.monitoring.enabled
            and self.monitoring.receivers.paging is None
        ):
            problems.append(
                (
                    "monitoring.receivers.paging",
                    "required in stage prod: critical alerts would page nobody; set it to the PagerDuty "
                    "routing key's Secret (docs/observability.md). Other stages page nobody unless they set it",
                )
            )
        if self.on_kubernetes and self.stage is not Stage.DEV and not self.secrets.store_name:
            problems.append(
                (
                    "secrets.storeName",
                    f"required in stage {self.stage.value}: name the (Cluster)SecretStore that holds "
                    "this environment's values (docs/secrets.md)",
                )
            )
        return problems

    def _unpinned(self) -> list[tuple[str, ImageRef]]:
        # Our own images are pinned from environments/releases/images.yaml (kgstack.releases).
        in_use = self.images.in_use(self).items()
        return [(name, ref) for name, ref in in_use if ref.digest is None and name not in OWN_IMAGES]

    @property
    def instance(self) -> str:
        return f"kga-{self.name}"


REFERENCE = "docs/environment-reference.md"
"""The readable reference every error points to (generated by ``make schema``)."""


class EnvironmentFileError(Exception):
    """A bad environment file; ``problems`` holds one ``file: field.path: reason`` line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _field_path(loc: Iterable[int | str]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The models an annotation can hold (through Optional, lists, dicts, Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in get_args(annotation) for model in _models_in(arg)]


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The model whose fields live at ``loc`` (e.g. ``("query", "autoscaling")`` -> Autoscaling)."""
    model: type[BaseModel] = Environment
    for part in loc:
        if isinstance(part, int):
            continue  # a list index: the item type was already taken from the annotation
        fields = {field.alias or name: field for name, field in model.model_fields.items()}
        field = fields.get(part) or model.model_fields.get(part)
        if field is None:
            if part == model.__name__:
                continue  # pydantic names the chosen member of a union of models
            if model is not Environment and loc.index(part) > 0:
                continue  # a key of a dict of models
            return None
        candidates = _models_in(field.annotation)
        if not candidates:
            return None
        model = candidates[0]
    return model


def _reference(model: type[BaseModel] | None) -> str:
    return f"{REFERENCE}#{model.__name__.lower()}" if model is not None else REFERENCE


_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _parts(path: str) -> tuple[int | str, ...]:
    """``tolerations[0].value`` -> ``("tolerations", 0, "value")``."""
    return tuple(int(index) if index else name for name, index in _PART.findall(path))


def _linked(reason: str, loc: tuple[int | str, ...]) -> str:
    """``reason`` with the section of the reference for the model that holds the field at ``loc``: the
    nearest enclosing model (a list of numbers or a dict of labels has no section of its own)."""
    if "(see " in reason:
        return reason
    parent = loc[:-1]
    while parent and (isinstance(parent[-1], int) or _model_at(parent) is None):
        parent = parent[:-1]
    return f"{reason} (see {_reference(_model_at(parent))})"


def _unknown_field(loc: tuple[int | str, ...]) -> str:
    model = _model_at(loc[:-1])
    if model is None:
        return f"unknown field (see {REFERENCE})"
    known = [field.alias or name for name, field in model.model_fields.items()]
    typed = str(loc[-1])
    close = difflib.get_close_matches(typed, known, n=1, cutoff=0.6) or [
        name for name in known if name.lower() == typed.lower().replace("_", "")
    ]
    if close:
        return f"unknown field; did you mean `{close[0]}`? (see {_reference(model)})"
    return f"unknown field; {model.__name__} takes {', '.join(known)} (see {_reference(model)})"


def _describe(error: Any) -> list[tuple[str, str]]:
    """One pydantic error as ``(field path, reason)`` pairs."""
    loc = tuple(error["loc"])
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, FieldError):
        return [
            (_field_path((*loc, *path.split("."))), _linked(reason, (*loc, *_parts(path))))
            for path, reason in cause.problems
        ]
    if error["type"] == "extra_forbidden":
        return [(_field_path(loc), _unknown_field(loc))]
    if error["type"] == "missing":
        return [(_field_path(loc), f"required field is missing (see {_reference(_model_at(loc[:-1]))})")]
    if error["type"] == "string_pattern_mismatch" and error["ctx"]["pattern"] == f"^{DNS_LABEL}$":
        reason = "lowercase letters, digits and '-', starting and ending with a letter or digit"
        return [(_field_path(loc), _linked(f"{error['input']!r} is not a DNS label (RFC 1123): {reason}", loc))]
    if error["type"] == "model_type":
        model = _model_at(loc)
        return [(_field_path(loc), f"expected a mapping of settings (see {_reference(model)})")]
    message = str(error["msg"]).removeprefix("Value error, ")
    return [(_field_path(loc) or "name", _linked(message, loc))]


def parse_environment(data: object, *, source: str, expected_name: str | None = None) -> Environment:
    """Validate already-parsed YAML; every problem is reported as ``source: path: reason``."""
    if not isinstance(data, dict):
        raise EnvironmentFileError([f"{source}: line 1: expected a mapping of settings (name:, stage:, ...)"])
    try:
        env = Environment.model_validate(data)
    except ValidationError as exc:
        problems = [f"{source}: {path}: {reason}" for e in exc.errors() for path, reason in _describe(e)]
        raise EnvironmentFileError(problems) from None
    if expected_name is not None and env.name != expected_name:
        mismatch = f"{env.name!r} must equal the file name {expected_name!r}"
        raise EnvironmentFileError([f"{source}: name: {_linked(mismatch, ('name',))}"])
    return env


def known_environments(folder: Path) -> list[str]:
    return sorted(path.stem for path in folder.glob("*.yaml"))


def load_environment(path: Path) -> Environment:
    """Read and validate ``environments/<name>.yaml``."""
    if not path.is_file():
        known = known_environments(path.parent)
        listed = ", ".join(known) if known else f"none (no *.yaml in {path.parent})"
        raise EnvironmentFileError([f"{path}: no such environment {path.stem!r}; known environments: {listed}"])
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "line 1"
        reason = getattr(exc, "problem", None) or str(exc)
        raise EnvironmentFileError([f"{path}: {where}: not valid YAML: {reason}"]) from None
    except OSError as exc:
        raise EnvironmentFileError([f"{path}: cannot read: {exc.strerror}"]) from None
    return parse_environment(data, source=str(path), expected_name=path.stem)


def load_environments(folder: Path) -> list[Environment]:
    """Every ``*.yaml`` in ``folder``, sorted by name; all files' problems together."""
    problems: list[str] = []
    environments: list[Environment] = []
    for path in sorted(folder.glob("*.yaml")):
        try:
            environments.append(load_environment(path))
        except EnvironmentFileError as exc:
            problems.extend(exc.problems)
    if problems:
        raise EnvironmentFileError(problems)
    if not environments:
        raise EnvironmentFileError([f"{folder}: no environment files (*.yaml); copy one from the repository"])
    sources = {str(folder / f"{env.name}.yaml"): env for env in environments}
    problems = shared_between_environments(sources) + cluster_disagreements(sources) + promotion_problems(sources)
    if problems:
        raise EnvironmentFileError(problems)
    return environments


def _unique_per_environment(env: Environment) -> dict[str, tuple[str, str]]:
    """Field -> (shown value, comparison key) of what no two environments may share.

    The key of a prefix-like value ends in ``/`` so that ``startswith`` finds nesting:
    backups pruned under ``s3://b/staging/`` would delete ``s3://b/staging/qa/`` too.
    """
    values = {
        **({"namespace": (env.namespace, env.namespace)} if env.namespace else {}),
        "domain": (env.domain, env.domain),
        "backup.target": (
            env.backup.target,
            f"{env.backup.s3_endpoint_url or 'aws'} {env.backup.target.rstrip('/')}/",
        ),
    }
    if env.cloud.workload_identity:
        values["cloud.workloadIdentity"] = (env.cloud.workload_identity, env.cloud.workload_identity)
    if env.secrets.store_name:
        prefix = env.secrets.key_prefix(env.name)
        where = f"{env.secrets.store_kind}/{env.secrets.store_name}"
        values["secrets.remoteKeyPrefix"] = (f"{prefix} in {where}", f"{where} {prefix.rstrip('/')}/")
    return values


_WHY_UNIQUE = {
    "namespace": "two environments in one namespace overwrite each other's objects",
    "domain": "two environments cannot serve one host",
    "backup.target": "each environment prunes everything under its target, so it would delete the other's backups",
    "cloud.workloadIdentity": "one cloud role would grant each environment the other's storage and secrets",
    "secrets.remoteKeyPrefix": "the environments would read each other's secret values",
}


def _looks_copied(source: str, value: str, original: str) -> bool:
    """``value`` of ``source`` names the environment of ``original`` but not its own (a forgotten edit)."""
    own, other = Path(source).stem, Path(original).stem
    return other in value and own not in value


def shared_between_environments(environments: Mapping[str, Environment]) -> list[str]:
    """What a copied environment forgot to change: one line per clash, naming both files and the field."""
    problems = []
    seen: dict[str, list[tuple[str, str, str]]] = {}
    for source, env in environments.items():
        for field, (shown, key) in _unique_per_environment(env).items():
            for other_source, other_shown, other_key in seen.get(field, []):
                nested = key.endswith("/") and (key.startswith(other_key) or other_key.startswith(key))
                if key == other_key or nested:
                    here, there = (source, shown), (other_source, other_shown)
                    if _looks_copied(other_source, other_shown, source):
                        here, there = there, here  # report it on the copy: its value names the original
                    clash = "is also" if key == other_key else f"is nested with {there[1]!r},"
                    problems.append(
                        f"{here[0]}: {field}: {here[1]!r} {clash} the {field} of {there[0]}; "
                        f"{_WHY_UNIQUE[field]}: give each environment its own"
                    )
            seen.setdefault(field, []).append((source, shown, key))
    return problems


def cluster_disagreements(environments: Mapping[str, Environment]) -> list[str]:
    """Environments naming one cluster share its platform: they must declare it alike, with one cloud profile."""
    problems = []
    first: dict[str, tuple[str, Environment]] = {}
    servers: dict[str, tuple[str, str]] = {}
    for source, env in environments.items():
        if env.cluster is None:
            continue  # not on Kubernetes
        name, server = env.cluster.name, env.cluster.server
        if server in servers and servers[server][1] != name and server != "https://kubernetes.default.svc":
            problems.append(
                f"{source}: cluster.server: {server!r} is also the server of cluster {servers[server][1]!r} in "
                f"{servers[server][0]}: one API server is one cluster, give it one name"
            )
        servers.setdefault(server, (source, name))
        if name not in first:
            first[name] = (source, env)
            continue
        other_source, other = first[name]
        if env.cluster != other.cluster:
            problems.append(
                f"{source}: cluster: cluster {name!r} is declared differently in {other_source}; "
                "environments on one cluster share its platform, so copy the same block"
            )
        if env.cloud.provider != other.cloud.provider:
            problems.append(
                f"{source}: cloud.provider: {env.cloud.provider.value!r}, but {other_source} runs on the same cluster "
                f"{name!r} with {other.cloud.provider.value!r}"
            )
    return problems


def promotion_problems(environments: Mapping[str, Environment]) -> list[str]:
    """``gitops.promotedFrom`` names another environment that Argo CD syncs from the same repository."""
    by_name = {env.name: (source, env) for source, env in environments.items()}
    problems = []
    for source, env in environments.items():
        if env.gitops is None or env.gitops.promoted_from is None:
            continue
        name = env.gitops.promoted_from
        origin_source, origin = by_name.get(name, ("", None))
        if origin is None or origin.gitops is None or origin.name == env.name:
            others = sorted(n for n, (_, e) in by_name.items() if e.gitops is not None and n != env.name)
            problems.append(
                f"{source}: gitops.promotedFrom: {name!r} is no other environment that Argo CD syncs; "
                f"known: {', '.join(others) or 'none'}"
            )
        elif origin.gitops.repo_url != env.gitops.repo_url:
            problems.append(
                f"{source}: gitops.promotedFrom: {name} is synced from {origin.gitops.repo_url} ({origin_source}), "
                f"this environment from {env.gitops.repo_url}: a commit validated in one repository is not in the other"
            )
    return problems


def json_schema() -> str:
    """The published schema of an environment file, stable for diffing."""
    schema = Environment.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def markdown_reference() -> str:
    """``docs/environment-reference.md``: every setting with its type, default and meaning, from the model."""
    schema = json.loads(json_schema())
    defs = schema.get("$defs", {})
    lines = [
        "# Environment file reference",
        "",
        "Generated from `kgstack.environment.Environment` by `make schema`; do not edit by hand.",
        "Every file in `environments/` is validated against this model (and `environments/schema.json`);",
        "an error names the file, the field path and the reason, and links the section of the model here.",
        "",
    ]

    def ref_name(option: dict[str, Any]) -> str | None:
        ref = option.get("$ref") or option.get("items", {}).get("$ref")
        values = option.get("additionalProperties")
        ref = ref or (values.get("$ref") if isinstance(values, dict) else None)
        return str(ref).rsplit("/", 1)[1] if ref else None

    def resolve(prop: dict[str, Any]) -> tuple[str, str | None]:
        names, found = [], None
        for option in prop.get("anyOf", [prop]):
            ref = ref_name(option)
            found = found or ref
            if option.get("type") == "array":
                names.append(f"list of {ref or option.get('items', {}).get('type', 'any')}")
            elif option.get("type") == "object" and ref:
                names.append(f"map of {ref}")
            elif ref:
                names.append(f"[{ref}](#{ref.lower()})")
            else:
                names.append(str(option.get("enum", option.get("type", "any"))))
        return " or ".join(names), found

    def section(title: str, model: dict[str, Any], where: str, seen: set[str]) -> None:
        description = " ".join(model.get("description", "").split())
        lines.extend([f"## {title}", "", f"Set at `{where}`." + (f" {description}" if description else ""), ""])
        if "enum" in model:
            lines.extend([f"One of: {', '.join(f'`{value}`' for value in model['enum'])}.", ""])
            return
        lines.extend(["| field | type | default | meaning |", "|---|---|---|---|"])
        nested: list[tuple[str, str]] = []
        required = set(model.get("required", []))
        for name, prop in model.get("properties", {}).items():
            kind, ref = resolve(prop)
            default = "**required**" if name in required else f"`{json.dumps(prop.get('default'))}`"
            meaning = " ".join(prop.get("description", "").split()).replace("|", "\\|")
            lines.append(f"| `{name}` | {kind} | {default} | {meaning} |")
            if ref and ref not in seen:
                seen.add(ref)
                nested.append((ref, f"{where}.{name}" if where != "(file)" else name))
        lines.append("")
        for ref, path in nested:
            section(ref, defs[ref], path, seen)

    section("Environment", schema, "(file)", set())
    return "\n".join(lines).rstrip() + "\n"
