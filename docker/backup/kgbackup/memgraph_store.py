"""Memgraph: ``DUMP DATABASE;`` over bolt, restored by replaying the statements.

The dump is JSON Lines, one Cypher statement per line (JSON keeps statements
that contain newlines intact). Node and relationship statements have a fixed
shape in Memgraph's dump, so counting them gives exact counts that the
restore checks before it starts and against the live graph when it ends.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from kgbackup.errors import CorruptDumpError, RefusedError, StoreError
from kgbackup.logjson import log
from kgbackup.manifest import DumpWriter, Manifest
from kgbackup.pipeline import DumpInfo, read_gzip_lines

NODE_PREFIX = "CREATE (:__mg_vertex__"
EDGE_PREFIX = "MATCH (u:__mg_vertex__), (v:__mg_vertex__)"
COUNT_NODES = "MATCH (n) RETURN count(n) AS c"
COUNT_EDGES = "MATCH ()-[r]->() RETURN count(r) AS c"
WIPE = "MATCH (n) DETACH DELETE n"


class Result(Protocol):
    def __iter__(self) -> Iterator[Any]: ...

    def consume(self) -> Any: ...


class Transaction(Protocol):
    def run(self, query: str) -> Result: ...

    def commit(self) -> None: ...

    def rollback(self) -> None: ...


class Session(Protocol):
    """The slice of ``neo4j.Session`` we use; tests pass a fake with the same shape."""

    def run(self, query: str) -> Result: ...

    def begin_transaction(self) -> Transaction: ...


@dataclass
class MemgraphConfig:
    url: str
    user: str | None = None
    password: str | None = None
    batch: int = 500


def classify(statement: str) -> str:
    """``node``, ``edge``, or ``other`` (indexes, constraints, triggers, clean-up)."""
    if statement.startswith(NODE_PREFIX):
        return "node"
    if statement.startswith(EDGE_PREFIX):
        return "edge"
    return "other"


def _scalar(session: Session, query: str) -> int:
    for record in session.run(query):
        return int(record["c"])
    raise StoreError(f"no result for {query!r}")


class MemgraphStore:
    kind = "memgraph"
    # DUMP DATABASE is one transaction; a dump is retried only while the indexer is busy (KGB_INDEXER_URL).
    dump_attempts = 3
    retry_seconds = 60.0
    extension = "cypher.jsonl"

    def __init__(self, cfg: MemgraphConfig, session: Session | None = None) -> None:
        self.cfg = cfg
        self._session = session
        self._driver: Any = None

    @property
    def session(self) -> Session:
        if self._session is None:
            import neo4j  # deferred: only this store needs the bolt driver

            auth = (self.cfg.user or "", self.cfg.password or "") if self.cfg.user or self.cfg.password else None
            try:
                self._driver = neo4j.GraphDatabase.driver(self.cfg.url, auth=auth)
                self._driver.verify_connectivity()
            except (neo4j.exceptions.Neo4jError, neo4j.exceptions.DriverError, OSError) as exc:
                raise StoreError(f"cannot reach Memgraph at {self.cfg.url}: {exc}") from exc
            self._session = self._driver.session()
        return self._session

    def dump(self, out: DumpWriter, work_dir: Path) -> DumpInfo:
        counts = {"node": 0, "edge": 0, "other": 0}
        # The driver pulls records in batches, so the dump streams through.
        for record in self.session.run("DUMP DATABASE"):
            statement = str(record["QUERY"])
            out.write((json.dumps(statement, ensure_ascii=False) + "\n").encode())
            counts[classify(statement)] += 1
        total = sum(counts.values())
        log("memgraph.dumped", statements=total, nodes=counts["node"], relationships=counts["edge"])
        return DumpInfo(counts={"statements": total, "nodes": counts["node"], "relationships": counts["edge"]})

    def _statements(self, gz_path: Path) -> Iterator[str]:
        for number, raw in enumerate(read_gzip_lines(gz_path), start=1):
            try:
                statement = json.loads(raw)
            except ValueError as exc:
                raise CorruptDumpError(f"{gz_path.name} line {number}: not JSON ({exc})") from exc
            if not isinstance(statement, str):
                raise CorruptDumpError(f"{gz_path.name} line {number}: not a statement")
            yield statement

    def check_dump(self, gz_path: Path, manifest: Manifest, work_dir: Path) -> None:
        counts = {"node": 0, "edge": 0, "other": 0}
        for statement in self._statements(gz_path):
            counts[classify(statement)] += 1
        found = {"statements": sum(counts.values()), "nodes": counts["node"], "relationships": counts["edge"]}
        expected = {k: manifest.counts.get(k) for k in found}
        if found != expected:
            raise CorruptDumpError(f"backup {manifest.backup_id}: dump holds {found}, manifest says {expected}")

    def _prepare_target(self, force: bool) -> None:
        nodes = _scalar(self.session, COUNT_NODES)
        if nodes and not force:
            raise RefusedError(f"target Memgraph holds {nodes} nodes; re-run with --force to replace the graph")
        if nodes:
            self.session.run(WIPE).consume()
            log("memgraph.wiped", nodes=nodes)

    def _replay(self, statements: Iterable[str]) -> int:
        """Node/edge statements go in transactions of ``batch``; schema statements
        (indexes, constraints) must run on their own in Memgraph."""
        tx: Transaction | None = None
        pending = replayed = 0
        for statement in statements:
            if classify(statement) == "other":
                if tx is not None:
                    tx.commit()
                    tx, pending = None, 0
                self.session.run(statement).consume()
            else:
                tx = tx or self.session.begin_transaction()
                tx.run(statement).consume()
                pending += 1
                if pending >= self.cfg.batch:
                    tx.commit()
                    tx, pending = None, 0
            replayed += 1
        if tx is not None:
            tx.commit()
        return replayed

    def restore(self, gz_path: Path, manifest: Manifest, force: bool, work_dir: Path) -> dict[str, Any]:
        import neo4j

        try:
            self._prepare_target(force)
            replayed = self._replay(self._statements(gz_path))
            nodes = _scalar(self.session, COUNT_NODES)
            edges = _scalar(self.session, COUNT_EDGES)
        except neo4j.exceptions.Neo4jError as exc:
            raise StoreError(f"replay into Memgraph failed (safe to re-run with --force): {exc}") from exc
        if (nodes, edges) != (manifest.counts["nodes"], manifest.counts["relationships"]):
            raise StoreError(
                f"after restore the graph has {nodes} nodes / {edges} relationships, expected "
                f"{manifest.counts['nodes']} / {manifest.counts['relationships']}"
            )
        return {"statements": replayed, "nodes": nodes, "relationships": edges}

    def close(self) -> None:
        if self._driver is not None:
            self._driver.close()
