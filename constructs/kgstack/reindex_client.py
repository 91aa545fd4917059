"""Re-index the configured repositories through the indexer's API; runs in the reindex CronJob.

Standard library only: it runs with the agent image's Python, shipped in a
ConfigMap. ``POST /api/v1/index`` queues one workflow per repository of
``appSettings.json`` (incremental: the app skips commits in ``indexed_commits.json``);
then each workflow's ``GET /api/v1/workflows/<id>/status`` is polled until it
is ``completed`` or ``failed``. Exit 0 when every workflow completed, 1 when one
failed, did not finish in time, or the API could not be reached, so the Job
fails and ``KgaReindexFailed`` fires. One JSON object per line on stdout.

Settings (environment): ``KGA_INDEXER_URL`` (``http://<indexer service>:8000``),
``KGA_TIMEOUT_SECONDS`` (give up after), ``KGA_POLL_SECONDS`` (between polls).
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from typing import Any

DONE = {"completed": 0, "failed": 1}


def log(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}, sort_keys=True), flush=True)


def call(base: str, method: str, path: str) -> Any:
    request = urllib.request.Request(f"{base}{path}", method=method, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def run(base: str, timeout: float, poll: float) -> int:
    try:
        batch = call(base, "POST", "/api/v1/index")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        log("reindex.error", error=f"POST /api/v1/index: {exc}")
        return 1
    pending = {w["workflow_id"]: w.get("repository", "") for w in batch.get("workflows", [])}
    log("reindex.started", batch_id=batch.get("batch_id"), workflows=len(pending))
    deadline = time.monotonic() + timeout
    failed = 0
    while pending:
        for workflow_id, repository in list(pending.items()):
            try:
                state = call(base, "GET", f"/api/v1/workflows/{workflow_id}/status")
            except urllib.error.HTTPError as exc:
                if exc.code != 404:
                    log("reindex.retry", workflow_id=workflow_id, error=str(exc))
                    continue
                # A restarted indexer forgets its workflows (state is in memory): that run is lost.
                log("reindex.error", workflow_id=workflow_id, repository=repository, error=str(exc))
                failed += 1
                del pending[workflow_id]
                continue
            except (urllib.error.URLError, OSError, ValueError) as exc:
                # A run blocks the indexer's event loop: a slow or refused answer is not a lost workflow.
                log("reindex.retry", workflow_id=workflow_id, error=str(exc))
                continue
            status = str(state.get("status", ""))
            if status in DONE:
                failed += DONE[status]
                log(
                    f"reindex.{status}",
                    workflow_id=workflow_id,
                    repository=repository,
                    error=state.get("error_message"),
                )
                del pending[workflow_id]
        if pending and time.monotonic() >= deadline:
            log("reindex.timeout", workflows=sorted(pending.values()), timeout_seconds=timeout)
            return 1
        if pending:
            time.sleep(poll)
    log("reindex.done", failed=failed)
    return 1 if failed else 0


def main() -> int:
    base = os.environ.get("KGA_INDEXER_URL", "").rstrip("/")
    if not base:
        log("reindex.error", error="KGA_INDEXER_URL is not set")
        return 2
    return run(
        base, float(os.environ.get("KGA_TIMEOUT_SECONDS", "3600")), float(os.environ.get("KGA_POLL_SECONDS", "30"))
    )


if __name__ == "__main__":
    sys.exit(main())
