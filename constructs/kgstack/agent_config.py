"""The agent's configuration: one ConfigMap for settings and ``appSettings.json``.

Secrets are never rendered here: :attr:`AgentConfig.secret_env` only references
keys of a Secret that is created outside git (ExternalSecret or kubectl).
"""

from __future__ import annotations

import json
from typing import Annotated

from constructs import Construct
from pydantic import Field

from ._plus import k8s
from .agent_settings import AgentSettings, Repository
from .connections import Connections, Endpoint
from .model import Spec
from .naming import Identity, object_meta
from .network_policies import ComponentPeer, InternetPeer, NetworkSettings, tcp
from .scheduling import rolls_on
from .secret_ref import SecretRef

APP_SETTINGS_FILE = "appSettings.json"


HTTP_PORT = 8000
"""The port the app listens on (``PORT``): the agent containers' port."""


class AgentConfigProps(Spec):
    identity: Identity
    """Release identity, component ``agent``."""
    namespace: str
    settings: AgentSettings
    """Typed agent settings; rendered to the app's environment variables."""
    repositories: list[Repository]
    """Rendered to ``appSettings.json``."""
    production: bool
    """``APP_ENV``: production (file logs under ``logs/``) or development."""
    api_base_url: str
    """``API_BASE_URL``: the public ``https://<domain>/api/v1``."""
    extra_env: dict[str, str] = Field(default_factory=dict)
    """Further plain settings from other constructs (Chroma's host and port, the graph store URL, ...)."""
    extra_secrets: dict[str, SecretRef] = Field(default_factory=dict)
    """Further variables read from Secrets of other constructs (``REDIS_URL``, ...); a reference with an
    ``endpoint`` (``RedisCache.agent_url()``) lets every tier using this config connect to it."""
    connects_to: list[Endpoint] = Field(default_factory=list)
    """Further stores the settings point at through ``extra_env`` (Chroma's host, the graph store's URL):
    every tier using this config may connect to them."""
    internet_ports: list[Annotated[int, Field(ge=1, le=65535)]] = Field(
        default_factory=lambda: list(NetworkSettings().internet_ports)
    )
    """Ports the agent opens to the internet: the LLM and embedding APIs, GitHub clones."""


def _flag(value: bool) -> str:
    return "true" if value else "false"


class AgentConfig(Construct):
    """ConfigMap ``<instance>-agent`` and the env wiring both agent tiers share."""

    def __init__(self, scope: Construct, id: str, *, props: AgentConfigProps) -> None:
        super().__init__(scope, id)
        self.props = props
        self.name = props.identity.resource_name
        self.env = self._env()
        self.app_settings = json.dumps({"repositories": [r.model_dump() for r in props.repositories]}, indent=2) + "\n"
        data = {**self.env, APP_SETTINGS_FILE: self.app_settings}
        k8s.KubeConfigMap(
            self,
            "ConfigMap",
            metadata=object_meta(props.identity, props.namespace),
            data=data,
        )
        # Pods roll when any setting changes, without hash-suffixed ConfigMap names.
        self.pod_annotations = rolls_on(json.dumps(data, sort_keys=True))

    def _env(self) -> dict[str, str]:
        s, p = self.props.settings, self.props
        env = {
            "APP_ENV": "production" if p.production else "development",
            "LOG_LEVEL": s.log_level,
            "HOST": "0.0.0.0",
            "PORT": str(HTTP_PORT),
            "API_BASE_URL": p.api_base_url,
            "LLM_PROVIDER": s.llm.provider,
            "LLM_MODEL": s.llm.model,
            "TEMPERATURE": str(s.llm.temperature),
            "MAX_TOKENS": str(s.llm.max_tokens),
            "EMBEDDING_PROVIDER": s.embedding.provider,
            "EMBEDDING_MODEL": s.embedding.model,
            "EMBEDDING_BATCH_SIZE": str(s.embedding.batch_size),
            "MAX_TOKENS_PER_BATCH": str(s.embedding.max_tokens_per_batch),
            "DATABASE_TYPE": s.vector_store.type,
            "GITHUB_FILE_EXTENSIONS": json.dumps(s.github_file_extensions),
            "CHUNK_SIZE": str(s.chunking.size),
            "CHUNK_OVERLAP": str(s.chunking.overlap),
            "WORKFLOW_STATE_PERSISTENCE": _flag(s.workflow.state_persistence),
            "WORKFLOW_RETRY_ATTEMPTS": str(s.workflow.retry_attempts),
            "WORKFLOW_RETRY_DELAY_SECONDS": str(s.workflow.retry_delay_seconds),
            "WORKFLOW_TIMEOUT_SECONDS": str(s.workflow.timeout_seconds),
            "WORKFLOW_PARALLEL_REPOS": str(s.workflow.parallel_repos),
            # State lives in the indexer's memory; the indexer is the only replica that owns it.
            "WORKFLOW_STATE_BACKEND": "memory",
            "ENABLE_GRAPH_FEATURES": _flag(s.graph.enabled),
            "ENABLE_HYBRID_SEARCH": _flag(s.graph.hybrid_search),
            "ENABLE_GRAPH_VISUALIZATION": _flag(s.graph.visualization),
            "ENABLE_EVENT_FLOW_ANALYSIS": _flag(s.event_flow_analysis),
            "LANGCHAIN_TRACING": _flag(s.langchain_tracing),
            # git needs a writable HOME; the root filesystem is read-only.
            "HOME": "/tmp",
        }
        if s.llm.api_base_url:
            env["LLM_API_BASE_URL"] = s.llm.api_base_url
        if s.langchain_project:
            env["LANGCHAIN_PROJECT"] = s.langchain_project
        if s.vector_store.type == "chroma":
            env["CHROMA_COLLECTION_NAME"] = s.vector_store.collection_name
        else:
            env["PINECONE_COLLECTION_NAME"] = s.vector_store.collection_name
        env.update(p.extra_env)
        return dict(sorted(env.items()))

    @property
    def secrets(self) -> dict[str, SecretRef]:
        """Every variable the agent reads from a Secret; the app refuses to start without the required ones."""
        s = self.props.settings
        required = {"OPENAI_API_KEY": True, "GITHUB_TOKEN": True, "EMBEDDING_API_KEY": s.embedding.own_key}
        if s.vector_store.type == "pinecone":
            required["PINECONE_API_KEY"] = True
        if s.langchain_tracing:
            required["LANGCHAIN_API_KEY"] = True
        refs = {key: SecretRef(name=s.secret_name, key=key, optional=not needed) for key, needed in required.items()}
        return {**refs, **self.props.extra_secrets}

    @property
    def endpoints(self) -> list[Endpoint]:
        """Every store this configuration points the agent at."""
        refs = [ref.endpoint for ref in self.props.extra_secrets.values() if ref.endpoint is not None]
        return list({(e.service, e.port): e for e in [*refs, *self.props.connects_to]}.values())

    def connect(self, client: ComponentPeer) -> None:
        """Declare the traffic of ``client``, a tier running with this configuration: its stores and the internet."""
        connections = Connections.of(self)
        for endpoint in self.endpoints:
            connections.allow(client, endpoint, purpose=f"the {client.component} tier uses {endpoint.component}")
        purpose = "LLM and embedding APIs, GitHub clones"
        connections.allow_ports(client, InternetPeer(), tcp(*self.props.internet_ports), purpose=purpose)

    def secret_env(self) -> list[k8s.EnvVar]:
        """References into Secrets; values never pass through this code."""
        return [ref.env(variable) for variable, ref in self.secrets.items()]
