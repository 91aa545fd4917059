"""Secrets from an external store via External Secrets Operator (``external-secrets.io/v1``).

Secret values never enter git or ``dist/``: in staging and prod an
``ExternalSecret`` per Secret tells ESO which remote keys to copy into the
namespace, refreshed on an interval. In dev nothing is rendered; docs/secrets.md
shows how to create the same Secrets from a git-ignored env file.

An ExternalSecret is plain data, like every custom resource (``custom_resource``):
synth validates it strictly against the vendored external-secrets.io/v1 CRD, so a
misspelt field fails there.

Workloads roll when a Secret changes through Stakater Reloader: put
:data:`RELOAD_ANNOTATION` with the comma-separated Secret names on the
workload's own metadata (not on its pod template). Reloader runs with its
``annotations`` reload strategy: it rolls a workload by writing
:data:`RELOADED_FROM_ANNOTATION` on the pod template, and
:func:`reloader_ignore_differences` tells Argo CD to leave exactly that field alone,
so self-heal does not undo the roll.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal, Self

from constructs import Construct
from pydantic import Field, model_validator

from .argocd_application import IgnoreDifference
from .cross_reference import PULL_SECRET_KEY, PULL_SECRET_TYPE
from .custom_resource import custom_resource
from .model import Spec, Stage
from .naming import Identity

RELOAD_ANNOTATION = "secret.reloader.stakater.com/reload"


def reload_on(secrets: list[str]) -> dict[str, str]:
    """Workload annotation that makes Stakater Reloader roll the pods when one of ``secrets`` changes."""
    return {RELOAD_ANNOTATION: ",".join(sorted(secrets))} if secrets else {}


RELOAD_STRATEGY = "annotations"
"""Reloader's ``--reload-strategy`` (Helm value ``reloader.reloadStrategy``). The default, ``env-vars``, adds an
environment variable to the containers, which Argo CD's self-heal reverts (a field of the spec in Git)."""
RELOADED_FROM_ANNOTATION = "reloader.stakater.com/last-reloaded-from"
"""What the ``annotations`` strategy writes, on the pod template only (Reloader ``handler.updatePodAnnotations``,
strategic merge patch ``{"spec":{"template":{"metadata":{"annotations":{<key>: <json>}}}}}``)."""
RELOADER_TRIGGERS = (
    RELOAD_ANNOTATION,
    "configmap.reloader.stakater.com/reload",
    "secretproviderclass.reloader.stakater.com/reload",
    "reloader.stakater.com/auto",
    "secret.reloader.stakater.com/auto",
    "configmap.reloader.stakater.com/auto",
    "reloader.stakater.com/search",
)
"""Workload annotations that make Reloader watch a workload."""
RELOADER_PATCHES = {"Deployment": "apps", "StatefulSet": "apps", "DaemonSet": "apps"}
"""Kinds Reloader patches in place, by API group. A CronJob or Job it re-creates as a new Job instead
(``CreateJobFromCronjob``, ``ReCreateJobFromjob``), which leaves the object in Git untouched."""


def _pointer(*keys: str) -> str:
    """An RFC 6901 pointer to ``keys`` (``~`` and ``/`` inside a key escaped)."""
    return "".join("/" + key.replace("~", "~0").replace("/", "~1") for key in keys)


RELOADED_FROM_POINTER = _pointer("spec", "template", "metadata", "annotations", RELOADED_FROM_ANNOTATION)


def reloader_ignore_differences(objects: Mapping[str, Mapping[str, Any]]) -> list[IgnoreDifference]:
    """One Argo CD ``ignoreDifferences`` entry per workload Reloader watches among ``objects``: the one
    annotation it writes on that workload's pod template, and nothing else."""
    out = []
    for obj in objects.values():
        meta = obj["metadata"]
        if obj["kind"] in RELOADER_PATCHES and set(meta.get("annotations") or {}) & set(RELOADER_TRIGGERS):
            out.append(
                IgnoreDifference(
                    group=RELOADER_PATCHES[obj["kind"]],
                    kind=obj["kind"],
                    name=meta["name"],
                    namespace=meta.get("namespace"),
                    json_pointers=[RELOADED_FROM_POINTER],
                )
            )
    return sorted(out, key=lambda d: (d.kind, d.name or ""))


Duration = Annotated[str, Field(pattern=r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$")]


class SecretsSettings(Spec):
    """Where staging and prod read their Secrets from (External Secrets Operator)."""

    store_name: str | None = None
    """(Cluster)SecretStore holding this environment's values; required outside dev."""
    store_kind: Literal["SecretStore", "ClusterSecretStore"] = "ClusterSecretStore"
    """A store shared by the cluster, or one in the environment's namespace."""
    refresh_interval: Duration = "1h"
    """How often ESO re-reads the store; a rotated value reaches the Secret within this time."""
    remote_key_prefix: str | None = None
    """Prefix of every remote key; default ``kga/<environment>/`` (e.g. ``kga/prod/agent``)."""

    def key_prefix(self, environment: str) -> str:
        """The remote key prefix ``environment`` reads its values under."""
        return self.remote_key_prefix if self.remote_key_prefix is not None else f"kga/{environment}/"


class AgentSecretsProps(Spec):
    identity: Identity
    """Release identity (component ``secrets``)."""
    namespace: str
    stage: Stage
    environment: str
    """Environment name, for the default remote key prefix."""
    settings: SecretsSettings = SecretsSettings()
    agent_secret: str = "kga-agent"
    agent_keys: list[str] = Field(default_factory=lambda: ["OPENAI_API_KEY", "GITHUB_TOKEN"])
    """Keys of the agent Secret (add PINECONE_API_KEY, LANGCHAIN_API_KEY, EMBEDDING_API_KEY as configured)."""
    redis_secret: str | None = "kga-redis"
    redis_url_template: str | None = None
    """When set, the Redis Secret also gets ``url``, rendered by External Secrets from this template
    (``RedisCache.url_template``)."""
    memgraph_secret: str | None = None
    """``kga-memgraph`` when the graph store is deployed."""
    edge_keys_secret: str | None = "kga-edge-keys"
    backup_secret: str | None = None
    """``kga-backup`` when backups use static S3 credentials rather than workload identity."""
    backup_keys: list[str] = Field(default_factory=lambda: ["credentials"])
    """Keys of the backup Secret (BackupSchedule reads an AWS shared-credentials file from ``credentials``)."""
    pull_secrets: list[str] = Field(default_factory=list)
    """Image pull Secrets (``workloads.imagePullSecrets``): type ``kubernetes.io/dockerconfigjson``, key
    ``.dockerconfigjson``; the remote secret is the name without the app prefix."""
    additional: dict[str, list[str]] = Field(default_factory=dict)
    """More Secrets by name, with their required keys (the alert receivers' ``kga-alerting``); the remote
    secret is the name without the app prefix."""

    @model_validator(mode="after")
    def _store_outside_dev(self) -> Self:
        if self.stage is not Stage.DEV and not self.settings.store_name:
            raise ValueError(
                f"secrets.storeName is required in {self.stage.value}: the (Cluster)SecretStore with this "
                "environment's values"
            )
        return self

    @property
    def prefix(self) -> str:
        return self.settings.key_prefix(self.environment)


REDIS_KEYS = ("app-password", "exporter-password", "backup-password")


class AgentSecrets(Construct):
    """One ExternalSecret per Secret of the stack; nothing in dev."""

    def __init__(self, scope: Construct, id: str, *, props: AgentSecretsProps) -> None:
        super().__init__(scope, id)
        self.props = props
        self.required: dict[str, list[str]] = {}
        self.remote: dict[str, str] = {}
        """Every Secret's remote key in the external store (``kga/<env>/agent``): what the cloud targets read
        from AWS Secrets Manager or Azure Key Vault, with the same keys."""
        """Every Secret the environment reads, with the keys it must hold: produced by an
        ExternalSecret outside dev, created by hand in dev (docs/environments/<env>/secrets.md)."""
        self._add(props.agent_secret, "agent", props.agent_keys)
        if props.redis_secret:
            templated = {}
            if props.redis_url_template:
                templated = {"url": props.redis_url_template}
            self._add(props.redis_secret, "redis", list(REDIS_KEYS), templated)
        if props.memgraph_secret:
            self._add(props.memgraph_secret, "memgraph", ["password"])
        if props.edge_keys_secret:
            self._add(props.edge_keys_secret, "edge-keys", ["keys.map"])
        if props.backup_secret:
            self._add(props.backup_secret, "backup", props.backup_keys)
        for name in props.pull_secrets:
            self._add(
                name, name.removeprefix(f"{props.identity.name}-"), [PULL_SECRET_KEY], secret_type=PULL_SECRET_TYPE
            )
        for name, keys in props.additional.items():
            self._add(name, name.removeprefix(f"{props.identity.name}-"), keys)

    @property
    def prerequisites(self) -> dict[str, list[str]]:
        """Secrets someone must create before the first sync: all of them in dev, none elsewhere."""
        return dict(self.required) if self.props.stage is Stage.DEV else {}

    def _add(
        self,
        secret: str,
        remote: str,
        keys: list[str],
        templated: dict[str, str] | None = None,
        secret_type: str | None = None,
    ) -> None:
        """``templated``: more keys, rendered by ESO's template engine from the fetched ones;
        ``secret_type``: the Secret's ``type`` (default Opaque)."""
        p = self.props
        self.required[secret] = sorted({*keys, *(templated or {})})
        self.remote[secret] = f"{p.prefix}{remote}"
        if p.stage is Stage.DEV:
            return
        labels = p.identity.of("secrets").labels
        template: dict[str, Any] = {"metadata": {"labels": labels}}
        if templated:
            template = {"engineVersion": "v2", "mergePolicy": "Merge", **template, "data": templated}
        if secret_type:
            template = {"type": secret_type, **template}
        resource = {
            "apiVersion": "external-secrets.io/v1",
            "kind": "ExternalSecret",
            "metadata": {"name": secret, "namespace": p.namespace, "labels": labels},
            "spec": {
                "refreshInterval": p.settings.refresh_interval,
                "secretStoreRef": {"name": p.settings.store_name or "", "kind": p.settings.store_kind},
                "target": {
                    "name": secret,
                    "creationPolicy": "Owner",
                    # A value deleted in the store leaves the Secret in place under running pods.
                    "deletionPolicy": "Retain",
                    "template": template,
                },
                "data": [
                    {"secretKey": key, "remoteRef": {"key": f"{p.prefix}{remote}", "property": key}} for key in keys
                ],
            },
        }
        custom_resource(self, f"ExternalSecret-{secret}", resource)
