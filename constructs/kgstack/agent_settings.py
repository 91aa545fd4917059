"""The agent's own settings: rendered to its environment variables and ``appSettings.json``.

Separate from the environment file so that another app can configure the agent
(``AgentConfigProps(settings=AgentSettings(...))``) without the environment model.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from .model import DnsLabel, Spec


class Llm(Spec):
    provider: str = "openai"
    """``LLM_PROVIDER``."""
    model: str = "gpt-4o-mini"
    """``LLM_MODEL``."""
    api_base_url: str | None = None
    """``LLM_API_BASE_URL``; unset uses the provider's default endpoint."""
    temperature: Annotated[float, Field(ge=0, le=2)] = 0.7
    """``TEMPERATURE``."""
    max_tokens: Annotated[int, Field(ge=1)] = 4000
    """``MAX_TOKENS``."""


class Embedding(Spec):
    provider: str = "openai"
    """``EMBEDDING_PROVIDER``."""
    model: str = "text-embedding-3-small"
    """``EMBEDDING_MODEL``."""
    batch_size: Annotated[int, Field(ge=1)] = 50
    """``EMBEDDING_BATCH_SIZE``."""
    max_tokens_per_batch: Annotated[int, Field(ge=1)] = 250000
    """``MAX_TOKENS_PER_BATCH``."""
    own_key: bool = False
    """The provider has a key of its own: ``EMBEDDING_API_KEY`` becomes a required key of the agent
    Secret (and of its ExternalSecret). Off: the variable stays an optional reference, never fetched."""


class VectorStore(Spec):
    type: Literal["chroma", "pinecone"] = "chroma"
    """``DATABASE_TYPE``: an in-cluster Chroma, or the managed Pinecone service."""
    collection_name: str = "knowledge-base-graph"
    """``CHROMA_COLLECTION_NAME`` or ``PINECONE_COLLECTION_NAME``."""


class Chunking(Spec):
    size: Annotated[int, Field(ge=100)] = 1000
    """``CHUNK_SIZE``."""
    overlap: Annotated[int, Field(ge=0)] = 200
    """``CHUNK_OVERLAP``; must be smaller than ``size``."""

    @model_validator(mode="after")
    def _overlap_below_size(self) -> Self:
        if self.overlap >= self.size:
            raise ValueError(f"overlap ({self.overlap}) must be smaller than size ({self.size})")
        return self


class Workflow(Spec):
    state_persistence: bool = True
    """``WORKFLOW_STATE_PERSISTENCE``: keep ``workflow_states/`` on the indexer's volume."""
    retry_attempts: Annotated[int, Field(ge=0)] = 3
    """``WORKFLOW_RETRY_ATTEMPTS``."""
    retry_delay_seconds: Annotated[int, Field(ge=0)] = 5
    """``WORKFLOW_RETRY_DELAY_SECONDS``."""
    timeout_seconds: Annotated[int, Field(ge=60)] = 3600
    """``WORKFLOW_TIMEOUT_SECONDS``; also sizes the indexer's termination grace."""
    parallel_repos: Annotated[int, Field(ge=1)] = 2
    """``WORKFLOW_PARALLEL_REPOS``."""


class Graph(Spec):
    enabled: bool = False
    """``ENABLE_GRAPH_FEATURES``: deploys Memgraph and points the agent at it."""
    hybrid_search: bool = False
    """``ENABLE_HYBRID_SEARCH``."""
    visualization: bool = False
    """``ENABLE_GRAPH_VISUALIZATION``."""


class CacheSettings(Spec):
    """Caching through Redis by the runtime layer (``REDIS_URL`` from the Redis Secret turns it on)."""

    llm_ttl_seconds: Annotated[int, Field(ge=0)] = 86400
    """``KGA_CACHE_LLM_TTL_SECONDS``: how long a chat-model answer stays in LangChain's global LLM cache in
    Redis and is served again for the same prompt and model; 0 turns this cache off."""
    embeddings_ttl_seconds: Annotated[int, Field(ge=0)] = 604800
    """``KGA_CACHE_EMBEDDINGS_TTL_SECONDS``: how long an embedding stays in the cache-backed embeddings
    wrapper in Redis, so re-indexing an unchanged chunk or repeating a question calls no API; 0 turns it off."""


class RuntimeSettings(Spec):
    """Our runtime layer in the agent image (``python -m kga_runtime``, docker/agent/runtime): health, metrics,
    logs and the adapters the app lacks. These are the query tier's limits; the indexer raises the loop ones to
    its workflow timeout (its event loop runs a whole indexing run)."""

    max_in_flight: Annotated[int, Field(ge=1)] = 8
    """``KGA_MAX_IN_FLIGHT``: requests a pod serves at once; at this many, ``/readyz`` fails and the pod leaves
    its Service until it drains. Must exceed ``query.autoscaling.targetInFlight``."""
    log_format: Literal["json", "text"] = "json"
    """``KGA_LOG_FORMAT``: ``json`` writes one object per line with the edge's request id; ``text`` for a
    terminal. Credentials are scrubbed from every line in both."""
    liveness_stall_seconds: Annotated[int, Field(ge=30)] = 300
    """``KGA_LIVENESS_STALL_SECONDS``: ``/livez`` fails (and the kubelet restarts the pod) only when the event
    loop has not run for this long: a wedged loop, not one busy with a long answer."""
    ready_health_max_age_seconds: Annotated[int, Field(ge=5)] = 30
    """``KGA_READY_HEALTH_MAX_AGE_SECONDS``: ``/readyz`` needs the app's own ``/health`` to have passed this
    recently."""
    ready_max_loop_lag_seconds: Annotated[float, Field(gt=0)] = 2
    """``KGA_READY_MAX_LOOP_LAG_SECONDS``: ``/readyz`` fails while the event loop lags more than this, so a pod
    blocked by a synchronous answer gets no new requests."""
    cache: CacheSettings = CacheSettings()
    """Redis caching of LLM answers and embeddings."""


class AgentSettings(Spec):
    """The agent's non-secret settings: the app's own variables (docs/agent.md) and our runtime layer's."""

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """``LOG_LEVEL``."""
    github_file_extensions: Annotated[list[Annotated[str, Field(pattern=r"^\.\w+$")]], Field(min_length=1)]
    """``GITHUB_FILE_EXTENSIONS``; required: unset, the app indexes nothing."""
    llm: Llm = Llm()
    """The chat model the agent answers with."""
    embedding: Embedding = Embedding()
    """The embedding model and its batching."""
    vector_store: VectorStore = VectorStore()
    """Chroma in the cluster, or the managed Pinecone service."""
    chunking: Chunking = Chunking()
    """How source files are split before embedding."""
    workflow: Workflow = Workflow()
    """Indexing workflow behaviour."""
    graph: Graph = Graph()
    """Graph features; enabling them deploys Memgraph."""
    runtime: RuntimeSettings = RuntimeSettings()
    """Health, saturation, logs and caching of our runtime layer in the agent image."""
    event_flow_analysis: bool = False
    """``ENABLE_EVENT_FLOW_ANALYSIS``."""
    langchain_tracing: bool = False
    """``LANGCHAIN_TRACING``; needs ``LANGCHAIN_API_KEY`` in the agent Secret."""
    langchain_project: str | None = None
    """``LANGCHAIN_PROJECT``."""
    secret_name: DnsLabel = "kga-agent"
    """Secret with OPENAI_API_KEY, GITHUB_TOKEN (and PINECONE_API_KEY); never in git."""


class Repository(Spec):
    """One entry of the app's ``appSettings.json``."""

    name: Annotated[str, Field(min_length=1)]
    """Display name of the repository in the app."""
    url: Annotated[str, Field(pattern=r"^https://[^\s/]+/[^\s]+$")]
    """HTTPS clone URL."""
    branch: Annotated[str, Field(min_length=1)] = "main"
    """Branch to index."""
    description: str = ""
    """Free text shown in the app."""
