"""Chroma: every collection exported page by page through the HTTP API, as JSON Lines.

Line kinds, in order: ``header``; per collection one ``collection`` line
(name, metadata, configuration), its ``records`` pages, and ``collection_end``;
finally ``end``. Embeddings are stored as base64 little-endian float32, which
is exactly what Chroma keeps, so a restore is bit-identical and the dump is
about 4x smaller than decimal text.

Restore re-batches the pages into upserts of ``upsert_batch`` records and keeps
``upsert_workers`` of them in flight: the server builds its HNSW index on
several threads, and the next batch is decoded while the last one is indexed.
Memory stays bounded by one dump line plus ``upsert_workers + 1`` batches,
whatever the size of the store.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kgbackup.errors import ConfigError, CorruptDumpError, RefusedError, StoreError
from kgbackup.logjson import log
from kgbackup.manifest import DumpWriter, Manifest
from kgbackup.pipeline import DumpInfo, read_gzip_lines

DUMP_FORMAT = 1
_INCLUDE: Any = ["embeddings", "documents", "metadatas"]


@dataclass
class ChromaConfig:
    host: str
    port: int
    ssl: bool = False
    tenant: str = "default_tenant"
    database: str = "default_database"
    auth_token: str | None = None
    # Records per get() page and per dump line. Each page is parsed into Python floats
    # by the client; 250 keeps that peak small and was as fast as 1000 (bench/README.md).
    page_size: int = 250
    # Records per upsert, and upserts in flight: the fastest pair in bench/backup_throughput.py's
    # sweep (bench/README.md). Larger batches cost the server less CPU per record; more than
    # two in flight on two cores made the server spend 3x the CPU.
    upsert_batch: int = 1000
    upsert_workers: int = 2

    def __post_init__(self) -> None:
        for name in ("page_size", "upsert_batch", "upsert_workers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"chroma {name} must be at least 1, got {getattr(self, name)}")


def encode_embedding(vector: Any) -> str | None:
    if vector is None:
        return None
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def decode_embedding(text: str | None) -> Any:
    """A float32 vector (a view on the decoded bytes, no Python floats); ``ValueError`` if malformed."""
    if text is None:
        return None
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"not base64: {exc}") from exc
    if not raw or len(raw) % 4:
        raise ValueError(f"{len(raw)} bytes is not a float32 vector")
    return np.frombuffer(raw, dtype="<f4")


def connect(cfg: ChromaConfig) -> Any:
    """An HTTP client; the import is deferred so the other stores do not pay for it."""
    import chromadb
    from chromadb.config import Settings

    headers = {"Authorization": f"Bearer {cfg.auth_token}"} if cfg.auth_token else None
    try:
        return chromadb.HttpClient(
            host=cfg.host,
            port=cfg.port,
            ssl=cfg.ssl,
            headers=headers,
            tenant=cfg.tenant,
            database=cfg.database,
            settings=Settings(anonymized_telemetry=False),
        )
    except Exception as exc:  # the client raises bare ValueError/ConnectionError variants
        raise StoreError(f"cannot reach Chroma at {cfg.host}:{cfg.port}: {exc}") from exc


def _line(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


def _all_collections(client: Any) -> list[Any]:
    cols: list[Any] = []
    while True:
        page = client.list_collections(limit=100, offset=len(cols))
        cols.extend(page)
        if len(page) < 100:
            return sorted(cols, key=lambda c: c.name)


def _restorable_config(configuration: dict[str, Any] | None) -> dict[str, Any] | None:
    """Only index settings are replayed; the embedding function belongs to the app."""
    if not configuration:
        return None
    kept = {k: v for k, v in configuration.items() if k in ("hnsw", "spann") and v}
    return kept or None


class ChromaStore:
    kind = "chroma"
    extension = "jsonl"

    def __init__(self, cfg: ChromaConfig) -> None:
        self.cfg = cfg
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = connect(self.cfg)
        return self._client

    def close(self) -> None:
        self._client = None

    def _dump_collection(self, col: Any, out: DumpWriter) -> int:
        out.write(_line({"kind": "collection", "name": col.name, "metadata": col.metadata,
                         "configuration": col.configuration_json}))  # fmt: skip
        exported = 0
        while True:
            page = col.get(limit=self.cfg.page_size, offset=exported, include=_INCLUDE)
            ids = list(page["ids"])
            if not ids:
                break
            embeddings = page["embeddings"] if page["embeddings"] is not None else [None] * len(ids)
            out.write(_line({
                "kind": "records",
                "collection": col.name,
                "ids": ids,
                "embeddings": [encode_embedding(e) for e in embeddings],
                "documents": page["documents"] or [None] * len(ids),
                "metadatas": page["metadatas"] or [None] * len(ids),
            }))  # fmt: skip
            exported += len(ids)
        # Offset paging is only consistent while nobody writes; say so instead of
        # shipping a silently skewed copy.
        now = col.count()
        if now != exported:
            raise StoreError(
                f"collection {col.name!r} changed during backup (exported {exported}, now {now}); "
                "re-run when indexing is idle"
            )
        out.write(_line({"kind": "collection_end", "name": col.name, "count": exported}))
        return exported

    def dump(self, out: DumpWriter, work_dir: Path) -> DumpInfo:
        version = str(self.client.get_version())
        out.write(_line({"kind": "header", "format": DUMP_FORMAT, "chroma_version": version,
                         "tenant": self.cfg.tenant, "database": self.cfg.database}))  # fmt: skip
        counts: dict[str, int] = {}
        for col in _all_collections(self.client):
            counts[col.name] = self._dump_collection(col, out)
            log("chroma.collection_dumped", collection=col.name, records=counts[col.name])
        out.write(_line({"kind": "end", "collections": len(counts), "records": sum(counts.values())}))
        return DumpInfo(
            counts={"collections": counts, "records": sum(counts.values())},
            source={"chroma_version": version, "tenant": self.cfg.tenant, "database": self.cfg.database},
        )

    def _parsed(self, gz_path: Path) -> Iterator[dict[str, Any]]:
        for number, raw in enumerate(read_gzip_lines(gz_path), start=1):
            try:
                obj = json.loads(raw)
            except ValueError as exc:
                raise CorruptDumpError(f"{gz_path.name} line {number}: not JSON ({exc})") from exc
            if not isinstance(obj, dict) or "kind" not in obj:
                raise CorruptDumpError(f"{gz_path.name} line {number}: not a dump record")
            yield obj

    def _check_records(self, obj: dict[str, Any], current: str | None) -> int:
        n = len(obj.get("ids", []))
        same = all(len(obj.get(k) or []) == n for k in ("embeddings", "documents", "metadatas"))
        if obj.get("collection") != current or not same:
            raise CorruptDumpError(f"malformed records page for collection {obj.get('collection')!r}")
        try:
            for e in obj["embeddings"]:
                decode_embedding(e)
        except (ValueError, TypeError) as exc:
            raise CorruptDumpError(f"bad embedding in collection {current!r}: {exc}") from exc
        return n

    def check_dump(self, gz_path: Path, manifest: Manifest, work_dir: Path) -> None:
        found: dict[str, int] = {}
        current: str | None = None
        ended = False
        for obj in self._parsed(gz_path):
            kind = obj["kind"]
            if kind == "collection":
                current = str(obj["name"])
                found[current] = 0
            elif kind == "records":
                found[str(current)] += self._check_records(obj, current)
            elif kind == "collection_end" and found.get(str(obj.get("name"))) != obj.get("count"):
                raise CorruptDumpError(f"collection {obj.get('name')!r}: record count does not match its end marker")
            elif kind == "end":
                ended = True
        expected = manifest.counts.get("collections")
        if not ended or found != expected:
            raise CorruptDumpError(
                f"backup {manifest.backup_id}: dump holds {found} (complete={ended}), manifest says {expected}"
            )

    def _prepare_target(self, names: list[str], force: bool) -> None:
        """Refuse to overwrite data; empty collections (e.g. created by the app at start) are replaced."""
        existing = {c.name: c for c in _all_collections(self.client)}
        busy = {n: existing[n].count() for n in names if n in existing}
        non_empty = {n: c for n, c in busy.items() if c}
        if non_empty and not force:
            raise RefusedError(
                f"target Chroma collections are not empty {non_empty}; re-run with --force to replace them"
            )
        for name, records in busy.items():
            self.client.delete_collection(name)
            log("chroma.collection_dropped", collection=name, records=records)

    def _load(self, gz_path: Path) -> dict[str, int]:
        restored: dict[str, int] = {}
        with _Upserter(self.cfg.upsert_batch, self.cfg.upsert_workers) as upserter:
            for obj in self._parsed(gz_path):
                if obj["kind"] == "collection":
                    upserter.flush()
                    col = self.client.create_collection(
                        name=obj["name"],
                        metadata=obj.get("metadata") or None,
                        configuration=_restorable_config(obj.get("configuration")),
                        embedding_function=None,
                    )
                    upserter.collection = col
                    restored[col.name] = 0
                elif obj["kind"] == "records" and obj["ids"]:
                    upserter.add(obj)
                    restored[upserter.collection.name] += len(obj["ids"])
        return restored

    def restore(self, gz_path: Path, manifest: Manifest, force: bool, work_dir: Path) -> dict[str, Any]:
        names = sorted(manifest.counts.get("collections", {}))
        try:
            self._prepare_target(names, force)
            restored = self._load(gz_path)
            for name, want in manifest.counts["collections"].items():
                have = self.client.get_collection(name).count()
                if have != want:
                    raise StoreError(f"after restore collection {name!r} has {have} records, expected {want}")
        except (RefusedError, StoreError):
            raise
        except Exception as exc:  # chromadb raises many unrelated types; report one clear line
            raise StoreError(f"restore into Chroma failed (safe to re-run with --force): {exc}") from exc
        return {"collections": restored, "records": sum(restored.values())}


@dataclass
class _Batch:
    ids: list[str] = field(default_factory=list)
    embeddings: list[Any] = field(default_factory=list)
    documents: list[str | None] = field(default_factory=list)
    metadatas: list[Any] = field(default_factory=list)


class _Upserter:
    """Re-batches dump pages into upserts of ``size`` records, ``workers`` of them in flight.

    Upsert, not add: a retried batch must not fail on duplicate ids. The first
    failed batch stops the load: its error is raised from ``add``/``flush``/exit.
    """

    def __init__(self, size: int, workers: int) -> None:
        self.size = size
        self.workers = workers
        self.collection: Any = None
        self._batch = _Batch()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="upsert")
        self._in_flight: deque[Future[None]] = deque()

    def add(self, page: dict[str, Any]) -> None:
        b = self._batch
        b.ids.extend(page["ids"])
        b.embeddings.extend(decode_embedding(e) for e in page["embeddings"])
        b.documents.extend(page["documents"])
        b.metadatas.extend(page["metadatas"])
        while len(b.ids) >= self.size:
            self._submit(self.size)

    def flush(self) -> None:
        """Send what is buffered and wait until every batch of the collection is stored."""
        if self._batch.ids:
            self._submit(len(self._batch.ids))
        while self._in_flight:
            self._in_flight.popleft().result()

    def _submit(self, n: int) -> None:
        b = self._batch
        batch = _Batch(b.ids[:n], b.embeddings[:n], b.documents[:n], b.metadatas[:n])
        del b.ids[:n], b.embeddings[:n], b.documents[:n], b.metadatas[:n]
        # Bounded: wait for the oldest batch before queueing one more than there are workers.
        while len(self._in_flight) >= self.workers:
            self._in_flight.popleft().result()
        self._in_flight.append(self._pool.submit(self._upsert, self.collection, batch))

    @staticmethod
    def _upsert(col: Any, b: _Batch) -> None:
        col.upsert(ids=b.ids, embeddings=b.embeddings, documents=b.documents, metadatas=b.metadatas)

    def __enter__(self) -> _Upserter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        try:
            if exc_type is None:
                self.flush()
        finally:
            for future in self._in_flight:
                future.cancel()
            self._pool.shutdown(wait=True)
