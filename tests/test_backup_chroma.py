"""Chroma backup/restore against a real ``chroma run`` server on loopback."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from backup_servers import ChromaServer, chroma, chroma_server, dump_object, error_of, run_cli

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


def test_roundtrip_every_record(chroma: ChromaServer, tmp_path: Path) -> None:
    populate(chroma)
    before = snapshot(chroma)
    code, lines = run_cli("backup", "chroma", *args(chroma, tmp_path))
    assert code == 0, lines
    done = next(line for line in lines if line["event"] == "backup.done")
    assert done["counts"] == {"collections": {"big.collection": 230, "code-chunks": 40, "sparse": 3}, "records": 273}

    chroma.wipe()
    code, lines = run_cli("restore", "chroma", "--latest", *args(chroma, tmp_path))
    assert code == 0, lines
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


@pytest.mark.parametrize("damage", ["checksum", "truncated_gzip", "dropped_page", "bad_embedding"])
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
        record["embeddings"][0] = "!!not base64!!"
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
    }[damage]
    assert expected in message, message
    assert snapshot(chroma) == before


def test_unreachable_server_is_a_clear_error(tmp_path: Path) -> None:
    code, lines = run_cli(
        "backup", "chroma", "--target", f"file://{tmp_path}", "--chroma-host", "127.0.0.1", "--chroma-port", "9"
    )
    assert code == 1
    assert "cannot reach Chroma" in error_of(lines)
