"""Adapters: each patches one documented app symbol, and names it so ``--check`` can prove it exists.

``python -m kga_runtime --check`` (run by the image build) resolves every
symbol below; a renamed or removed symbol fails the build, not a request.
"""

from __future__ import annotations

import base64
import contextvars
import functools
import importlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .config import Config
from .logs import LogWriter
from .metrics import Metrics


@dataclass(frozen=True)
class Context:
    cfg: Config
    metrics: Metrics
    log: LogWriter
    redis: Callable[[], Any]


@dataclass(frozen=True)
class Adapter:
    name: str
    symbols: tuple[str, ...]  # "module:attr.path" the adapter relies on
    switch: str  # how to turn it off (documentation and the start-up log)
    enabled: Callable[[Config], bool]
    apply: Callable[[Context], None]


def resolve(symbol: str) -> Any:
    """Import ``module:attr.path`` and return the attribute (AttributeError/ImportError when missing)."""
    module_name, _, path = symbol.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in filter(None, path.split(".")):
        obj = getattr(obj, part)
    return obj


def _owner_and_name(symbol: str) -> tuple[Any, str]:
    module_name, _, path = symbol.partition(":")
    owner_path, _, attr = path.rpartition(".")
    return resolve(f"{module_name}:{owner_path}"), attr


# ------------------------------------------------------------ Chroma over HTTP

CHROMA_FACTORY = "src.vectorstores.store_factory:VectorStoreFactory._create_chroma_store"
CHROMA_STORE = "src.vectorstores.chroma_store:ChromaStore"


def _chroma(ctx: Context) -> None:
    """The factory's default is an embedded PersistentClient in ./chroma_db; give the store a shared HttpClient."""
    import chromadb
    from chromadb.config import Settings

    owner, attr = _owner_and_name(CHROMA_FACTORY)
    original = getattr(owner, attr)
    store_cls = resolve(CHROMA_STORE)
    cfg = ctx.cfg

    @functools.cache
    def client() -> Any:
        return chromadb.HttpClient(
            host=cfg.chroma_host, port=cfg.chroma_port, settings=Settings(anonymized_telemetry=False)
        )

    def create(
        collection_name: str | None = None,
        embeddings: Any = None,
        persist_directory: str | None = None,
        **kwargs: Any,
    ) -> Any:
        if persist_directory is not None:  # an explicit local store is the caller's choice
            return original(collection_name, embeddings, persist_directory, **kwargs)
        return store_cls(client=client(), collection_name=collection_name, embeddings=embeddings)

    setattr(owner, attr, staticmethod(create))


# ---------------------------------------------------------------- Redis caches

LLM_FACTORY = "src.llm.llm_factory:LLMFactory.create"
EMBEDDING_FACTORY = "src.llm.embedding_factory:EmbeddingFactory.create"


def _llm_cache(ctx: Context) -> None:
    from langchain_core.globals import set_llm_cache

    from .cache import RedisLLMCache

    resolve(LLM_FACTORY)  # the app builds LangChain chat models there; they consult the global cache
    set_llm_cache(RedisLLMCache(ctx.redis(), ctx.cfg.cache_llm_ttl_seconds, ctx.metrics))


def _embeddings_cache(ctx: Context) -> None:
    from .cache import CachedEmbeddings

    owner, attr = _owner_and_name(EMBEDDING_FACTORY)
    original = getattr(owner, attr)

    @functools.wraps(original)
    def create(*args: Any, **kwargs: Any) -> Any:
        return CachedEmbeddings(
            original(*args, **kwargs), ctx.redis(), ctx.cfg.cache_embeddings_ttl_seconds, ctx.metrics
        )

    setattr(owner, attr, staticmethod(create))


# ------------------------------------------------------- repository URL fix

URL_HANDLER = "src.loaders.repository_url_handler:RepositoryUrlHandler"
_URL_METHODS = (
    "build_clone_url",
    "extract_repo_name_from_url",
    "build_github_api_url",
    "build_github_web_url",
    "convert_to_ssh_url",
)


def _bare(repo: str) -> str:
    # str.rstrip(".git") strips any of . g i t from the end: knowledge-graph-agent -> knowledge-graph-agen.
    return repo.removesuffix("/").removesuffix(".git")


def _repo_urls(ctx: Context) -> None:
    """Correct names, and clone URLs without the token: git gets it from the environment instead.

    The token travels as an HTTP header set through GIT_CONFIG_* variables, so it is in
    neither the URL the app logs nor git's command line.
    """
    handler = resolve(URL_HANDLER)
    for method in _URL_METHODS:
        getattr(handler, method)  # fail early, with the symbol's name, if one is gone

    def build_clone_url(self: Any, owner: str, repo: str, token: str | None = None) -> str:
        return f"https://github.com/{owner}/{_bare(repo)}.git"

    def extract_repo_name_from_url(self: Any, url: str) -> str:
        try:
            _, repo = self.parse_repo_info(url)
        except Exception as exc:
            raise ValueError(f"Unable to extract repository name from URL: {url}") from exc
        return _bare(repo)

    def build_github_api_url(self: Any, owner: str, repo: str) -> str:
        return f"https://api.github.com/repos/{owner}/{_bare(repo)}"

    def build_github_web_url(self: Any, owner: str, repo: str) -> str:
        return f"https://github.com/{owner}/{_bare(repo)}"

    def convert_to_ssh_url(self: Any, owner: str, repo: str) -> str:
        return f"git@github.com:{owner}/{_bare(repo)}.git"

    fixed = (
        build_clone_url,
        extract_repo_name_from_url,
        build_github_api_url,
        build_github_web_url,
        convert_to_ssh_url,
    )
    for fn in fixed:
        setattr(handler, fn.__name__, fn)
    token = os.environ.get("GITHUB_TOKEN", "").strip()
    if token:
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        n = int(os.environ.get("GIT_CONFIG_COUNT", "0") or 0)
        os.environ[f"GIT_CONFIG_KEY_{n}"] = "http.https://github.com/.extraheader"
        os.environ[f"GIT_CONFIG_VALUE_{n}"] = f"Authorization: Basic {basic}"
        os.environ["GIT_CONFIG_COUNT"] = str(n + 1)


# ---------------------------------------------------- indexing run outcomes

INDEXING_RUN = "src.api.routes:_run_indexing_workflow"
ACTIVE_WORKFLOWS = "src.api.routes:active_workflows"
_SUCCEEDED = re.compile(r"completed", re.I)


def _indexing_metrics(ctx: Context) -> None:
    """kga_indexing_runs_total: the background task's start, and the status the app records for it."""
    module = importlib.import_module(INDEXING_RUN.partition(":")[0])
    original = resolve(INDEXING_RUN)
    workflows = resolve(ACTIVE_WORKFLOWS)
    runs = ctx.metrics.indexing_runs

    @functools.wraps(original)
    async def run(workflow_id: str, *args: Any, **kwargs: Any) -> Any:
        runs.labels("started").inc()
        try:
            result = await original(workflow_id, *args, **kwargs)
        except BaseException:
            runs.labels("failed").inc()
            raise
        status = str(workflows.get(workflow_id, {}).get("status", ""))
        runs.labels("succeeded" if _SUCCEEDED.search(status) else "failed").inc()
        return result

    setattr(module, INDEXING_RUN.partition(":")[2], run)


# ------------------------------------------------ request ID in worker threads

INDEXING_POOL = "src.workflows.indexing_workflow:ThreadPoolExecutor"


def _context_threads(ctx: Context) -> None:
    """The indexer loads repositories in a thread pool; its log lines keep the request's ID.

    Context variables do not cross into pool threads by themselves; this pool runs each
    task in a copy of the submitter's context (the request ID among them).
    """
    import contextvars
    from concurrent.futures import Future, ThreadPoolExecutor

    module_name, _, attr = INDEXING_POOL.partition(":")
    module = importlib.import_module(module_name)
    if resolve(INDEXING_POOL) is not ThreadPoolExecutor:
        raise TypeError(f"{INDEXING_POOL} is not concurrent.futures.ThreadPoolExecutor")

    class ContextThreadPoolExecutor(ThreadPoolExecutor):
        def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
            return super().submit(contextvars.copy_context().run, fn, *args, **kwargs)

    setattr(module, attr, ContextThreadPoolExecutor)


# ------------------------------------------------------ idempotent chunk storage

STORE_ADD = f"{CHROMA_STORE}.add_documents"
LC_DOCUMENT = "langchain_core.documents:Document"  # its ``id`` field: LangChain's add_documents passes it on
_ID_KEYS = ("repository", "file_path", "source", "chunk_index")


def chunk_ids(documents: list[Any]) -> list[str]:
    """The same chunk always gets the same id (repository, file, position, text); repeats in one call get a suffix."""
    import hashlib
    import json

    seen: dict[str, int] = {}
    ids = []
    for doc in documents:
        key = json.dumps([[k, doc.metadata.get(k)] for k in _ID_KEYS] + [doc.page_content], default=str)
        digest = hashlib.sha256(key.encode()).hexdigest()
        n = seen[digest] = seen.get(digest, -1) + 1
        ids.append(digest if n == 0 else f"{digest}-{n}")
    return ids


def _idempotent_store(ctx: Context) -> None:
    """The indexer adds each batch twice, and a re-index adds every chunk again, all without ids.

    Each document gets a deterministic id before the app's ``add_documents``; LangChain's
    Chroma then upserts by id, so storing the same chunk again replaces it.
    """
    if "id" not in resolve(LC_DOCUMENT).model_fields:
        raise TypeError(f"{LC_DOCUMENT} has no id field: ids would not reach the store")
    owner, attr = _owner_and_name(STORE_ADD)
    original = getattr(owner, attr)

    @functools.wraps(original)
    def add_documents(self: Any, documents: Any, *args: Any, **kwargs: Any) -> Any:
        docs = list(documents or [])
        for doc, doc_id in zip(docs, chunk_ids(docs), strict=True):
            if getattr(doc, "id", None) is None:
                doc.id = doc_id
        return original(self, docs, *args, **kwargs)

    setattr(owner, attr, add_documents)


# ------------------------------------------------ stale chunks after a full index

WORKFLOW = "src.workflows.indexing_workflow:IndexingWorkflow"
STORE_STEP = f"{WORKFLOW}._store_in_vector_db"
FINALIZE = f"{WORKFLOW}._finalize_index"
_FULL = {"full_index", "no_changes"}  # change types after which a repository's written chunks are all of it


@dataclass
class _RunChunks:
    """What one indexing run wrote: chunk ids per (collection, repository), and where a write failed."""

    collections: dict[str, Any] = field(default_factory=dict)
    ids: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    failed: set[tuple[str, str]] = field(default_factory=set)


_RUN: contextvars.ContextVar[_RunChunks | None] = contextvars.ContextVar("kga_run_chunks", default=None)


def _sweep(run: _RunChunks, state: Any, log: LogWriter) -> None:
    changes = (state.get("metadata") or {}).get("incremental_changes") or {}
    partial = sorted(r for r, c in changes.items() if c.get("change_type") not in _FULL)
    if partial:  # a diff run wrote only changed files: the rest of the repository is not stale
        log.write("INFO", "kga.runtime", f"stale chunks kept: diff run for {', '.join(partial)}")
        return
    for (name, repository), written in run.ids.items():
        if (name, repository) in run.failed:
            log.write("WARNING", "kga.runtime", f"stale chunks kept for {repository}: a write failed in this run")
            continue
        try:
            collection = run.collections[name]
            stored = collection.get(where={"repository": repository}, include=[])["ids"]
            stale = [i for i in stored if i not in written]
            for i in range(0, len(stale), 1000):
                collection.delete(ids=stale[i : i + 1000])
        except Exception as exc:  # the run itself succeeded; the next one sweeps again
            log.write(
                "WARNING", "kga.runtime", f"stale chunks of {repository} not removed: {type(exc).__name__}: {exc}"
            )
            continue
        log.write("INFO", "kga.runtime", f"removed {len(stale)} stale chunks of {repository} from {name}")


def _stale_chunks(ctx: Context) -> None:
    """A full index upserts each chunk by id but removes nothing: chunks of changed or deleted files stayed.

    The store step records the ids it wrote per repository; once the run's
    ``_finalize_index`` returns (the run succeeded), each repository's chunks
    with other ids are deleted. Not after a diff run (only changed files are
    written), nor for a repository one of whose writes failed.
    """
    store_owner, store_attr = _owner_and_name(STORE_ADD)
    add = getattr(store_owner, store_attr)
    workflow = resolve(WORKFLOW)
    store_step, finalize = resolve(STORE_STEP), resolve(FINALIZE)
    log = ctx.log

    @functools.wraps(add)
    def add_documents(self: Any, documents: Any, *args: Any, **kwargs: Any) -> Any:
        run = _RUN.get()
        docs = list(documents or [])
        if run is None:
            return add(self, docs, *args, **kwargs)
        name = str(self.collection_name)
        run.collections[name] = self.collection
        keys = {(name, str(d.metadata["repository"])) for d in docs if d.metadata.get("repository")}
        try:
            result = add(self, docs, *args, **kwargs)
        except BaseException:
            run.failed |= keys
            raise
        for doc in docs:
            key = (name, str(doc.metadata.get("repository")))
            if key in keys:
                if getattr(doc, "id", None) is None:  # no id: what was written is unknown
                    run.failed.add(key)
                run.ids.setdefault(key, set()).add(str(doc.id))
        return result

    @functools.wraps(store_step)
    def store(self: Any, state: Any) -> Any:
        run = self.__dict__.setdefault("_kga_run_chunks", _RunChunks())
        token = _RUN.set(run)
        try:
            return store_step(self, state)
        finally:
            _RUN.reset(token)

    @functools.wraps(finalize)
    def finalized(self: Any, state: Any) -> Any:
        result = finalize(self, state)
        run = self.__dict__.pop("_kga_run_chunks", None)
        if run is not None:
            _sweep(run, state, log)
        return result

    setattr(store_owner, store_attr, add_documents)
    workflow._store_in_vector_db = store
    workflow._finalize_index = finalized


def _has_redis(ttl: Callable[[Config], int]) -> Callable[[Config], bool]:
    return lambda cfg: bool(cfg.redis_url) and ttl(cfg) > 0


ADAPTERS: tuple[Adapter, ...] = (
    Adapter(
        "chroma-http",
        (CHROMA_FACTORY, CHROMA_STORE),
        "KGA_CHROMA_MODE=embedded",
        lambda c: c.chroma_mode == "http",
        _chroma,
    ),
    Adapter(
        "llm-cache",
        (LLM_FACTORY, "langchain_core.globals:set_llm_cache"),
        "no REDIS_URL, or KGA_CACHE_LLM_TTL_SECONDS=0",
        _has_redis(lambda c: c.cache_llm_ttl_seconds),
        _llm_cache,
    ),
    Adapter(
        "embeddings-cache",
        (EMBEDDING_FACTORY,),
        "no REDIS_URL, or KGA_CACHE_EMBEDDINGS_TTL_SECONDS=0",
        _has_redis(lambda c: c.cache_embeddings_ttl_seconds),
        _embeddings_cache,
    ),
    Adapter(
        "repository-urls",
        (URL_HANDLER, *(f"{URL_HANDLER}.{m}" for m in _URL_METHODS)),
        "always on",
        lambda c: True,
        _repo_urls,
    ),
    Adapter("request-id-threads", (INDEXING_POOL,), "always on", lambda c: True, _context_threads),
    Adapter("idempotent-chunks", (STORE_ADD, LC_DOCUMENT), "always on", lambda c: True, _idempotent_store),
    Adapter(
        "stale-chunks",
        (STORE_ADD, STORE_STEP, FINALIZE),
        "always on (after idempotent-chunks)",
        lambda c: True,
        _stale_chunks,
    ),
    Adapter(
        "indexing-metrics",
        (INDEXING_RUN, ACTIVE_WORKFLOWS),
        "KGA_METRICS=false",
        lambda c: c.metrics,
        _indexing_metrics,
    ),
)


def check(app_symbol: str) -> list[str]:
    """Every symbol any adapter (and the launcher) relies on, as ``symbol: error`` for the missing ones."""
    missing = []
    for symbol in (app_symbol, *(s for a in ADAPTERS for s in a.symbols)):
        try:
            resolve(symbol)
        except Exception as exc:
            missing.append(f"{symbol}: {type(exc).__name__}: {exc}")
    return missing
