"""Secrets from an external store via External Secrets Operator (``external-secrets.io/v1``).

Secret values never enter git or ``dist/``: in staging and prod an
``ExternalSecret`` per Secret tells ESO which remote keys to copy into the
namespace, refreshed on an interval. In dev nothing is rendered; docs/secrets.md
shows how to create the same Secrets from a git-ignored env file.

There is no published typed model for ESO, so the few fields used here are
modelled below from the external-secrets.io/v1 CRD, each level with
``extra="forbid"``.

Workloads roll when a Secret changes through Stakater Reloader: put
:data:`RELOAD_ANNOTATION` with the comma-separated Secret names on the
workload's own metadata (not on its pod template).
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from constructs import Construct
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from .custom_resource import custom_resource
from .model import Spec, Stage
from .naming import Identity

RELOAD_ANNOTATION = "secret.reloader.stakater.com/reload"


def reload_on(secrets: list[str]) -> dict[str, str]:
    """Workload annotation that makes Stakater Reloader roll the pods when one of ``secrets`` changes."""
    return {RELOAD_ANNOTATION: ",".join(sorted(secrets))} if secrets else {}


"""Reloader: a rolling restart of the annotated workload when one of the named Secrets changes."""

Duration = Annotated[str, Field(pattern=r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$")]


# --- external-secrets.io/v1, only what we use ------------------------------------------------------


class _Eso(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, alias_generator=to_camel, validate_by_name=True, validate_by_alias=True
    )


class EsoObjectMeta(_Eso):
    name: str
    namespace: str
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class SecretStoreRef(_Eso):
    name: str
    kind: Literal["SecretStore", "ClusterSecretStore"] = "ClusterSecretStore"


class TemplateMetadata(_Eso):
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class ExternalSecretTemplate(_Eso):
    type: str | None = None
    engine_version: Literal["v2"] | None = None
    merge_policy: Literal["Replace", "Merge"] | None = None
    metadata: TemplateMetadata | None = None
    data: dict[str, str] | None = None


class ExternalSecretTarget(_Eso):
    name: str
    creation_policy: Literal["Owner", "Orphan", "Merge", "None"] = "Owner"
    deletion_policy: Literal["Delete", "Merge", "Retain"] = "Retain"
    template: ExternalSecretTemplate | None = None


class RemoteRef(_Eso):
    key: str
    property: str | None = None
    version: str | None = None


class ExternalSecretData(_Eso):
    secret_key: str
    remote_ref: RemoteRef


class ExternalSecretSpec(_Eso):
    refresh_interval: Duration
    secret_store_ref: SecretStoreRef
    target: ExternalSecretTarget
    data: Annotated[list[ExternalSecretData], Field(min_length=1)]


class ExternalSecret(_Eso):
    api_version: Literal["external-secrets.io/v1"] = "external-secrets.io/v1"
    kind: Literal["ExternalSecret"] = "ExternalSecret"
    metadata: EsoObjectMeta
    spec: ExternalSecretSpec


# --- settings and construct -----------------------------------------------------------------------


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
    redis_address: str | None = None
    """``host:port`` of Redis; when set, the Secret also gets ``url`` (redis://app:<password>@host:port/0)."""
    memgraph_secret: str | None = None
    """``kga-memgraph`` when the graph store is deployed."""
    edge_keys_secret: str | None = "kga-edge-keys"
    backup_secret: str | None = None
    """``kga-backup`` when backups use static S3 credentials rather than workload identity."""
    backup_keys: list[str] = Field(default_factory=lambda: ["credentials"])
    """Keys of the backup Secret (BackupSchedule reads an AWS shared-credentials file from ``credentials``)."""
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
        self.external_secrets: list[ExternalSecret] = []
        self.required: dict[str, list[str]] = {}
        """Every Secret the environment reads, with the keys it must hold: produced by an
        ExternalSecret outside dev, created by hand in dev (docs/environments/<env>/secrets.md)."""
        self._add(props.agent_secret, "agent", props.agent_keys)
        if props.redis_secret:
            template = None
            keys = list(REDIS_KEYS)
            if props.redis_address:
                url = 'redis://app:{{ index . "app-password" | urlquery }}@' + f"{props.redis_address}/0"
                template = ExternalSecretTemplate(engine_version="v2", merge_policy="Merge", data={"url": url})
            self._add(props.redis_secret, "redis", keys, template)
        if props.memgraph_secret:
            self._add(props.memgraph_secret, "memgraph", ["password"])
        if props.edge_keys_secret:
            self._add(props.edge_keys_secret, "edge-keys", ["keys.map"])
        if props.backup_secret:
            self._add(props.backup_secret, "backup", props.backup_keys)
        for name, keys in props.additional.items():
            self._add(name, name.removeprefix(f"{props.identity.name}-"), keys)

    @property
    def prerequisites(self) -> dict[str, list[str]]:
        """Secrets someone must create before the first sync: all of them in dev, none elsewhere."""
        return dict(self.required) if self.props.stage is Stage.DEV else {}

    @property
    def secret_names(self) -> list[str]:
        return [e.spec.target.name for e in self.external_secrets]

    def _add(self, secret: str, remote: str, keys: list[str], template: ExternalSecretTemplate | None = None) -> None:
        p = self.props
        self.required[secret] = sorted({*keys, *((template.data or {}) if template else {})})
        if p.stage is Stage.DEV:
            return
        identity = p.identity.of("secrets")
        resource = ExternalSecret(
            metadata=EsoObjectMeta(name=secret, namespace=p.namespace, labels=identity.labels),
            spec=ExternalSecretSpec(
                refresh_interval=p.settings.refresh_interval,
                secret_store_ref=SecretStoreRef(name=p.settings.store_name or "", kind=p.settings.store_kind),
                target=ExternalSecretTarget(
                    name=secret,
                    creation_policy="Owner",
                    # A value deleted in the store leaves the Secret in place under running pods.
                    deletion_policy="Retain",
                    template=(template or ExternalSecretTemplate()).model_copy(
                        update={"metadata": TemplateMetadata(labels=identity.labels)}
                    ),
                ),
                data=[
                    ExternalSecretData(secret_key=key, remote_ref=RemoteRef(key=f"{p.prefix}{remote}", property=key))
                    for key in keys
                ],
            ),
        )
        self.external_secrets.append(resource)
        custom_resource(self, f"ExternalSecret-{secret}", resource)
