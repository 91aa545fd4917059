"""Chroma backup/restore against a real ``chroma run`` server on loopback."""

from __future__ import annotations

import gzip
import hashlib
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from backup_servers import ChromaServer, chroma, chroma_server, dump_object, error_of, run_cli
from rendered import of_kind

from kgbackup import pipeline
from kgbackup.chroma_store import _Upserter, encode_embedding

pytestmark = pytest.mark.backup
__all__ = ["chroma", "chroma_server"]  # fixtures used by this module

DIM = 16


def populate(server: ChromaServer) -> None:
    """Three collections: custom metadata/space, sparse documents, and several pages."""
    client = server.client()
    rng = np.random.default_rng(7)
    docs = client.create_collection(
        "code-chunks", metadata={"owner": "indexer", "hnsw:space": "cosine"}, embedding_function=None
    )
    docs.add(
        ids=[f"c{i}" for i in range(40)],
        embeddings=rng.random((40, DIM), dtype=np.float32).tolist(),
        documents=[f"def f{i}(): return {i}  # ünïcode" for i in range(40)],
        metadatas=[{"repo": "r1", "line": i, "score": i / 3, "main": i % 2 == 0} for i in range(40)],
    )
    sparse = client.create_collection("sparse", embedding_function=None)
    sparse.add(
        ids=["a", "b", "c"],
        embeddings=rng.random((3, DIM), dtype=np.float32).tolist(),
        documents=["only a", None, "only c"],
        metadatas=[None, {"k": "v"}, None],
    )
    big = client.create_collection("big.collection", metadata={"hnsw:space": "ip"}, embedding_function=None)
    big.add(ids=[f"id-{i:04d}" for i in range(230)], embeddings=rng.random((230, DIM), dtype=np.float32).tolist())


def snapshot(server: ChromaServer) -> dict[str, Any]:
    """Every collection with its metadata, index config and records, order-independent.

    Embeddings are compared bit for bit, except in cosine collections: there
    Chroma itself returns each vector 1 ulp off what was written (it keeps them
    normalised), so a write-read cycle cannot be exact and we allow 1e-6.
    """
    out: dict[str, Any] = {}
    for col in server.client().list_collections():
        got = col.get(include=["embeddings", "documents", "metadatas"])
        exact = col.configuration_json["hnsw"]["space"] != "cosine"
        records = {
            rid: (Vector(emb, exact), doc, meta)
            for rid, emb, doc, meta in zip(
                got["ids"], got["embeddings"], got["documents"], got["metadatas"], strict=True
            )
        }
        out[col.name] = (col.metadata, col.configuration_json["hnsw"], records)
    return out


class Vector:
    """An embedding that compares exactly, or within float32 rounding for cosine."""

    def __init__(self, values: Any, exact: bool) -> None:
        self.values = np.asarray(values, dtype=np.float32)
        self.exact = exact

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Vector) or self.values.shape != other.values.shape:
            return False
        if self.exact:
            return self.values.tobytes() == other.values.tobytes()
        return bool(np.allclose(self.values, other.values, rtol=1e-6, atol=0))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Vector({self.values[:3]}...)"


def args(server: ChromaServer, tmp_path: Path) -> list[str]:
    return [
        "--target", f"file://{tmp_path / 'backups'}",
        "--chroma-host", "127.0.0.1",
        "--chroma-port", str(server.port),
        "--chroma-page-size", "50",
    ]  # fmt: skip


# (records per upsert, upserts in flight): the defaults, batches smaller than a dump page
# and spanning collections' ends, and batches larger than a page (several lines merged).
@pytest.mark.parametrize("upserts", [(), ("7", "3"), ("120", "1")], ids=["defaults", "small", "merged"])
def test_roundtrip_every_record(chroma: ChromaServer, tmp_path: Path, upserts: tuple[str, ...]) -> None:
    populate(chroma)
    before = snapshot(chroma)
    code, lines = run_cli("backup", "chroma", *args(chroma, tmp_path))
    assert code == 0, lines
    done = next(line for line in lines if line["event"] == "backup.done")
    assert done["counts"] == {"collections": {"big.collection": 230, "code-chunks": 40, "sparse": 3}, "records": 273}

    chroma.wipe()
    tuning = ["--chroma-upsert-batch", upserts[0], "--chroma-upsert-workers", upserts[1]] if upserts else []
    code, lines = run_cli("restore", "chroma", "--latest", *args(chroma, tmp_path), *tuning)
    assert code == 0, lines
    assert snapshot(chroma) == before


class FakeCollection:
    """Records each upsert's size and how many ran at once; fails the ``fail_at``-th one."""

    name = "fake"

    def __init__(self, fail_at: int = 0) -> None:
        self.sizes: list[int] = []
        self.active = 0
        self.most_active = 0
        self.fail_at = fail_at
        self.lock = threading.Lock()

    def upsert(self, ids: list[str], embeddings: list[Any], documents: list[Any], metadatas: list[Any]) -> None:
        with self.lock:
            self.active += 1
            self.most_active = max(self.most_active, self.active)
            self.sizes.append(len(ids))
            number = len(self.sizes)
        try:
            assert len(embeddings) == len(documents) == len(metadatas) == len(ids)
            assert all(e.dtype == np.float32 and e.shape == (DIM,) for e in embeddings)
            if number == self.fail_at:
                raise RuntimeError("server said no")
        finally:
            with self.lock:
                self.active -= 1


def page(start: int, n: int) -> dict[str, Any]:
    vectors = np.arange(start * DIM, (start + n) * DIM, dtype=np.float32).reshape(n, DIM)
    return {
        "ids": [f"r{i}" for i in range(start, start + n)],
        "embeddings": [encode_embedding(v) for v in vectors],
        "documents": [None] * n,
        "metadatas": [None] * n,
    }


def test_upserts_are_rebatched_and_bounded() -> None:
    col = FakeCollection()
    with _Upserter(size=40, workers=3) as upserter:
        upserter.collection = col
        for start in range(0, 250, 25):  # ten 25-record pages
            upserter.add(page(start, 25))
            assert len(upserter._in_flight) <= 3  # never more queued than workers
            assert len(upserter._batch.ids) < 40  # the buffer holds less than one batch
    assert sorted(col.sizes) == [10] + [40] * 6
    assert col.most_active <= 3


def test_failed_upsert_stops_the_load() -> None:
    col = FakeCollection(fail_at=2)
    with pytest.raises(RuntimeError, match="server said no"), _Upserter(size=10, workers=2) as upserter:
        upserter.collection = col
        for start in range(0, 1000, 10):
            upserter.add(page(start, 10))
    assert len(col.sizes) < 10  # stopped within a couple of batches, not after all 100


def test_overlong_dump_line_is_refused_untouched(chroma: ChromaServer, tmp_path: Path, monkeypatch: Any) -> None:
    """Lines are read with a cap: a dump line longer than any we write is damage, not a reason to grow."""
    populate(chroma)
    assert run_cli("backup", "chroma", *args(chroma, tmp_path))[0] == 0
    chroma.client().get_collection("sparse").delete(ids=["a"])
    before = snapshot(chroma)
    monkeypatch.setattr(pipeline, "MAX_LINE_BYTES", 4096)  # a 50-record page of 16-d vectors is longer
    code, out = run_cli("restore", "chroma", "--latest", "--force", *args(chroma, tmp_path))
    assert code == 1
    assert "longer than 4096 bytes" in error_of(out)
    assert snapshot(chroma) == before


def test_refuses_non_empty_but_replaces_empty_collection(chroma: ChromaServer, tmp_path: Path) -> None:
    populate(chroma)
    before = snapshot(chroma)
    assert run_cli("backup", "chroma", *args(chroma, tmp_path))[0] == 0

    client = chroma.client()
    client.delete_collection("code-chunks")
    client.create_collection("code-chunks", embedding_function=None)  # the app's empty start-up collection
    client.get_collection("sparse").delete(ids=["a"])
    code, lines = run_cli("restore", "chroma", "--latest", *args(chroma, tmp_path))
    assert code == 1
    assert "not empty" in error_of(lines) and "'sparse': 2" in error_of(lines)
    assert client.get_collection("sparse").count() == 2 and client.get_collection("big.collection").count() == 230

    for _ in range(2):  # forced restore, run twice: same result
        code, lines = run_cli("restore", "chroma", "--latest", "--force", *args(chroma, tmp_path))
        assert code == 0, lines
        assert snapshot(chroma) == before


@pytest.mark.parametrize(
    "damage", ["checksum", "truncated_gzip", "dropped_page", "bad_embedding", "changed_document", "repeated_id"]
)
def test_damaged_dump_leaves_store_untouched(chroma: ChromaServer, tmp_path: Path, damage: str) -> None:
    populate(chroma)
    assert run_cli("backup", "chroma", *args(chroma, tmp_path))[0] == 0
    obj, manifest = dump_object(tmp_path / "backups", "chroma")
    lines = gzip.decompress(obj.read_bytes()).splitlines(keepends=True)
    if damage == "checksum":
        data = bytearray(obj.read_bytes())
        data[len(data) // 2] ^= 0xFF
        payload = bytes(data)
    elif damage == "truncated_gzip":
        payload = obj.read_bytes()[:-200]
    elif damage == "dropped_page":
        page = next(i for i, line in enumerate(lines) if b'"collection":"big.collection"' in line)
        payload = gzip.compress(b"".join(lines[:page] + lines[page + 1 :]))
    else:
        page = next(i for i, line in enumerate(lines) if b'"kind":"records"' in line)
        record = json.loads(lines[page])
        if damage == "bad_embedding":
            record["embeddings"][0] = "!!not base64!!"
        elif damage == "changed_document":  # same count, same ids: only the content digest tells
            record["documents"][0] = "tampered"
        else:  # what a dump taken under writes with reused ids held: the restore's upsert failed on it
            record["ids"][1] = record["ids"][0]
        lines[page] = (json.dumps(record) + "\n").encode()
        payload = gzip.compress(b"".join(lines))
    obj.write_bytes(payload)
    if damage != "checksum":  # a bad upload whose manifest still agrees with it
        meta = json.loads(manifest.read_text())
        meta.update(sha256=hashlib.sha256(payload).hexdigest(), size_bytes=len(payload))
        manifest.write_text(json.dumps(meta))

    chroma.client().get_collection("sparse").delete(ids=["a", "b", "c"])
    before = snapshot(chroma)
    code, out = run_cli("restore", "chroma", "--latest", "--force", *args(chroma, tmp_path))
    assert code == 1
    message = error_of(out)
    expected = {
        "checksum": "sha256 mismatch",
        "truncated_gzip": "does not decompress",
        "dropped_page": "does not match its end marker",
        "bad_embedding": "bad embedding",
        "changed_document": "does not match the manifest: record contents",
        "repeated_id": "1 id(s) appear more than once",
    }[damage]
    assert expected in message, message
    assert snapshot(chroma) == before


def test_unreachable_server_is_a_clear_error(tmp_path: Path) -> None:
    code, lines = run_cli(
        "backup", "chroma", "--target", f"file://{tmp_path}", "--chroma-host", "127.0.0.1", "--chroma-port", "9"
    )
    assert code == 1
    assert "cannot reach Chroma" in error_of(lines)


def live_records(server: ChromaServer, name: str) -> dict[str, Any]:
    got = server.client().get_collection(name).get(include=["embeddings", "documents", "metadatas"])
    return {
        rid: (np.asarray(emb, dtype=np.float32).tobytes(), doc, meta)
        for rid, emb, doc, meta in zip(got["ids"], got["embeddings"], got["documents"], got["metadatas"], strict=True)
    }


class IndexerDuringBackup:
    """The agent's incremental re-index, run between two pages of the backup's dump pass.

    After the first page of the dump passes in ``attempts``, a second client
    deletes 10 records of that page and adds 10: with new ids, or with the same
    ids and new contents. The count never changes.
    """

    def __init__(self, server: ChromaServer, reused_ids: bool, attempts: set[int]) -> None:
        self.writer = server.client().get_collection("code-chunks")
        self.reused_ids, self.attempts = reused_ids, attempts
        self.passes = 0  # a pass starts at offset 0: dump, verification, dump, ...
        self.added = 0

    def after_get(self, col: Any, offset: int, ids: list[str]) -> None:
        if col.name != "code-chunks":
            return
        if offset == 0:
            self.passes += 1
        attempt, dumping = (self.passes + 1) // 2, self.passes % 2 == 1
        if not (dumping and offset == 0 and attempt in self.attempts):
            return
        gone = ids[:10]
        self.writer.delete(ids=gone)
        new_ids = gone if self.reused_ids else [f"new-{self.added + i}" for i in range(10)]
        self.added += 10
        rng = np.random.default_rng(self.added)
        self.writer.add(
            ids=new_ids,
            embeddings=rng.random((10, DIM), dtype=np.float32).tolist(),
            documents=[f"re-indexed {i}" for i in new_ids],
            metadatas=[{"file_path": f"src/{i}.py", "round": self.added} for i in new_ids],
        )


@pytest.fixture
def indexer_during_backup(chroma: ChromaServer, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A factory of IndexerDuringBackup hooked into every ``Collection.get`` the backup makes."""
    from chromadb.api.models.Collection import Collection

    original = Collection.get
    hooks: list[IndexerDuringBackup] = []

    def get(self: Any, *args: Any, **kwargs: Any) -> Any:
        page = original(self, *args, **kwargs)
        for hook in hooks:
            hook.after_get(self, kwargs.get("offset") or 0, list(page["ids"]))
        return page

    monkeypatch.setattr(Collection, "get", get)

    def make(reused_ids: bool, attempts: set[int]) -> IndexerDuringBackup:
        hooks.append(IndexerDuringBackup(chroma, reused_ids, attempts))
        return hooks[-1]

    return make


def thousand_chunks(server: ChromaServer) -> None:
    col = server.client().create_collection("code-chunks", embedding_function=None)
    rng = np.random.default_rng(11)
    col.add(
        ids=[f"chunk-{i:04d}" for i in range(1000)],
        embeddings=rng.random((1000, DIM), dtype=np.float32).tolist(),
        documents=[f"def f{i}(): pass" for i in range(1000)],
        metadatas=[{"file_path": f"src/m{i // 10}.py", "chunk": i % 10} for i in range(1000)],
    )


def concurrent_args(server: ChromaServer, tmp_path: Path, attempts: int, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    # Through the environment, as the CronJob sets them (and a tool without them runs the same test).
    monkeypatch.setenv("KGB_CHROMA_ATTEMPTS", str(attempts))
    monkeypatch.setenv("KGB_CHROMA_RETRY_SECONDS", "0")
    return [*args(server, tmp_path), "--chroma-page-size", "100"]


@pytest.mark.parametrize("reused_ids", [False, True], ids=["new-ids", "reused-ids"])
def test_writes_during_backup_give_one_point_in_time(
    chroma: ChromaServer,
    tmp_path: Path,
    indexer_during_backup: Any,
    reused_ids: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first dump sees the re-index half-way; the verification pass notices, the retry is clean.

    The restore then holds exactly the records that were live after the
    re-index (which is when the second dump ran): no deleted chunk, no missed one.
    """
    thousand_chunks(chroma)
    indexer_during_backup(reused_ids, attempts={1})
    code, lines = run_cli("backup", "chroma", *concurrent_args(chroma, tmp_path, 3, monkeypatch))
    assert code == 0, lines
    backup_log = lines
    live = live_records(chroma, "code-chunks")
    assert len(live) == 1000

    chroma.wipe()
    code, lines = run_cli("restore", "chroma", "--latest", *args(chroma, tmp_path))
    assert code == 0, lines
    assert live_records(chroma, "code-chunks") == live
    retries = [line for line in backup_log if line["event"] == "backup.retry"]
    assert len(retries) == 1 and "'code-chunks'" in retries[0]["reason"], backup_log
    print(f"\nretried: {retries[0]['reason']}; restored {len(live)} records, exactly the live ones")


@pytest.mark.parametrize("reused_ids", [False, True], ids=["new-ids", "reused-ids"])
def test_backup_that_keeps_changing_is_refused(
    chroma: ChromaServer,
    tmp_path: Path,
    indexer_during_backup: Any,
    reused_ids: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    thousand_chunks(chroma)
    indexer_during_backup(reused_ids, attempts={1, 2})
    code, lines = run_cli("backup", "chroma", *concurrent_args(chroma, tmp_path, 2, monkeypatch))
    assert code == 1
    message = error_of(lines)
    assert "changed during each of 2 dump(s)" in message and "'code-chunks'" in message, message
    assert "nothing was recorded" in message
    print(f"\nrefused: {message}")
    code, lines = run_cli("verify", "chroma", "--latest", *args(chroma, tmp_path))
    assert code == 1 and "no complete chroma backup" in error_of(lines)


@pytest.mark.parametrize("failure", ["during-load", "during-swap"])
def test_failed_forced_restore_leaves_live_data_and_reruns(
    chroma: ChromaServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    """A forced restore that dies part-way never leaves a store that the next run cannot restore."""
    from kgbackup import chroma_store

    populate(chroma)
    backed_up = snapshot(chroma)
    assert run_cli("backup", "chroma", *args(chroma, tmp_path))[0] == 0
    chroma.client().get_collection("big.collection").delete(ids=["id-0001", "id-0002"])
    live = snapshot(chroma)

    with monkeypatch.context() as patch:
        if failure == "during-load":
            calls = iter(range(1000))

            def upsert(col: Any, batch: Any) -> None:
                if next(calls) == 2:
                    raise RuntimeError("connection reset by peer")
                col.upsert(ids=batch.ids, embeddings=batch.embeddings, documents=batch.documents,
                           metadatas=batch.metadatas)  # fmt: skip

            patch.setattr(chroma_store._Upserter, "_upsert", staticmethod(upsert))
        else:

            def swap(self: Any, names: list[str]) -> None:
                self.client.get_collection(names[0]).modify(name=names[0] + chroma_store.REPLACED_SUFFIX)
                raise RuntimeError("pod evicted")  # after renaming the live collection aside

            patch.setattr(chroma_store.ChromaStore, "_swap", swap)
        code, lines = run_cli("restore", "chroma", "--latest", "--force", *args(chroma, tmp_path))
    assert code == 1 and "safe to re-run with --force" in error_of(lines)
    if failure == "during-load":
        staged = {c.name for c in chroma.client().list_collections()} - set(live)
        assert staged and all(name.endswith(".kgbackup-staging") for name in staged)
        assert {k: v for k, v in snapshot(chroma).items() if k in live} == live  # the live data is untouched
        # A nightly backup meanwhile leaves the leftover out: it backs up the live collections only.
        code, lines = run_cli("backup", "chroma", *args(chroma, tmp_path / "meanwhile"))
        assert code == 0, lines
        assert set(next(line for line in lines if line["event"] == "backup.done")["counts"]["collections"]) == set(live)

    for _ in range(2):  # the plain re-run succeeds, and so does the next
        code, lines = run_cli("restore", "chroma", "--latest", "--force", *args(chroma, tmp_path))
        assert code == 0, lines
        assert snapshot(chroma) == backed_up  # no staging or replaced collection left either


def test_wiped_store_backup_is_held_and_latest_stays_good(chroma: ChromaServer, tmp_path: Path) -> None:
    populate(chroma)
    before = snapshot(chroma)
    assert run_cli("backup", "chroma", *args(chroma, tmp_path))[0] == 0
    chroma.wipe()
    code, lines = run_cli("backup", "chroma", *args(chroma, tmp_path))
    assert code == 0, lines  # kept, so that the Job does not retry into more of them
    (held,) = [line for line in lines if line["event"] == "backup.held"]
    assert held["reason"] == "the store is empty" and held["level"] == "warning"
    code, lines = run_cli("restore", "chroma", "--latest", *args(chroma, tmp_path))
    assert code == 0, lines
    assert snapshot(chroma) == before


def test_a_held_scheduled_backup_fails_its_job_without_retries(chroma: ChromaServer, tmp_path: Path) -> None:
    """dist/prod's backup CronJob, run as rendered against a wiped store, exits with a code its Job's
    podFailurePolicy turns into an immediate failure (KgaBackupJobFailed), not a success or a retry."""
    (cron,) = [c for c in of_kind("prod", "CronJob") if c["metadata"]["name"].endswith("-backup-chroma")]
    job = cron["spec"]["jobTemplate"]["spec"]
    (container,) = job["template"]["spec"]["containers"]

    def fails_job_at_once(code: int) -> bool:
        return any(
            rule["action"] == "FailJob"
            and rule["onExitCodes"].get("containerName", container["name"]) == container["name"]
            and (code in rule["onExitCodes"]["values"]) == (rule["onExitCodes"]["operator"] == "In")
            for rule in job.get("podFailurePolicy", {}).get("rules", [])
            if "onExitCodes" in rule
        )

    populate(chroma)
    code, lines = run_cli(*container["args"], *args(chroma, tmp_path))
    assert code == 0 and not fails_job_at_once(code), lines
    chroma.wipe()
    code, lines = run_cli(*container["args"], *args(chroma, tmp_path))
    assert any(line["event"] == "backup.held" for line in lines), lines
    assert code != 0 and fails_job_at_once(code), (code, job.get("podFailurePolicy"))


def test_backup_without_content_digest_restores_by_count(chroma: ChromaServer, tmp_path: Path) -> None:
    """A manifest written before content digests (no ``content``, no ``held``) still verifies and restores."""
    populate(chroma)
    before = snapshot(chroma)
    assert run_cli("backup", "chroma", *args(chroma, tmp_path))[0] == 0
    _, manifest = dump_object(tmp_path / "backups", "chroma")
    old = json.loads(manifest.read_text())
    del old["content"], old["held"]
    manifest.write_text(json.dumps(old))
    chroma.wipe()
    code, lines = run_cli("restore", "chroma", "--latest", *args(chroma, tmp_path))
    assert code == 0, lines
    assert snapshot(chroma) == before
