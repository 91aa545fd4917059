"""The indexer's commit tracker across a backup and a restore (kgbackup.indexer), against a real Chroma.

The agent re-indexes incrementally: it diffs its repositories from the commit
recorded per repository in ``indexed_commits.json`` (src/utils/commit_tracker.py
of the app) to the branch head, deletes the chunks of removed, modified and
renamed files by their ``file_path`` metadata, adds chunks for added, modified
and renamed files under fresh ids, then records the head. ``StandInIndexer``
does exactly that with real git and a real Chroma server, and answers the two
routes a backup reads (``GET /api/v1/commits/tracking``, ``GET
/api/v1/workflows``) with the shapes of src/api/routes.py. The agent image's
own stand-in app is not used here: it has no indexing (tests/fixtures/agent-app).
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from backup_servers import ChromaServer, IndexerApi, chroma, chroma_server, error_of, run_cli

from kgstack.backup_schedule import TRACKER_FROM_RESTORE_LOG, TRACKER_WRITE

pytestmark = pytest.mark.backup
__all__ = ["chroma", "chroma_server"]  # fixtures used by this module

REPO = "acme/shop"
COLLECTION = "code-chunks"


def git(repo: Path, *argv: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *argv], check=True, capture_output=True, text=True).stdout.strip()


def commit(repo: Path, message: str, write: dict[str, str] | None = None, remove: tuple[str, ...] = ()) -> str:
    for name, text in (write or {}).items():
        (repo / name).write_text(text, encoding="utf-8")
    for name in remove:
        git(repo, "rm", "-q", name)
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", message)
    return git(repo, "rev-parse", "HEAD")


class StandInIndexer:
    """The app's incremental indexing, one chunk per file, on a real repository and Chroma."""

    def __init__(self, repo: Path, volume: Path, server: ChromaServer) -> None:
        self.repo, self.tracker_file, self.server = repo, volume / "indexed_commits.json", server
        self.busy = False
        self.api = IndexerApi(self._tracker, lambda: self.busy)
        self.url = self.api.url

    def _tracker(self) -> dict[str, Any]:
        return json.loads(self.tracker_file.read_text()) if self.tracker_file.exists() else {}

    def index(self) -> str:
        """One incremental run; returns its change type (full_index, no_changes or incremental)."""
        key = f"{REPO}#main"
        last = self._tracker().get(key, {}).get("last_commit")
        head = git(self.repo, "rev-parse", "HEAD")
        col = self.server.client().get_or_create_collection(COLLECTION, embedding_function=None)
        if last == head:
            return "no_changes"
        if last is None:
            change, remove, process = "full_index", set(), set(git(self.repo, "ls-files").splitlines())
        else:
            change, remove, process = "incremental", set(), set()
            for line in git(self.repo, "diff", "--name-status", "-M", last, head).splitlines():
                status, *paths = line.split("\t")
                if status[0] in "DMR":
                    remove.add(paths[0])
                if status[0] in "AM":
                    process.add(paths[0])
                if status[0] == "R":
                    process.add(paths[1])
        for path in sorted(remove):
            col.delete(where={"$and": [{"file_path": path}, {"repository": REPO}]})
        for path in sorted(process):
            text = (self.repo / path).read_text(encoding="utf-8")
            col.add(ids=[str(uuid.uuid4())], embeddings=[[float(len(text)), 1.0]], documents=[text],
                    metadatas=[{"file_path": path, "repository": REPO}])  # fmt: skip
        tracker = self._tracker()
        tracker[key] = {"repository": REPO, "branch": "main", "last_commit": head, "metadata": {}}
        self.tracker_file.write_text(json.dumps(tracker, indent=2))
        return change

    def chunks(self) -> list[tuple[str, str]]:
        got = self.server.client().get_collection(COLLECTION).get(include=["documents", "metadatas"])
        return sorted((m["file_path"], d) for m, d in zip(got["metadatas"], got["documents"], strict=True))

    def head_files(self) -> list[tuple[str, str]]:
        return sorted((p, (self.repo / p).read_text(encoding="utf-8")) for p in git(self.repo, "ls-files").splitlines())


@pytest.fixture
def indexer(chroma: ChromaServer, tmp_path: Path) -> Iterator[StandInIndexer]:
    repo = tmp_path / "shop"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (tmp_path / "indexer-volume").mkdir()
    stand_in = StandInIndexer(repo, tmp_path / "indexer-volume", chroma)
    yield stand_in
    stand_in.api.close()


def cli_args(chroma: ChromaServer, tmp_path: Path) -> list[str]:
    return ["--target", f"file://{tmp_path / 'backups'}", "--chroma-host", "127.0.0.1",
            "--chroma-port", str(chroma.port)]  # fmt: skip


def plan_command(snippet: str, stdin: bytes, cwd: Path) -> bytes:
    """One of the plan's tracker commands, as ``make restore`` prints it (python3 -c '<snippet>')."""
    return subprocess.run([sys.executable, "-c", snippet], input=stdin, cwd=cwd, check=True, capture_output=True).stdout


def test_next_reindex_after_restore_replays_the_commits_since_the_backup(
    chroma: ChromaServer, indexer: StandInIndexer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = indexer.repo
    commit(repo, "A", {"cart.py": "def cart(): v1", "pay.py": "def pay(): v1", "ship.py": "def ship(): v1"})
    assert indexer.index() == "full_index"
    code, lines = run_cli("backup", "chroma", *cli_args(chroma, tmp_path), "--indexer-url", indexer.url)
    assert code == 0, lines

    # After the backup: a modified, a deleted, an added and a renamed file, indexed the next night.
    commit(repo, "B", {"cart.py": "def cart(): v2", "tax.py": "def tax(): v1"}, remove=("pay.py",))
    git(repo, "mv", "ship.py", "shipping.py")
    commit(repo, "C")
    assert indexer.index() == "incremental"
    assert indexer.chunks() == indexer.head_files()

    # The disaster: the vector store is restored, the indexer's volume is not.
    code, restore_log = run_cli("restore", "chroma", "--latest", "--force", *cli_args(chroma, tmp_path))
    assert code == 0, restore_log
    restored = indexer.chunks()
    assert ("pay.py", "def pay(): v1") in restored and ("tax.py", "def tax(): v1") not in restored
    # Without the tracker step the re-index skips those commits, for ever (the defect).
    stale_tracker = indexer.tracker_file.read_bytes()
    assert indexer.index() == "no_changes" and indexer.chunks() == restored

    # The plan's tracker step: the tracker recorded with the backup, from the Job's log, onto the volume.
    log_text = "".join(json.dumps(line) + "\n" for line in restore_log).encode()
    tracker = plan_command(TRACKER_FROM_RESTORE_LOG, log_text, tmp_path)
    plan_command(TRACKER_WRITE, tracker, indexer.tracker_file.parent)
    assert indexer.tracker_file.read_bytes() != stale_tracker

    # A commit made after the restore too: the next incremental run picks up everything since the backup.
    commit(repo, "D", {"cart.py": "def cart(): v3"})
    assert indexer.index() == "incremental"
    assert indexer.chunks() == indexer.head_files()  # exactly HEAD: nothing missed, nothing twice


def test_backup_waits_for_the_indexer_and_records_its_tracker(
    chroma: ChromaServer, indexer: StandInIndexer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commit(indexer.repo, "A", {"cart.py": "def cart(): v1"})
    indexer.index()
    monkeypatch.setenv("KGB_CHROMA_ATTEMPTS", "2")
    monkeypatch.setenv("KGB_CHROMA_RETRY_SECONDS", "0")
    indexer.busy = True
    code, lines = run_cli("backup", "chroma", *cli_args(chroma, tmp_path), "--indexer-url", indexer.url)
    assert code == 1 and "indexing workflow(s) wf-1 running" in error_of(lines)

    indexer.busy = False
    code, lines = run_cli("backup", "chroma", *cli_args(chroma, tmp_path), "--indexer-url", indexer.url)
    assert code == 0, lines
    (manifest,) = (tmp_path / "backups" / "chroma").glob("*/manifest.json")
    recorded = json.loads(manifest.read_text())["source"]["indexed_commits"]
    assert recorded == json.loads(indexer.tracker_file.read_text())


def test_unreachable_indexer_refuses_the_backup(
    chroma: ChromaServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KGB_CHROMA_ATTEMPTS", "1")
    code, lines = run_cli("backup", "chroma", *cli_args(chroma, tmp_path), "--indexer-url", "http://127.0.0.1:9")
    assert code == 1 and "did not answer" in error_of(lines)
