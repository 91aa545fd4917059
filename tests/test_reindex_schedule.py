"""Scheduled re-indexing: the CronJob's shape, its network flow, and the shipped client against a stand-in API.

The client is read from the ConfigMap in ``dist/`` (what the cluster runs) and run
with this Python against an HTTP server on loopback that answers like the app's
documented indexing API (``POST /api/v1/index``, ``GET /api/v1/workflows/<id>/status``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ROOT, build, env_data
from tools import free_port

from kgstack.environment import EnvironmentFileError, parse_environment
from kgstack.publish import synth

Manifests = dict[str, dict[str, dict[str, Any]]]


def test_off_without_a_schedule(manifests: Manifests) -> None:
    assert not [k for k in manifests["dev"] if "reindex" in k]
    env = parse_environment(env_data("staging", reindex={}), source="staging.yaml")
    _, stack = build(env)
    assert stack.reindex is None


def test_cronjob_forbids_overlap_and_runs_as_its_own_identity(manifests: Manifests) -> None:
    cron = manifests["prod"]["CronJob/kga-prod-reindex"]
    assert cron["spec"]["schedule"] == "0 4 * * *" and cron["spec"]["timeZone"] == "Etc/UTC"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    job = cron["spec"]["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 0
    pod = job["template"]["spec"]
    assert pod["serviceAccountName"] == "kga-prod-reindex" and pod["automountServiceAccountToken"] is False
    assert manifests["prod"]["ServiceAccount/kga-prod-reindex"]["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["KGA_INDEXER_URL"] == "http://kga-prod-indexer:8000"
    assert container["args"] == ["python", "/reindex/reindex_client.py"]


def test_declared_connection_to_the_indexer_only(manifests: Manifests) -> None:
    egress = manifests["prod"]["NetworkPolicy/kga-prod-reindex"]["spec"]["egress"]
    assert egress == [
        {
            "ports": [{"port": 8000, "protocol": "TCP"}],
            "to": [
                {
                    "podSelector": {
                        "matchLabels": {
                            "app.kubernetes.io/component": "indexer",
                            "app.kubernetes.io/instance": "kga-prod",
                            "app.kubernetes.io/name": "kga",
                        }
                    }
                }
            ],
        }
    ]
    ingress = manifests["prod"]["NetworkPolicy/kga-prod-indexer"]["spec"]["ingress"]
    sources = [
        peer["podSelector"]["matchLabels"].get("app.kubernetes.io/component")
        for rule in ingress
        for peer in rule["from"]
        if "podSelector" in peer
    ]
    assert "reindex" in sources


def test_a_bad_schedule_names_the_field() -> None:
    with pytest.raises(EnvironmentFileError) as caught:
        parse_environment(env_data("dev", reindex={"schedule": "nightly"}), source="dev.yaml")
    assert caught.value.problems == [
        "dev.yaml: reindex.schedule: 'nightly' is not a five-field cron schedule (e.g. '30 3 * * *')"
        " (see docs/environment-reference.md#reindexsettings)"
    ]


@pytest.mark.parametrize(
    ("schedule", "reason"),
    [
        # The API server refuses these CronJobs; the old check (the shape of five fields) took them.
        ("75 3 * * *", "'75 3 * * *': minute 75 is outside 0-59"),
        ("0 24 * * *", "'0 24 * * *': hour 24 is outside 0-23"),
        ("0 3 * 13 *", "'0 3 * 13 *': month 13 is outside 1-12"),
        ("0 9-5 * * *", "'0 9-5 * * *': hour 9-5 is an empty range"),
        ("*/0 3 * * *", "'*/0 3 * * *': minute step /0 must be at least 1"),
        # Accepted by Kubernetes, and never runs.
        ("0 3 31 2,4 *", "'0 3 31 2,4 *' never runs: no month it names has day 31"),
    ],
)
def test_a_schedule_that_parses_but_means_nothing_is_refused(schedule: str, reason: str) -> None:
    with pytest.raises(EnvironmentFileError) as caught:
        parse_environment(env_data("dev", reindex={"schedule": schedule}), source="dev.yaml")
    assert caught.value.problems == [
        f"dev.yaml: reindex.schedule: {reason} (see docs/environment-reference.md#reindexsettings)"
    ]


@pytest.mark.parametrize(
    "schedule", ["0 3 * * *", "*/15 8-18 * * 1-5", "0 3 31 2 1", "0 3 29 2 *", "0,30 */2 1,15 * 0,7"]
)
def test_schedules_that_run_are_accepted(schedule: str) -> None:
    env = parse_environment(env_data("dev", reindex={"schedule": schedule}), source="dev.yaml")
    assert env.reindex.schedule == schedule


def test_the_quota_counts_the_reindex_pod() -> None:
    env = parse_environment(env_data("prod"), source="prod.yaml")
    _, stack = build(env)
    assert "CronJob/kga-prod-reindex" in [f.resource for f in stack.tenant.footprints()]
    synth([stack])  # the shipped quota still fits


# --- the client from dist/ against a stand-in indexer API -------------------------------------


class Api:
    """Answers like the app: a batch of workflows, then their status per poll."""

    def __init__(self, outcomes: dict[str, list[str]], busy_polls: int = 0) -> None:
        self.outcomes = outcomes  # workflow id -> statuses returned on successive polls
        self.busy_polls = busy_polls  # status polls answered 503 first, as a busy event loop would fail
        self.requests: list[tuple[str, str]] = []

    def handle(self, method: str, path: str) -> tuple[int, Any]:
        self.requests.append((method, path))
        if method == "GET" and self.busy_polls:
            self.busy_polls -= 1
            return 503, {"detail": "busy"}
        if (method, path) == ("POST", "/api/v1/index"):
            workflows = [{"workflow_id": w, "repository": f"https://github.com/acme/{w}"} for w in self.outcomes]
            return 200, {"batch_id": "b1", "workflows": workflows, "total_repositories": len(workflows)}
        prefix, _, rest = path.partition("/api/v1/workflows/")
        workflow_id = rest.removesuffix("/status")
        if method == "GET" and not prefix and workflow_id in self.outcomes:
            statuses = self.outcomes[workflow_id]
            status = statuses.pop(0) if len(statuses) > 1 else statuses[0]
            return 200, {
                "workflow_id": workflow_id,
                "status": status,
                "error_message": "boom" if status == "failed" else None,
            }
        return 404, {"detail": "Not Found"}


@pytest.fixture
def client_script(tmp_path: Path) -> Path:
    config_map = yaml.safe_load((ROOT / "dist" / "prod" / "configmap-kga-prod-reindex.yaml").read_text())
    path = tmp_path / "reindex_client.py"
    path.write_text(config_map["data"]["reindex_client.py"])
    return path


@contextmanager
def serve(api: Api) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def _reply(self) -> None:
            code, body = api.handle(self.command, self.path)
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _reply  # noqa: N815

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def run_client(script: Path, url: str, timeout: str = "60") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KGA_INDEXER_URL": url, "KGA_POLL_SECONDS": "0.05", "KGA_TIMEOUT_SECONDS": timeout}
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, env=env)


def events(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_client_triggers_once_and_waits_for_every_workflow(client_script: Path) -> None:
    api = Api({"w1": ["pending", "running", "completed"], "w2": ["running", "completed"]})
    with serve(api) as url:
        result = run_client(client_script, url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert api.requests.count(("POST", "/api/v1/index")) == 1
    assert ("GET", "/api/v1/workflows/w1/status") in api.requests
    assert [e["event"] for e in events(result)][-1] == "reindex.done"
    assert sorted(e["workflow_id"] for e in events(result) if e["event"] == "reindex.completed") == ["w1", "w2"]


def test_client_fails_when_a_workflow_fails(client_script: Path) -> None:
    api = Api({"w1": ["completed"], "w2": ["running", "failed"]})
    with serve(api) as url:
        result = run_client(client_script, url)
    assert result.returncode == 1
    (failed,) = [e for e in events(result) if e["event"] == "reindex.failed"]
    assert failed["workflow_id"] == "w2" and failed["error"] == "boom"


def test_client_fails_when_workflows_outlast_the_timeout(client_script: Path) -> None:
    api = Api({"w1": ["running"]})
    with serve(api) as url:
        result = run_client(client_script, url, timeout="0.3")
    assert result.returncode == 1
    assert events(result)[-1]["event"] == "reindex.timeout"


def test_client_fails_when_the_indexer_is_unreachable(client_script: Path) -> None:
    result = run_client(client_script, f"http://127.0.0.1:{free_port()}")  # nothing listens there
    assert result.returncode == 1
    assert events(result)[0]["event"] == "reindex.error"


def test_client_waits_through_a_busy_indexer(client_script: Path) -> None:
    """A run blocks the indexer's event loop: failed polls are retried, not counted as lost runs (review)."""
    api = Api({"w1": ["running", "completed"]}, busy_polls=3)
    with serve(api) as url:
        result = run_client(client_script, url)
    assert result.returncode == 0, result.stdout
    assert [e["event"] for e in events(result)].count("reindex.retry") == 3
    assert events(result)[-1] == {"event": "reindex.done", "failed": 0}


def test_client_counts_a_forgotten_workflow_as_failed(client_script: Path) -> None:
    """404: the indexer restarted and forgot the workflow (its state is in memory)."""
    api = Api({"w1": ["completed"]})
    api.outcomes["w-lost"] = []  # listed in the batch, then unknown to the status endpoint
    original = api.handle

    def handle(method: str, path: str) -> tuple[int, Any]:
        if path.endswith("/w-lost/status"):
            return 404, {"detail": "Not Found"}
        return original(method, path)

    api.handle = handle  # type: ignore[method-assign]
    with serve(api) as url:
        result = run_client(client_script, url)
    assert result.returncode == 1
    assert any(e["event"] == "reindex.error" and e.get("workflow_id") == "w-lost" for e in events(result))
