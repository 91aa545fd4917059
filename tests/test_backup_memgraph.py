"""Memgraph dump/restore logic, driven through a fake bolt driver.

No Memgraph server can run here, so these tests prove the tool's side only:
statement streaming, JSON-lines framing, counting, batching (schema statements
outside transactions), refusal/force, verification and error reporting. They do
NOT prove that Memgraph accepts the replayed statements or reports counts as
the fake does; see docs/backup-restore.md.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import neo4j
import pytest
from backup_servers import IndexerApi, dump_object, error_of, run_cli

from kgbackup.memgraph_store import COUNT_EDGES, COUNT_NODES, WIPE, MemgraphStore, classify

pytestmark = pytest.mark.backup

# The shape of Memgraph 2.x `DUMP DATABASE;` output.
SAMPLE = [
    "CREATE INDEX ON :`Repo`(`name`);",
    "CREATE CONSTRAINT ON (u:`Repo`) ASSERT u.`name` IS UNIQUE;",
    "CREATE INDEX ON :__mg_vertex__(__mg_id__);",
    *[f'CREATE (:__mg_vertex__:`File` {{__mg_id__: {i}, `path`: "src/f{i}.py"}});' for i in range(1, 1201)],
    'CREATE (:__mg_vertex__:`Repo` {__mg_id__: 0, `name`: "kg \\"agent\\"", `doc`: "line1\nline2 ünï"});',
    *[
        "MATCH (u:__mg_vertex__), (v:__mg_vertex__) WHERE u.__mg_id__ = 0 AND v.__mg_id__ = "
        f"{i} CREATE (u)-[:`CONTAINS` {{`n`: {i}}}]->(v);"
        for i in range(1, 1201)
    ],
    "DROP INDEX ON :__mg_vertex__(__mg_id__);",
    "MATCH (u) REMOVE u:__mg_vertex__, u.__mg_id__;",
]


class FakeResult:
    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.records = records

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.records)

    def consume(self) -> None:
        return None


class FakeGraph:
    """Keeps the statements a real Memgraph would have executed, and answers counts."""

    def __init__(self, statements: list[str] | None = None) -> None:
        self.statements = list(statements or [])
        self.fail_at: int | None = None
        self.executed = 0
        self.tx_sizes: list[int] = []
        self.schema_in_tx = False

    def apply(self, statement: str) -> FakeResult:
        if statement == "DUMP DATABASE":
            return FakeResult([{"QUERY": s} for s in self.statements])
        if statement == COUNT_NODES:
            return FakeResult([{"c": sum(classify(s) == "node" for s in self.statements)}])
        if statement == COUNT_EDGES:
            return FakeResult([{"c": sum(classify(s) == "edge" for s in self.statements)}])
        if statement == WIPE:
            self.statements = [s for s in self.statements if classify(s) == "other"]
            return FakeResult([])
        self.executed += 1
        if self.fail_at is not None and self.executed >= self.fail_at:
            raise neo4j.exceptions.TransientError("simulated connection loss")
        self.statements.append(statement)
        return FakeResult([])


class FakeTx:
    def __init__(self, graph: FakeGraph) -> None:
        self.graph = graph
        self.pending: list[str] = []

    def run(self, query: str) -> FakeResult:
        if classify(query) == "other":
            self.graph.schema_in_tx = True  # Memgraph forbids index changes in a transaction
        self.pending.append(query)
        return FakeResult([])

    def commit(self) -> None:
        for statement in self.pending:
            self.graph.apply(statement)
        self.graph.tx_sizes.append(len(self.pending))

    def rollback(self) -> None:
        self.pending.clear()


class FakeSession:
    def __init__(self, graph: FakeGraph) -> None:
        self.graph = graph

    def run(self, query: str) -> FakeResult:
        return self.graph.apply(query)

    def begin_transaction(self) -> FakeTx:
        return FakeTx(self.graph)


class FakeDriver:
    def __init__(self, graph: FakeGraph) -> None:
        self.graph = graph

    def verify_connectivity(self) -> None:
        return None

    def session(self) -> FakeSession:
        return FakeSession(self.graph)

    def close(self) -> None:
        return None


@pytest.fixture
def graph(monkeypatch: pytest.MonkeyPatch) -> FakeGraph:
    fake = FakeGraph(SAMPLE)
    seen: dict[str, Any] = {}

    def driver(url: str, auth: Any = None) -> FakeDriver:
        seen.update(url=url, auth=auth)
        return FakeDriver(fake)

    monkeypatch.setattr(neo4j.GraphDatabase, "driver", driver)
    monkeypatch.setenv("GRAPH_STORE_PASSWORD", "mg-pw")
    fake.seen = seen  # type: ignore[attr-defined]
    return fake


def cli(tmp_path: Path, *argv: str) -> tuple[int, list[dict[str, Any]]]:
    return run_cli(
        *argv, "memgraph", "--target", f"file://{tmp_path / 'b'}", "--memgraph-url", "bolt://mg:7687",
        "--memgraph-user", "kg",
    )  # fmt: skip


def restore(tmp_path: Path, *extra: str) -> tuple[int, list[dict[str, Any]]]:
    return cli(tmp_path, "restore", "--latest", *extra)


def test_dump_counts_and_framing(graph: FakeGraph, tmp_path: Path) -> None:
    code, lines = cli(tmp_path, "backup")
    assert code == 0, lines
    assert graph.seen == {"url": "bolt://mg:7687", "auth": ("kg", "mg-pw")}  # type: ignore[attr-defined]
    obj, manifest = dump_object(tmp_path / "b", "memgraph")
    assert json.loads(manifest.read_text())["counts"] == {"statements": 2406, "nodes": 1201, "relationships": 1200}
    decoded = [json.loads(line) for line in gzip.decompress(obj.read_bytes()).splitlines()]
    assert decoded == SAMPLE  # newlines and quotes inside statements survive


def test_restore_replays_in_order_with_batches(graph: FakeGraph, tmp_path: Path) -> None:
    assert cli(tmp_path, "backup")[0] == 0
    graph.statements = []
    code, lines = restore(tmp_path)
    assert code == 0, lines
    assert graph.statements == SAMPLE
    assert not graph.schema_in_tx
    assert max(graph.tx_sizes) == 500 and sum(graph.tx_sizes) == 2401


def test_refuses_non_empty_graph_then_force_is_idempotent(graph: FakeGraph, tmp_path: Path) -> None:
    assert cli(tmp_path, "backup")[0] == 0
    code, lines = restore(tmp_path)
    assert code == 1
    assert "holds 1201 nodes" in error_of(lines)
    for _ in range(2):
        code, lines = restore(tmp_path, "--force")
        assert code == 0, lines
        nodes = [s for s in graph.statements if classify(s) != "other"]
        assert nodes == [s for s in SAMPLE if classify(s) != "other"]


def test_partial_failure_is_reported_and_rerun_with_force_recovers(graph: FakeGraph, tmp_path: Path) -> None:
    assert cli(tmp_path, "backup")[0] == 0
    graph.statements = []
    graph.fail_at = 900
    code, lines = restore(tmp_path)
    assert code == 1
    assert "safe to re-run with --force" in error_of(lines)
    graph.fail_at = None
    code, lines = restore(tmp_path, "--force")
    assert code == 0, lines
    assert [s for s in graph.statements if classify(s) != "other"] == [s for s in SAMPLE if classify(s) != "other"]


def test_count_mismatch_after_replay_is_an_error(graph: FakeGraph, tmp_path: Path, monkeypatch: Any) -> None:
    assert cli(tmp_path, "backup")[0] == 0
    graph.statements = []
    original = graph.apply

    def lossy(statement: str) -> FakeResult:  # a server that silently drops one edge
        if statement.endswith("v.__mg_id__ = 7 CREATE (u)-[:`CONTAINS` {`n`: 7}]->(v);"):
            return FakeResult([])
        return original(statement)

    monkeypatch.setattr(graph, "apply", lossy)
    code, lines = restore(tmp_path)
    assert code == 1
    assert "1199 relationships, expected 1201 / 1200" in error_of(lines)


def test_tampered_dump_is_rejected_before_touching_graph(graph: FakeGraph, tmp_path: Path) -> None:
    assert cli(tmp_path, "backup")[0] == 0
    obj, manifest = dump_object(tmp_path / "b", "memgraph")
    lines = gzip.decompress(obj.read_bytes()).splitlines(keepends=True)
    payload = gzip.compress(b"".join(lines[:-10]))  # a dump cut short, but a valid gzip
    obj.write_bytes(payload)
    meta = json.loads(manifest.read_text())
    meta.update(sha256=hashlib.sha256(payload).hexdigest(), size_bytes=len(payload))
    manifest.write_text(json.dumps(meta))
    graph.statements = ["CREATE INDEX ON :`Repo`(`name`);"]
    code, out = restore(tmp_path, "--force")
    assert code == 1
    assert "manifest says" in error_of(out)
    assert graph.statements == ["CREATE INDEX ON :`Repo`(`name`);"]


def test_the_backup_waits_for_the_indexer_and_the_restore_hands_its_tracker_back(
    graph: FakeGraph, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 25: the indexer's commit tracker is ahead of a restored graph as it is of a restored Chroma.
    A Memgraph backup dumps only while no indexing workflow runs, records the tracker, and the restore
    prints it in ``restore.done`` for the plan's tracker step (tests/test_backup_indexer.py replays it)."""
    tracker = {"acme/shop#main": {"repository": "acme/shop", "branch": "main", "last_commit": "abc123"}}
    busy = [True]
    indexer = IndexerApi(lambda: tracker, lambda: busy[0])
    monkeypatch.setattr(MemgraphStore, "retry_seconds", 0.0)
    try:
        code, lines = cli(tmp_path, "backup", "--indexer-url", indexer.url)
        assert code == 1 and "indexing workflow(s) wf-1 running" in error_of(lines)
        assert len([line for line in lines if line["event"] == "backup.retry"]) == MemgraphStore.dump_attempts - 1
        busy[0] = False
        code, lines = cli(tmp_path, "backup", "--indexer-url", indexer.url)
        assert code == 0, lines
    finally:
        indexer.close()
    _, manifest = dump_object(tmp_path / "b", "memgraph")
    assert json.loads(manifest.read_text())["source"]["indexed_commits"] == tracker
    code, lines = restore(tmp_path, "--force")
    assert code == 0, lines
    (done,) = [line for line in lines if line["event"] == "restore.done"]
    assert done["indexed_commits"] == tracker


def test_unreachable_memgraph_with_real_driver(tmp_path: Path) -> None:
    """The real neo4j driver against a closed port: one clear error line."""
    code, lines = run_cli(
        "backup", "memgraph", "--target", f"file://{tmp_path}", "--memgraph-url", "bolt://127.0.0.1:9"
    )
    assert code == 1
    assert "cannot reach Memgraph" in error_of(lines)
