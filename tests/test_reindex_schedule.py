"""Scheduled re-indexing: the CronJob's shape, its network flow, and the shipped client against a stand-in API.

The client and the ``appSettings.json`` it reads come from the CronJob's volumes in
``dist/`` (what the cluster runs); it runs with this Python against an HTTP server
on loopback that behaves like the app's two indexing endpoints at the pinned commit
(src/api/routes.py): ``POST /api/v1/index`` always runs a full index of every
repository at once and, without the runtime layer, adds every chunk again without ids
(duplicates), while ``POST /api/v1/index/repository`` with ``"incremental": true`` runs one
repository; at the pinned commit that is a full index too (the app learns no commit, so
``indexed_commits.json`` stays empty), which the runtime layer's chunk ids make replace the
repository's chunks. ``GET /api/v1/workflows/<id>/status`` reports ``pending``, ``running``,
then ``completed`` or ``failed``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator, Set
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ROOT, build, env_data
from rendered import LocalPod, objects, run_agent, run_chroma, run_redis
from tools import free_port, missing

from kgstack.environment import EnvironmentFileError, parse_environment
from kgstack.publish import synth

Manifests = dict[str, dict[str, dict[str, Any]]]


def test_off_without_a_schedule() -> None:
    env = parse_environment(env_data("staging", reindex={}), source="staging.yaml")
    app, stack = build(env)
    assert stack.reindex is None
    names = [obj["metadata"]["name"] for obj in yaml.safe_load_all(app.synth_yaml()) if obj]
    assert "kga-staging" in names and "kga-staging-reindex" not in names


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


class Indexer:
    """The app's indexing API as it behaves, over an in-memory vector store.

    ``commits`` is each repository's history (URL -> commit ids); each commit adds ``CHUNKS`` chunks. Every run
    reads every commit. ``POST /api/v1/index`` adds them without ids, so a second run duplicates everything;
    the incremental request (no commit is ever tracked at the pinned commit: a full run) carries the runtime
    layer's chunk ids, so it replaces the repository's chunks.
    """

    CHUNKS = 3

    def __init__(self, settings: Path, *, failing: Set[str] = frozenset(), busy: int = 0) -> None:
        self.repositories = json.loads(settings.read_text())["repositories"]
        self.commits = {r["url"]: ["c1", "c2"] for r in self.repositories}
        self.vectors: list[tuple[str, str]] = []  # (repository, commit) per chunk
        self.workflows: dict[str, dict[str, Any]] = {}
        self.failing, self.busy = failing, busy  # repositories whose run fails; requests answered 503 first
        self.requests: list[tuple[str, str, Any]] = []

    def _index(self, url: str, incremental: bool) -> str:
        workflow_id = f"w{len(self.workflows) + 1}"
        self.workflows[workflow_id] = {"url": url, "incremental": incremental, "polls": 0}
        return workflow_id

    def _finish(self, workflow: dict[str, Any]) -> str:
        url = workflow["url"]
        if url in self.failing:
            return "failed"
        chunks = [(url, c) for c in self.commits[url] for _ in range(self.CHUNKS)]
        if workflow["incremental"]:  # upserted by id: the repository's chunks are replaced
            self.vectors = [v for v in self.vectors if v[0] != url]
        self.vectors += chunks
        return "completed"

    def handle(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        self.requests.append((method, path, body))
        if self.busy:
            self.busy -= 1
            return 503, {"detail": "busy"}
        if (method, path) == ("POST", "/api/v1/index"):
            workflows = [
                {"workflow_id": self._index(r["url"], False), "repository": r["url"]} for r in self.repositories
            ]
            return 200, {"batch_id": "b1", "workflows": workflows, "total_repositories": len(workflows)}
        if (method, path) == ("POST", "/api/v1/index/repository"):
            url = body.get("repository_url", "")
            if not url.startswith(("https://github.com/", "git@github.com:")):
                return 422, {"detail": "Repository URL must be a valid GitHub URL"}
            workflow_id = self._index(url, bool(body.get("incremental", False)))
            return 200, {"workflow_id": workflow_id, "repository": url, "status": "pending"}
        workflow_id = path.removeprefix("/api/v1/workflows/").removesuffix("/status")
        if method == "GET" and path.startswith("/api/v1/workflows/") and workflow_id in self.workflows:
            workflow = self.workflows[workflow_id]
            workflow["polls"] += 1
            if "status" not in workflow and workflow["polls"] >= 3:
                workflow["status"] = self._finish(workflow)
            status = workflow.get("status", "pending" if workflow["polls"] == 1 else "running")
            error = "clone failed" if status == "failed" else None
            return 200, {"workflow_id": workflow_id, "status": status, "error_message": error}
        return 404, {"detail": "Not Found"}


@contextmanager
def serve(api: Indexer) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def _reply(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            code, answer = api.handle(self.command, self.path, body)
            data = json.dumps(answer).encode()
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
        server.server_close()


class Job:
    """The reindex CronJob's pod from dist/staging (two repositories): its script and ``appSettings.json`` as files."""

    def __init__(self, root: Path) -> None:
        cron = objects("staging")["CronJob/kga-staging-reindex"]
        self.pod = LocalPod(
            "staging", {"metadata": cron["metadata"], "spec": cron["spec"]["jobTemplate"]["spec"]}, root
        )
        self.container = self.pod.container("reindex")
        self.env = self.pod.env(self.container)
        self.settings = Path(self.env["KGA_APP_SETTINGS"])

    def run(self, url: str, timeout: str = "60") -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            **self.env,
            "KGA_INDEXER_URL": url,
            "KGA_POLL_SECONDS": "0.02",
            "KGA_TIMEOUT_SECONDS": timeout,
        }
        command = [sys.executable if arg == "python" else arg for arg in self.pod.command(self.container)]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)


@pytest.fixture
def job(tmp_path: Path) -> Job:
    return Job(tmp_path)


def events(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_the_job_reads_the_repositories_the_app_reads(job: Job) -> None:
    agent = objects("staging")["ConfigMap/kga-staging-agent"]["data"]["appSettings.json"]
    assert job.settings.read_text() == agent
    assert len(json.loads(agent)["repositories"]) >= 2


def test_scheduled_runs_index_each_repository_incrementally_without_duplicates(job: Job) -> None:
    """Issue 16 defect 5: the job called ``POST /api/v1/index``, which always runs a full index and adds every
    chunk again, so each night doubled the store. Two scheduled runs with a new commit between them must leave
    every chunk exactly once, through one incremental request per repository per run."""
    api = Indexer(job.settings)
    with serve(api) as url:
        first = job.run(url)
        assert first.returncode == 0, first.stdout + first.stderr
        api.commits[api.repositories[0]["url"]].append("c3")  # pushed since the first run
        second = job.run(url)
    assert second.returncode == 0, second.stdout + second.stderr
    assert len(api.vectors) == Indexer.CHUNKS * sum(len(c) for c in api.commits.values())
    assert len(set(api.vectors)) * Indexer.CHUNKS == len(api.vectors)  # no chunk twice
    posts = [(path, body) for method, path, body in api.requests if method == "POST"]
    expected = [
        ("/api/v1/index/repository", {"repository_url": r["url"], "branch": r["branch"], "incremental": True})
        for r in api.repositories
    ]
    assert posts == expected * 2
    for result in (first, second):
        done = [e["repository"] for e in events(result) if e["event"] == "reindex.completed"]
        assert done == [r["url"] for r in api.repositories]
        assert events(result)[-1] == {"event": "reindex.done", "failed": 0}


def test_each_workflow_ends_before_the_next_repository_starts(job: Job) -> None:
    """A run blocks the indexer's loop: the next request would only queue behind it."""
    api = Indexer(job.settings)
    with serve(api) as url:
        result = job.run(url)
    assert result.returncode == 0, result.stdout
    second_post = next(i for i, (m, _, b) in enumerate(api.requests) if m == "POST" and i > 0)
    polls_of_first = [i for i, (m, p, _) in enumerate(api.requests) if p == "/api/v1/workflows/w1/status"]
    assert max(polls_of_first) < second_post


def test_client_fails_when_a_workflow_fails_and_still_runs_the_others(job: Job) -> None:
    api = Indexer(job.settings)
    first, *others = [r["url"] for r in api.repositories]
    api.failing = {first}
    with serve(api) as url:
        result = job.run(url)
    assert result.returncode == 1
    (failed,) = [e for e in events(result) if e["event"] == "reindex.failed"]
    assert failed["repository"] == first and failed["error"] == "clone failed"
    assert [e["repository"] for e in events(result) if e["event"] == "reindex.completed"] == others
    assert events(result)[-1] == {"event": "reindex.done", "failed": 1}


def test_client_fails_when_a_workflow_outlasts_the_timeout(job: Job) -> None:
    api = Indexer(job.settings)
    original = api.handle

    def handle(method: str, path: str, body: Any) -> tuple[int, Any]:
        if path.endswith("/status"):
            api.requests.append((method, path, body))
            return 200, {"workflow_id": "w1", "status": "running"}
        return original(method, path, body)

    api.handle = handle  # type: ignore[method-assign]
    with serve(api) as url:
        result = job.run(url, timeout="0.3")
    assert result.returncode == 1
    assert events(result)[-1]["event"] == "reindex.timeout"
    assert [m for m, _, _ in api.requests].count("POST") == 1  # the next repository would only queue behind it


def test_client_fails_when_the_indexer_is_unreachable(job: Job) -> None:
    result = job.run(f"http://127.0.0.1:{free_port()}", timeout="0.3")  # nothing listens there
    assert result.returncode == 1
    assert any(e["event"] == "reindex.error" for e in events(result))


def test_client_waits_through_a_busy_indexer(job: Job) -> None:
    """A run blocks the indexer's event loop: failed requests are retried, not counted as lost runs (review)."""
    api = Indexer(job.settings, busy=3)
    with serve(api) as url:
        result = job.run(url)
    assert result.returncode == 0, result.stdout
    assert [e["event"] for e in events(result)].count("reindex.retry") == 3
    assert events(result)[-1] == {"event": "reindex.done", "failed": 0}


def test_client_counts_a_forgotten_workflow_as_failed(job: Job) -> None:
    """404: the indexer restarted and forgot the workflow (its state is in memory)."""
    api = Indexer(job.settings)
    original = api.handle

    def handle(method: str, path: str, body: Any) -> tuple[int, Any]:
        if path == "/api/v1/workflows/w1/status":
            return 404, {"detail": "Not Found"}
        return original(method, path, body)

    api.handle = handle  # type: ignore[method-assign]
    with serve(api) as url:
        result = job.run(url)
    assert result.returncode == 1
    assert any(e["event"] == "reindex.error" and e.get("workflow_id") == "w1" for e in events(result))


def test_a_repository_the_app_refuses_fails_the_run_at_once(job: Job) -> None:
    """422 (the app takes GitHub URLs only): retrying cannot help; the other repositories still run."""
    api = Indexer(job.settings)
    refused = api.repositories[0]["url"]
    original = api.handle

    def handle(method: str, path: str, body: Any) -> tuple[int, Any]:
        if method == "POST" and body and body.get("repository_url") == refused:
            api.requests.append((method, path, body))
            return 422, {"detail": "Repository URL must be a valid GitHub URL"}
        return original(method, path, body)

    api.handle = handle  # type: ignore[method-assign]
    with serve(api) as url:
        result = job.run(url)
    assert result.returncode == 1
    assert [e["event"] for e in events(result)].count("reindex.retry") == 0
    assert any(e["event"] == "reindex.error" and e.get("repository") == refused for e in events(result))


def test_scheduled_re_indexing_needs_github_urls() -> None:
    """The incremental endpoint refuses other hosts (422): caught at synth, not by a failing nightly Job."""
    repositories = [{"name": "x", "url": "https://gitlab.example.com/acme/x"}]
    with pytest.raises(EnvironmentFileError) as caught:
        parse_environment(env_data("prod", repositories=repositories), source="prod.yaml")
    assert caught.value.problems == [
        "prod.yaml: repositories[0].url: 'https://gitlab.example.com/acme/x' is not a GitHub URL "
        "(https://github.com/...), which the indexer's incremental endpoint requires for scheduled re-indexing "
        "(reindex.schedule) (see docs/environment-reference.md#repository)"
    ]
    parse_environment(env_data("dev", repositories=repositories, reindex={}), source="dev.yaml")  # no schedule


def test_the_rendered_job_against_the_rendered_indexer_adds_each_chunk_once(job: Job, tmp_path: Path) -> None:
    """Defect 5 end to end: dist/staging's Job, twice, against dist/staging's indexer pod (the real runtime
    around the stand-in app, whose two endpoints behave as the app's) and dist/staging's Chroma: the second
    run, a full one like every run at the pinned commit (no commit is tracked), leaves the count unchanged."""
    if not (ROOT / "tests" / "fake_openai.py").exists():
        missing("tests/fake_openai.py missing (the runtime layer of issue 16)")
    from fake_openai import FakeOpenAI

    llm = FakeOpenAI().start()
    try:
        with (
            run_redis("staging", tmp_path / "redis") as redis,
            run_chroma("staging", tmp_path / "chroma") as chroma,
            run_agent(
                "staging", "indexer", tmp_path / "indexer", redis=redis, chroma=chroma, llm_url=llm.base_url
            ) as indexer,
        ):
            counts = []
            for _ in range(2):
                result = job.run(indexer.url(), timeout="120")
                assert result.returncode == 0, result.stdout + result.stderr + indexer.tail()
                counts.append(chroma.client().get_collection(indexer.env["CHROMA_COLLECTION_NAME"]).count())
            workdir = Path(indexer.pod.local(indexer.container, indexer.container["workingDir"]))
            commits = workdir / "indexed_commits.json"
            tracked = json.loads(commits.read_text()) if commits.exists() else {}
    finally:
        llm.stop()
    assert counts[0] > 0 and counts[1] == counts[0], counts
    assert tracked == {}, tracked
