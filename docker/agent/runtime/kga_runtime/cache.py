"""Redis caches: LangChain's global LLM cache and a cache-backed embeddings wrapper, both with TTLs.

A Redis error never fails the app's call: it counts as result="error" and the
call goes to the provider.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Sequence
from typing import Any

from langchain_core.caches import RETURN_VAL_TYPE, BaseCache
from langchain_core.embeddings import Embeddings
from langchain_core.load import dumps, loads

from .metrics import Metrics

# dumps/loads are LangChain's own serialisation of generations; "beta" is their label, not ours to repeat per hit.
warnings.filterwarnings("ignore", message="The function `(dumps|loads)` is in beta")

LLM_PREFIX = "kga:llm:"
EMB_PREFIX = "kga:emb:"


def _digest(*parts: str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


class RedisLLMCache(BaseCache):
    """Set with ``langchain_core.globals.set_llm_cache``: every LangChain model without ``cache=False`` uses it."""

    def __init__(self, client: Any, ttl_seconds: int, metrics: Metrics) -> None:
        self.client = client
        self.ttl = ttl_seconds
        self.metrics = metrics

    def lookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        try:
            raw = self.client.get(LLM_PREFIX + _digest(llm_string, prompt))
        except Exception:
            self.metrics.cache.labels("llm", "error").inc()
            return None
        if raw is None:
            self.metrics.cache.labels("llm", "miss").inc()
            return None
        self.metrics.cache.labels("llm", "hit").inc()
        # Only langchain_core classes (generations, messages) come back out of the cache.
        value: RETURN_VAL_TYPE = loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw, allowed_objects="core")
        return value

    def update(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        try:
            self.client.set(LLM_PREFIX + _digest(llm_string, prompt), dumps(list(return_val)), ex=self.ttl)
        except Exception:
            self.metrics.cache.labels("llm", "error").inc()

    def clear(self, **kwargs: Any) -> None:
        for key in self.client.scan_iter(match=LLM_PREFIX + "*"):
            self.client.delete(key)


class CachedEmbeddings(Embeddings):
    """Wraps the app's embeddings; vectors live in Redis under the model's namespace and the text's hash."""

    def __init__(self, inner: Embeddings, client: Any, ttl_seconds: int, metrics: Metrics) -> None:
        self.inner = inner
        self.client = client
        self.ttl = ttl_seconds
        self.metrics = metrics
        model = getattr(inner, "model", "") or getattr(inner, "model_name", "")
        self.namespace = f"{type(inner).__module__}.{type(inner).__qualname__}:{model}"

    def __getattr__(self, name: str) -> Any:
        # The app may read attributes of its embeddings object (model, chunk_size ...).
        inner = self.__dict__.get("inner")
        if inner is None:
            raise AttributeError(name)
        return getattr(inner, name)

    def _keys(self, texts: Sequence[str]) -> list[str]:
        return [EMB_PREFIX + _digest(self.namespace, t) for t in texts]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        keys = self._keys(texts)
        try:
            cached: list[Any] = list(self.client.mget(keys)) if keys else []
        except Exception:
            self.metrics.cache.labels("embeddings", "error").inc(len(texts))
            vectors: list[list[float]] = self.inner.embed_documents(texts)
            return vectors
        missing = [i for i, raw in enumerate(cached) if raw is None]
        self.metrics.cache.labels("embeddings", "hit").inc(len(texts) - len(missing))
        self.metrics.cache.labels("embeddings", "miss").inc(len(missing))
        out: list[list[float] | None] = [None if raw is None else json.loads(raw) for raw in cached]
        if missing:
            fresh = self.inner.embed_documents([texts[i] for i in missing])
            try:
                pipe = self.client.pipeline(transaction=False)
                for i, vec in zip(missing, fresh, strict=True):
                    pipe.set(keys[i], json.dumps(vec), ex=self.ttl)
                pipe.execute()
            except Exception:
                self.metrics.cache.labels("embeddings", "error").inc()
            for i, vec in zip(missing, fresh, strict=True):
                out[i] = vec
        return [v for v in out if v is not None]

    def embed_query(self, text: str) -> list[float]:
        (key,) = self._keys([text])
        try:
            raw = self.client.get(key)
        except Exception:
            self.metrics.cache.labels("embeddings", "error").inc()
            direct: list[float] = self.inner.embed_query(text)
            return direct
        if raw is not None:
            self.metrics.cache.labels("embeddings", "hit").inc()
            vec: list[float] = json.loads(raw)
            return vec
        self.metrics.cache.labels("embeddings", "miss").inc()
        vec = self.inner.embed_query(text)
        try:
            self.client.set(key, json.dumps(vec), ex=self.ttl)
        except Exception:
            self.metrics.cache.labels("embeddings", "error").inc()
        return vec
