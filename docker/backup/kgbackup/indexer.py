"""The agent's indexer, as a backup sees it: its commit tracker and whether it is indexing.

The indexer re-indexes incrementally from the commit it last indexed per
repository (``indexed_commits.json`` on its volume). A restored store is older
than that file, so a backup records the tracker as it was when the dump was
taken, and the restore hands it back (``restore.done``'s ``indexed_commits``)
to be written over the indexer's file: the next re-index then replays exactly
the commits since the backup. A backup never dumps while an indexing workflow
runs, nor keeps a dump during which the tracker moved.

Read through the app's own API (``GET /api/v1/commits/tracking`` and
``GET /api/v1/workflows``), standard library only.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from kgbackup.errors import ChangedDuringDumpError

BUSY = ("pending", "running")


@dataclass(frozen=True)
class IndexerState:
    tracker: dict[str, Any]
    """``tracked_repositories``: exactly the content of the indexer's ``indexed_commits.json``."""
    busy: tuple[str, ...]
    """Indexing workflows not finished yet."""


class Indexer:
    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _get(self, path: str) -> Any:
        request = urllib.request.Request(f"{self.url}{path}", headers={"Accept": "application/json"})
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            return json.load(response)

    def state(self) -> IndexerState:
        """Raises ``ChangedDuringDumpError`` when the indexer cannot say (it blocks while it indexes)."""
        try:
            tracking = self._get("/api/v1/commits/tracking")
            workflows = self._get("/api/v1/workflows?include_completed=false")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise ChangedDuringDumpError(
                f"the indexer at {self.url} did not answer ({exc}); it may be indexing"
            ) from exc
        busy = tuple(
            sorted(
                str(w.get("workflow_id"))
                for w in workflows
                if str(w.get("status")) in BUSY and "index" in str(w.get("workflow_type", "index"))
            )
        )
        return IndexerState(tracker=dict(tracking.get("tracked_repositories") or {}), busy=busy)

    def before_dump(self) -> IndexerState:
        state = self.state()
        if state.busy:
            raise ChangedDuringDumpError(f"indexing workflow(s) {', '.join(state.busy)} running")
        return state

    def after_dump(self, before: IndexerState) -> None:
        after = self.state()
        if after.busy:
            raise ChangedDuringDumpError(f"indexing workflow(s) {', '.join(after.busy)} started during the dump")
        if after.tracker != before.tracker:
            raise ChangedDuringDumpError("the indexer's commit tracker moved during the dump")
