"""The agent's configuration: one ConfigMap for settings and ``appSettings.json``.

Secrets are never rendered here: :attr:`AgentConfig.secret_env` only references
keys of a Secret that is created outside git (ExternalSecret or kubectl).
"""

from __future__ import annotations

import json
from typing import Annotated, Self

from constructs import Construct
from pydantic import Field, model_validator

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

# Our runtime layer (docker/agent/runtime/kga_runtime): the image's CMD is ``python -m kga_runtime``.
LAUNCHER = ["python", "-m", "kga_runtime"]
"""How the containers start the app: through the runtime layer, which imports :data:`APP_OBJECT`."""
APP_OBJECT = "src.api.main:app"
"""``KGA_APP``: the app's FastAPI object at the pinned commit."""
RUNTIME_PORT = 8001
"""The runtime's side server (a thread, answering while the app's loop is busy); each tier declares it as
its ``runtime`` Endpoint and hands the pods ``KGA_RUNTIME_PORT`` from that."""
LIVE_PATH = "/livez"
"""On the runtime port: 503 only when the event loop stalled for ``runtime.livenessStallSeconds``."""
READY_PATH = "/readyz"
"""On the runtime port: 503 when the app's ``/health`` is stale, the pod is saturated or its loop lags."""
METRICS_PATH = "/metrics"
"""On the runtime port: Prometheus text (``kga_*``)."""
REQUEST_ID_HEADER = "x-request-id"
"""``KGA_REQUEST_ID_HEADER``: the header the edge sets (Envoy and ingress-nginx), logged on every line."""


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
    chroma: Endpoint | None = None
    """The in-cluster Chroma server; required with vector store ``chroma``. Rendered to ``CHROMA_HOST``,
    ``CHROMA_PORT`` and ``KGA_CHROMA_MODE=http``, and every tier using this config may connect to it:
    without it the app opens an embedded store in each pod's working directory (``chroma_db``), which no
    other pod and no backup sees."""
    extra_env: dict[str, str] = Field(default_factory=dict)
    """Further plain settings from other constructs (the graph store URL, ...)."""
    extra_secrets: dict[str, SecretRef] = Field(default_factory=dict)
    """Further variables read from Secrets of other constructs (``REDIS_URL``, ...); a reference with an
    ``endpoint`` (``RedisCache.agent_url()``) lets every tier using this config connect to it."""
    connects_to: list[Endpoint] = Field(default_factory=list)
    """Further stores the settings point at through ``extra_env`` (the graph store's URL): every tier using
    this config may connect to them."""
    internet_ports: list[Annotated[int, Field(ge=1, le=65535)]] = Field(
        default_factory=lambda: list(NetworkSettings().internet_ports)
    )
    """Ports the agent opens to the internet: the LLM and embedding APIs, GitHub clones."""

    @model_validator(mode="after")
    def _chroma_server_for_chroma(self) -> Self:
        chroma = self.settings.vector_store.type == "chroma"
        if chroma and self.chroma is None:
            raise ValueError(
                "chroma: required when settings.vectorStore.type is chroma: without the server's endpoint "
                "every pod would open its own embedded store (chroma_db in its working directory)"
            )
        if not chroma and self.chroma is not None:
            raise ValueError(f"chroma: set, but settings.vectorStore.type is {self.settings.vector_store.type}")
        return self


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
            **self._runtime_env(),
        }
        if s.llm.api_base_url:
            env["LLM_API_BASE_URL"] = s.llm.api_base_url
        if s.langchain_project:
            env["LANGCHAIN_PROJECT"] = s.langchain_project
        if p.chroma is not None:
            env["CHROMA_COLLECTION_NAME"] = s.vector_store.collection_name
            # The app's own names; the runtime layer swaps its embedded store for an HttpClient to them.
            env |= {"CHROMA_HOST": p.chroma.service, "CHROMA_PORT": str(p.chroma.port), "KGA_CHROMA_MODE": "http"}
        else:
            env["PINECONE_COLLECTION_NAME"] = s.vector_store.collection_name
        env.update(p.extra_env)
        return dict(sorted(env.items()))

    def _runtime_env(self) -> dict[str, str]:
        """The runtime layer's variables (docker/agent/runtime); the query tier's limits, which the indexer
        overrides in its container (``AgentTier.runtime_env``)."""
        r = self.props.settings.runtime
        return {
            "KGA_APP": APP_OBJECT,
            "KGA_MAX_IN_FLIGHT": str(r.max_in_flight),
            "KGA_LOG_FORMAT": r.log_format,
            "KGA_REQUEST_ID_HEADER": REQUEST_ID_HEADER,
            "KGA_LIVENESS_STALL_SECONDS": str(r.liveness_stall_seconds),
            "KGA_READY_HEALTH_MAX_AGE_SECONDS": str(r.ready_health_max_age_seconds),
            "KGA_READY_MAX_LOOP_LAG_SECONDS": f"{r.ready_max_loop_lag_seconds:g}",
            "KGA_CACHE_LLM_TTL_SECONDS": str(r.cache.llm_ttl_seconds),
            "KGA_CACHE_EMBEDDINGS_TTL_SECONDS": str(r.cache.embeddings_ttl_seconds),
        }

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
        chroma = [self.props.chroma] if self.props.chroma else []
        return list({(e.service, e.port): e for e in [*refs, *chroma, *self.props.connects_to]}.values())

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
