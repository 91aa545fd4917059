"""Re-index the configured repositories through the indexer's API; runs in the reindex CronJob.

Standard library only: it runs with the agent image's Python, shipped in a
ConfigMap. For each repository of ``appSettings.json`` (the file the app reads,
mounted from the agent's ConfigMap) it sends
``POST /api/v1/index/repository`` with ``"incremental": true``, the only call
with which the app indexes just the commits missing from ``indexed_commits.json``
(``POST /api/v1/index`` always runs a full index and adds every chunk again,
as duplicates), then polls ``GET /api/v1/workflows/<id>/status`` until the
workflow is ``completed``, ``failed`` or ``cancelled``. One repository at a
time: a run blocks the indexer's event loop, so a second request would only
queue behind it. Exit 0 when every workflow completed, 1 when one failed or was
cancelled, did not finish in time, or the API could not be reached, so the Job
fails and ``KgaReindexFailed`` fires. One JSON object per line on stdout.

Settings (environment): ``KGA_INDEXER_URL`` (``http://<indexer service>:8000``),
``KGA_APP_SETTINGS`` (path of ``appSettings.json``), ``KGA_TIMEOUT_SECONDS``
(longest wait for one repository), ``KGA_POLL_SECONDS`` (between polls).
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from typing import Any

DONE = {"completed": 0, "failed": 1, "cancelled": 1}
INDEX_REPOSITORY = "/api/v1/index/repository"


def log(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}, sort_keys=True), flush=True)


def call(base: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Accept": "application/json", **({"Content-Type": "application/json"} if data else {})}
    request = urllib.request.Request(f"{base}{path}", data=data, method=method, headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def start(base: str, repository: dict[str, Any], deadline: float, poll: float) -> str | None:
    """Queue an incremental run of one repository; its workflow id, or None when the API refused it."""
    body = {"repository_url": repository["url"], "branch": repository.get("branch", "main"), "incremental": True}
    while True:
        try:
            return str(call(base, "POST", INDEX_REPOSITORY, body)["workflow_id"])
        except urllib.error.HTTPError as exc:
            if exc.code < 500:  # the request itself is wrong (e.g. 422: not a GitHub URL): retrying cannot help
                log("reindex.error", repository=repository["url"], error=f"POST {INDEX_REPOSITORY}: {exc}")
                return None
            error: Exception = exc
        except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
            error = exc
        # A run started by someone else blocks the loop: wait for it rather than fail.
        if time.monotonic() >= deadline:
            log("reindex.error", repository=repository["url"], error=f"POST {INDEX_REPOSITORY}: {error}")
            return None
        log("reindex.retry", repository=repository["url"], error=str(error))
        time.sleep(poll)


def wait(base: str, workflow_id: str, repository: str, deadline: float, poll: float) -> str:
    """The workflow's final status: ``completed``, ``failed``, ``cancelled``, ``lost`` or ``timeout``."""
    while True:
        try:
            state = call(base, "GET", f"/api/v1/workflows/{workflow_id}/status")
            status = str(state.get("status", ""))
            if status in DONE:
                log(
                    f"reindex.{status}",
                    workflow_id=workflow_id,
                    repository=repository,
                    error=state.get("error_message"),
                )
                return status
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                # A restarted indexer forgets its workflows (state is in memory): that run is lost.
                log("reindex.error", workflow_id=workflow_id, repository=repository, error=str(exc))
                return "lost"
            log("reindex.retry", workflow_id=workflow_id, error=str(exc))
        except (urllib.error.URLError, OSError, ValueError) as exc:
            # A run blocks the indexer's event loop: a slow or refused answer is not a lost workflow.
            log("reindex.retry", workflow_id=workflow_id, error=str(exc))
        if time.monotonic() >= deadline:
            log("reindex.timeout", workflow_id=workflow_id, repository=repository)
            return "timeout"
        time.sleep(poll)


def run(base: str, repositories: list[dict[str, Any]], timeout: float, poll: float) -> int:
    log("reindex.started", repositories=len(repositories))
    failed = 0
    for repository in repositories:
        deadline = time.monotonic() + timeout
        workflow_id = start(base, repository, deadline, poll)
        if workflow_id is None:
            failed += 1
            continue
        log("reindex.queued", workflow_id=workflow_id, repository=repository["url"])
        status = wait(base, workflow_id, repository["url"], deadline, poll)
        if status == "timeout":
            return 1  # still running: the next repository would only queue behind it
        failed += status != "completed"
    log("reindex.done", failed=failed)
    return 1 if failed else 0


def main() -> int:
    base = os.environ.get("KGA_INDEXER_URL", "").rstrip("/")
    settings = os.environ.get("KGA_APP_SETTINGS", "")
    if not base or not settings:
        log("reindex.error", error="KGA_INDEXER_URL and KGA_APP_SETTINGS must be set")
        return 2
    try:
        with open(settings, encoding="utf-8") as f:
            repositories = json.load(f)["repositories"]
    except (OSError, ValueError, KeyError) as exc:
        log("reindex.error", error=f"{settings}: {exc}")
        return 2
    return run(
        base,
        repositories,
        float(os.environ.get("KGA_TIMEOUT_SECONDS", "3600")),
        float(os.environ.get("KGA_POLL_SECONDS", "30")),
    )


if __name__ == "__main__":
    sys.exit(main())
