"""Chroma: every collection exported page by page through the HTTP API, as JSON Lines.

Line kinds, in order: ``header``; per collection one ``collection`` line
(name, metadata, configuration), its ``records`` pages, and ``collection_end``;
finally ``end``. Embeddings are stored as base64 little-endian float32, which
is exactly what Chroma keeps, so a restore is bit-identical and the dump is
about 4x smaller than decimal text.

A dump is one point in time, checked by content: after every collection is
dumped, a second pass re-reads each one and compares an order-independent
digest of its records (id, embedding bytes, document, metadata) with the one
taken while dumping. Any write in between (the indexer deletes a file's chunks
and adds new ones, with new or reused ids, so the count stays the same) makes
them differ; the backup is then retried, and refused after ``attempts``. The
digest goes into the manifest: ``verify`` recomputes it from the dump, and a
restore from the restored collection before it replaces the live one.

A restore loads into a staging collection (``<name>.kgbackup-staging``), checks
it against the manifest, and only then swaps it in (renames), so a failed or
interrupted restore never touches the live collection and a re-run starts over.

Restore re-batches the pages into upserts of ``upsert_batch`` records and keeps
``upsert_workers`` of them in flight: the server builds its HNSW index on
several threads, and the next batch is decoded while the last one is indexed.
Memory stays bounded by one dump line plus ``upsert_workers + 1`` batches,
whatever the size of the store.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import math
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kgbackup.errors import ChangedDuringDumpError, ConfigError, CorruptDumpError, RefusedError, StoreError
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
    # Dumps tried before a backup that keeps changing under writes is refused, and the pause
    # between them (an incremental re-index is a burst: waiting it out is usually enough).
    attempts: int = 3
    retry_seconds: float = 60.0

    def __post_init__(self) -> None:
        if self.retry_seconds < 0:
            raise ConfigError(f"chroma retry_seconds must not be negative, got {self.retry_seconds}")
        for name in ("page_size", "upsert_batch", "upsert_workers", "attempts"):
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


STAGING_SUFFIX = ".kgbackup-staging"
"""A restore loads ``<name><suffix>`` and renames it to ``<name>`` once it matches the manifest."""
REPLACED_SUFFIX = ".kgbackup-replaced"
"""The live collection during the swap; dropped once the restored one has its name."""
_MOD = 1 << 256


def _space(configuration: dict[str, Any] | None) -> str:
    for index in ("hnsw", "spann"):
        space = ((configuration or {}).get(index) or {}).get("space")
        if space:
            return str(space)
    return "l2"


@functools.cache
def _probe(dimension: int) -> Any:
    """A fixed direction to project vectors on: cos(0), cos(1), ... (no RNG whose stream could change)."""
    return np.cos(np.arange(dimension, dtype=np.float64))


def _weight(rid: str) -> float:
    """A per-id factor in [1, 2): the embedding checksum notices vectors moved between ids."""
    return 1.0 + int.from_bytes(hashlib.sha256(rid.encode()).digest()[:4], "big") / 2**32


@dataclass
class Digest:
    """An order-independent summary of a collection's records; equal summaries mean equal records.

    ``exact`` sums a sha256 of every record (id, document, metadata, embedding
    bytes) mod 2**256, so it needs no memory per record. A cosine collection's
    vectors come back from Chroma about 1 ulp off what was written (it keeps them
    normalised), so after a restore only ``portable`` (the same sum without the
    embedding) can match exactly; its embeddings are compared through a weighted
    checksum within float32 rounding instead. Within one server, reads are
    repeatable, so the dump and its verification pass compare ``exact``.
    """

    space: str = "l2"
    records: int = 0
    exact: int = 0
    portable: int = 0
    emb_sum: float = 0.0
    emb_abs: float = 0.0

    @property
    def bit_exact(self) -> bool:
        return self.space != "cosine"

    def add(self, rid: str, vector: bytes, document: Any, metadata: Any) -> None:
        head = json.dumps([rid, document, metadata], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        whole = hashlib.sha256(head.encode() + b"\0" + vector).digest()
        self.records += 1
        self.exact = (self.exact + int.from_bytes(whole, "big")) % _MOD
        if self.bit_exact:
            self.portable = self.exact
            return
        self.portable = (self.portable + int.from_bytes(hashlib.sha256(head.encode()).digest(), "big")) % _MOD
        values = np.frombuffer(vector, dtype="<f4").astype(np.float64)
        term = _weight(rid) * float(values @ _probe(values.size))
        self.emb_sum += term
        self.emb_abs += abs(term)

    def add_page(self, ids: list[str], vectors: list[bytes], documents: list[Any], metadatas: list[Any]) -> None:
        for rid, vector, document, metadata in zip(ids, vectors, documents, metadatas, strict=True):
            self.add(rid, vector, document, metadata)

    def summary(self) -> dict[str, Any]:
        """What the manifest records (``content.<collection>``)."""
        out: dict[str, Any] = {"records": self.records, "space": self.space, "sha256_sum": f"{self.portable:064x}"}
        if not self.bit_exact:
            out["embedding_checksum"] = [self.emb_sum, self.emb_abs]
        return out

    def differences(self, recorded: dict[str, Any]) -> list[str]:
        """How this (restored or re-read) collection differs from a manifest's summary; empty when equal."""
        problems = []
        if recorded.get("records") != self.records:
            problems.append(f"{self.records} records, expected {recorded.get('records')}")
        if recorded.get("sha256_sum") != f"{self.portable:064x}":
            problems.append("record contents (ids, documents, metadata" + (", embeddings" if self.bit_exact else "")
                            + ") differ")  # fmt: skip
        if not self.bit_exact:
            want, scale = recorded.get("embedding_checksum") or [math.nan, 0.0]
            # float32 rounding of each component is ~6e-8 relative; 1e-5 of the magnitude is far above it.
            if not abs(self.emb_sum - want) <= 1e-5 * max(scale, self.emb_abs, 1e-30):
                problems.append(f"embedding checksum {self.emb_sum!r}, expected {want!r}")
        return problems


def _vectors(embeddings: Any, n: int) -> list[bytes]:
    if embeddings is None:
        return [b""] * n
    return [b"" if e is None else np.asarray(e, dtype="<f4").tobytes() for e in embeddings]


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
        self.dump_attempts = cfg.attempts
        self.retry_seconds = cfg.retry_seconds
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = connect(self.cfg)
        return self._client

    def close(self) -> None:
        self._client = None

    def _pages(self, col: Any) -> Iterator[dict[str, Any]]:
        """The collection's records, ``page_size`` at a time (offset paging: consistent only without writes)."""
        offset = 0
        while True:
            page = col.get(limit=self.cfg.page_size, offset=offset, include=_INCLUDE)
            ids = list(page["ids"])
            if not ids:
                return
            n = len(ids)
            yield {
                "ids": ids,
                "embeddings": _vectors(page["embeddings"], n),
                "documents": page["documents"] or [None] * n,
                "metadatas": page["metadatas"] or [None] * n,
            }
            offset += n

    def digest(self, col: Any) -> Digest:
        """Read the whole collection and summarise it (the verification pass, and the check after a restore)."""
        digest = Digest(space=_space(col.configuration_json))
        for page in self._pages(col):
            digest.add_page(page["ids"], page["embeddings"], page["documents"], page["metadatas"])
        return digest

    def _dump_collection(self, col: Any, out: DumpWriter) -> Digest:
        out.write(_line({"kind": "collection", "name": col.name, "metadata": col.metadata,
                         "configuration": col.configuration_json}))  # fmt: skip
        digest = Digest(space=_space(col.configuration_json))
        for page in self._pages(col):
            digest.add_page(page["ids"], page["embeddings"], page["documents"], page["metadatas"])
            out.write(_line({
                "kind": "records",
                "collection": col.name,
                "ids": page["ids"],
                "embeddings": [base64.b64encode(v).decode("ascii") if v else None for v in page["embeddings"]],
                "documents": page["documents"],
                "metadatas": page["metadatas"],
            }))  # fmt: skip
        out.write(_line({"kind": "collection_end", "name": col.name, "count": digest.records}))
        return digest

    def _dumped_collections(self) -> list[Any]:
        """Every collection but what an interrupted restore left (staging or replaced copies)."""
        kept = []
        for col in _all_collections(self.client):
            if col.name.endswith((STAGING_SUFFIX, REPLACED_SUFFIX)):
                log("chroma.leftover_skipped", level="warning", collection=col.name,
                    hint="left by an interrupted restore; the next restore of it drops it")  # fmt: skip
            else:
                kept.append(col)
        return kept

    def _changes(self, dumped: dict[str, Digest]) -> list[str]:
        """Re-read every collection after the dump; what differs from what was dumped."""
        changes = []
        leftovers = (STAGING_SUFFIX, REPLACED_SUFFIX)
        now = {c.name: c for c in _all_collections(self.client) if not c.name.endswith(leftovers)}
        for name in sorted(set(now) - set(dumped)):
            changes.append(f"collection {name!r} was created")
        for name, before in dumped.items():
            if name not in now:
                changes.append(f"collection {name!r} was deleted")
                continue
            after = self.digest(now[name])
            if after.records != before.records or after.exact != before.exact:
                changes.append(
                    f"collection {name!r}: dumped {before.records} records, re-read {after.records}, "
                    + ("and their contents differ" if after.records == before.records else "contents differ")
                )
        return changes

    def dump(self, out: DumpWriter, work_dir: Path) -> DumpInfo:
        version = str(self.client.get_version())
        out.write(_line({"kind": "header", "format": DUMP_FORMAT, "chroma_version": version,
                         "tenant": self.cfg.tenant, "database": self.cfg.database}))  # fmt: skip
        digests: dict[str, Digest] = {}
        for col in self._dumped_collections():
            digests[col.name] = self._dump_collection(col, out)
            log("chroma.collection_dumped", collection=col.name, records=digests[col.name].records)
        # Every collection unchanged from its dump until its re-read, and the re-reads start after the
        # last dump ends: the dump is the store as it was at that moment.
        if changes := self._changes(digests):
            raise ChangedDuringDumpError("; ".join(changes))
        counts = {name: d.records for name, d in digests.items()}
        out.write(_line({"kind": "end", "collections": len(counts), "records": sum(counts.values())}))
        return DumpInfo(
            counts={"collections": counts, "records": sum(counts.values())},
            source={"chroma_version": version, "tenant": self.cfg.tenant, "database": self.cfg.database},
            content={name: d.summary() for name, d in digests.items()},
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

    def _check_records(self, obj: dict[str, Any], current: str | None) -> list[bytes]:
        """The page's embeddings as bytes; ``CorruptDumpError`` if the page is malformed."""
        n = len(obj.get("ids", []))
        same = all(len(obj.get(k) or []) == n for k in ("embeddings", "documents", "metadatas"))
        if obj.get("collection") != current or not same:
            raise CorruptDumpError(f"malformed records page for collection {obj.get('collection')!r}")
        try:
            return [b"" if e is None else decode_embedding(e).tobytes() for e in obj["embeddings"]]
        except (ValueError, TypeError) as exc:
            raise CorruptDumpError(f"bad embedding in collection {current!r}: {exc}") from exc

    def check_dump(self, gz_path: Path, manifest: Manifest, work_dir: Path) -> None:
        """Counts, unique ids, and (for dumps that record it) the content digest, collection by collection."""
        found: dict[str, Digest] = {}
        ids = _IdSet()
        current: str | None = None
        ended = False
        for obj in self._parsed(gz_path):
            kind = obj["kind"]
            if kind == "collection":
                current = str(obj["name"])
                found[current] = Digest(space=_space(obj.get("configuration")))
                ids = _IdSet()
            elif kind == "records":
                vectors = self._check_records(obj, current)
                found[str(current)].add_page(obj["ids"], vectors, obj["documents"], obj["metadatas"])
                ids.add(obj["ids"])
            elif kind == "collection_end":
                name = str(obj.get("name"))
                if name not in found or found[name].records != obj.get("count"):
                    raise CorruptDumpError(f"collection {name!r}: record count does not match its end marker")
                # A repeated id would fail the restore's upsert ("Expected IDs to be unique"): refuse it here.
                if repeats := ids.repeats():
                    raise CorruptDumpError(f"collection {name!r}: {repeats} id(s) appear more than once")
            elif kind == "end":
                ended = True
        counts = {name: d.records for name, d in found.items()}
        expected = manifest.counts.get("collections")
        if not ended or counts != expected:
            raise CorruptDumpError(
                f"backup {manifest.backup_id}: dump holds {counts} (complete={ended}), manifest says {expected}"
            )
        for name, recorded in manifest.content.items():
            if problems := found[name].differences(recorded) if name in found else ["missing"]:
                raise CorruptDumpError(
                    f"backup {manifest.backup_id}: collection {name!r} does not match the manifest: "
                    + "; ".join(problems)
                )

    def _existing(self) -> dict[str, Any]:
        return {c.name: c for c in _all_collections(self.client)}

    def _prepare_target(self, names: list[str], force: bool) -> None:
        """Refuse to overwrite data; empty collections (e.g. created by the app at start) are replaced.

        Drops what an interrupted restore left behind: its staging collections
        (loaded again from scratch) and nothing else.
        """
        existing = self._existing()
        non_empty = {n: c for n in names if n in existing and (c := existing[n].count())}
        if non_empty and not force:
            raise RefusedError(
                f"target Chroma collections are not empty {non_empty}; re-run with --force to replace them"
            )
        for name in names:
            if name + STAGING_SUFFIX in existing:
                self.client.delete_collection(name + STAGING_SUFFIX)
                log("chroma.staging_dropped", collection=name + STAGING_SUFFIX)

    def _load(self, gz_path: Path) -> dict[str, int]:
        """Load every collection of the dump into its staging collection."""
        restored: dict[str, int] = {}
        with _Upserter(self.cfg.upsert_batch, self.cfg.upsert_workers) as upserter:
            for obj in self._parsed(gz_path):
                if obj["kind"] == "collection":
                    upserter.flush()
                    upserter.collection = self.client.create_collection(
                        name=obj["name"] + STAGING_SUFFIX,
                        metadata=obj.get("metadata") or None,
                        configuration=_restorable_config(obj.get("configuration")),
                        embedding_function=None,
                    )
                    restored[obj["name"]] = 0
                elif obj["kind"] == "records" and obj["ids"]:
                    upserter.add(obj)
                    restored[obj["collection"]] += len(obj["ids"])
        return restored

    def _check_staged(self, manifest: Manifest) -> None:
        """Each staging collection against the manifest: its count, and its content where recorded."""
        for name, want in manifest.counts["collections"].items():
            staged = self.client.get_collection(name + STAGING_SUFFIX)
            if manifest.content.get(name):
                problems = self.digest(staged).differences(manifest.content[name])
            else:  # a backup from before content digests: its count is all there is
                have = staged.count()
                problems = [] if have == want else [f"{have} records, expected {want}"]
            if problems:
                raise StoreError(f"restored collection {name!r} does not match the backup: {'; '.join(problems)}")

    def _swap(self, names: list[str]) -> None:
        """Give each staging collection its live name; the live one is renamed aside first, then dropped."""
        for name in names:
            existing = self._existing()
            aside = name + REPLACED_SUFFIX
            if aside in existing:  # left by a swap that was interrupted: the restore replaces it anyway
                self.client.delete_collection(aside)
            if name in existing:
                existing[name].modify(name=aside)
            existing[name + STAGING_SUFFIX].modify(name=name)
            if name in existing:
                self.client.delete_collection(aside)
                log("chroma.collection_replaced", collection=name)

    def restore(self, gz_path: Path, manifest: Manifest, force: bool, work_dir: Path) -> dict[str, Any]:
        names = sorted(manifest.counts.get("collections", {}))
        try:
            self._prepare_target(names, force)
            restored = self._load(gz_path)
            self._check_staged(manifest)
            self._swap(names)
            for name, want in manifest.counts["collections"].items():
                have = self.client.get_collection(name).count()
                if have != want:
                    raise StoreError(f"after restore collection {name!r} has {have} records, expected {want}")
        except (RefusedError, StoreError):
            raise
        except Exception as exc:  # chromadb raises many unrelated types; report one clear line
            raise StoreError(f"restore into Chroma failed (safe to re-run with --force): {exc}") from exc
        return {"collections": restored, "records": sum(restored.values())}


class _IdSet:
    """64-bit hashes of a collection's ids (8 bytes each, not a Python set of strings), to find repeats."""

    def __init__(self) -> None:
        self._chunks: list[Any] = []

    def add(self, ids: list[str]) -> None:
        hashes = [int.from_bytes(hashlib.blake2b(i.encode(), digest_size=8).digest(), "big") for i in ids]
        self._chunks.append(np.array(hashes, dtype=np.uint64))

    def repeats(self) -> int:
        """Ids seen more than once (a false alarm needs two ids whose hashes collide: odds about n**2 / 2**65)."""
        if not self._chunks:
            return 0
        every = np.sort(np.concatenate(self._chunks))
        return int(np.count_nonzero(every[1:] == every[:-1]))


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
