"""The runtime layer (docker/agent/runtime/kga_runtime) around the stand-in app, with real servers on loopback.

The stand-in (tests/fixtures/agent-app) has the real app's module paths, routes
and defects. It runs in .venvs/agent, a venv of docker/agent/requirements.lock
(the image's set), started two ways:

* ``python -m kga_runtime`` (what the image runs), against a real ``chroma run``,
  a real redis-server and a fake OpenAI-compatible server (tests/fake_openai.py);
* ``python main.py``, the app's own entry point: the old behaviour, on which each
  check below is shown to fail (test_old_entry_point_has_each_defect).

Missing venv or servers: skip locally, fail under CI=true.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from backup_servers import ChromaServer, RedisServer, chroma_server
from fake_openai import FakeOpenAI
from tools import free_port, missing, stop

__all__ = ["chroma_server"]  # a fixture used by this module

REPO = Path(__file__).resolve().parents[1]
FIXTURE_APP = REPO / "tests" / "fixtures" / "agent-app"
RUNTIME_SRC = REPO / "docker" / "agent" / "runtime"
AGENT_PYTHON = REPO / ".venvs" / "agent" / "bin" / "python"
TOKEN = "ghp_canaryTOKEN0123456789abcdef"
API_KEY = "sk-canary-api-key-0123456789"
OUR_REPO = "https://github.com/acme/knowledge-graph-agent.git"


def _agent_python() -> str:
    if not AGENT_PYTHON.exists():
        missing(f"{AGENT_PYTHON.relative_to(REPO)} missing (scripts/setup.sh test builds it from the agent lock)")
    return str(AGENT_PYTHON)


def _http(
    method: str, url: str, body: Any = None, headers: dict[str, str] | None = None, timeout: float = 30
) -> tuple[int, dict[str, str], Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw, status, hdrs = resp.read(), resp.status, dict(resp.headers)
    except urllib.error.HTTPError as exc:
        raw, status, hdrs = exc.read(), exc.code, dict(exc.headers)
    text = raw.decode()
    try:
        return status, {k.lower(): v for k, v in hdrs.items()}, json.loads(text)
    except ValueError:
        return status, {k.lower(): v for k, v in hdrs.items()}, text


_TIKTOKEN: list[Path] = []


def _tiktoken_cache() -> Path:
    """tiktoken's encoding, seeded as the image seeds it (the embeddings client must never download it)."""
    if not _TIKTOKEN:
        target = REPO / ".cache" / "tiktoken"
        subprocess.run(
            [_agent_python(), "-m", "kga_runtime.tiktoken_cache", str(target)],
            env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(RUNTIME_SRC)},
            check=True,
            capture_output=True,
        )
        _TIKTOKEN.append(target)
    return _TIKTOKEN[0]


@dataclass
class Agent:
    """The stand-in app in a child process, its working directory and its log."""

    proc: subprocess.Popen[bytes]
    workdir: Path
    log_path: Path
    port: int
    runtime_port: int
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def probes(self) -> str:
        return f"http://127.0.0.1:{self.runtime_port}"

    def log_lines(self) -> list[str]:
        return self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()

    def json_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log_lines() if line.startswith("{")]

    def metric(self, name: str, **labels: str) -> float:
        _, _, text = _http("GET", f"{self.probes}/metrics")
        want = ",".join(f'{k}="{v}"' for k, v in labels.items())
        for line in str(text).splitlines():
            if line.startswith(f"{name}{{{want}}} ") or (not labels and line.startswith(f"{name} ")):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def wait_workflow(self, workflow_id: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, _, body = _http("GET", f"{self.url}/api/v1/workflows/{workflow_id}/status")
            if status == 200 and body["status"] in ("completed", "failed"):
                return dict(body)
            time.sleep(0.2)
        raise AssertionError(f"workflow {workflow_id} did not finish: {self.log_lines()[-20:]}")


def start_agent(workdir: Path, env: dict[str, str], *, launcher: bool = True) -> Agent:
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copy(FIXTURE_APP / "appSettings.json", workdir / "appSettings.json")
    port, runtime_port = free_port(), free_port()
    full_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(workdir),
        "PYTHONDONTWRITEBYTECODE": "1",
        "ANONYMIZED_TELEMETRY": "False",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "KGA_RUNTIME_PORT": str(runtime_port),
        "KGA_APP_DIR": str(FIXTURE_APP),
        "PYTHONPATH": str(RUNTIME_SRC),
        "GITHUB_TOKEN": TOKEN,
        "OPENAI_API_KEY": API_KEY,
        "TIKTOKEN_CACHE_DIR": str(_tiktoken_cache()),
        **env,
    }
    cmd = [_agent_python(), "-m", "kga_runtime"] if launcher else [_agent_python(), str(FIXTURE_APP / "main.py")]
    log_path = workdir / "agent.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, cwd=workdir, env=full_env, stdout=log, stderr=subprocess.STDOUT)
    agent = Agent(proc, workdir, log_path, port, runtime_port, full_env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"agent exited with {proc.returncode}:\n" + "\n".join(agent.log_lines()[-40:]))
        try:
            if _http("GET", f"{agent.url}/health", timeout=2)[0] == 200:
                return agent
        except OSError:
            pass
        time.sleep(0.3)
    stop(proc)
    raise AssertionError("agent did not answer /health in 120 s:\n" + "\n".join(agent.log_lines()[-40:]))


@pytest.fixture(scope="module")
def fake_llm() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if not binary:
        missing("redis-server not installed (apt-get install redis-server)")
    server = RedisServer(binary, tmp_path_factory.mktemp("redis"))
    yield server
    stop(server.proc)


def _redis_url(server: RedisServer) -> str:
    return f"redis://:{server.password}@127.0.0.1:{server.port}/0"


@pytest.fixture(scope="module")
def agent(
    tmp_path_factory: pytest.TempPathFactory,
    chroma_server: ChromaServer,
    redis_server: RedisServer,
    fake_llm: FakeOpenAI,
) -> Iterator[Agent]:
    """One launcher-run agent for the module: sharing it keeps the suite to two app start-ups."""
    chroma_server.wipe()
    redis_server.client().flushall()
    agent = start_agent(
        tmp_path_factory.mktemp("agent"),
        {
            "LLM_API_BASE_URL": fake_llm.base_url,
            "CHROMA_HOST": "127.0.0.1",
            "CHROMA_PORT": str(chroma_server.port),
            "REDIS_URL": _redis_url(redis_server),
            "KGA_MAX_IN_FLIGHT": "1",
            "KGA_HEALTH_POLL_SECONDS": "0.5",
            "KGA_READY_HEALTH_MAX_AGE_SECONDS": "30",
            "KGA_CACHE_LLM_TTL_SECONDS": "600",
            "KGA_CACHE_EMBEDDINGS_TTL_SECONDS": "900",
        },
    )
    yield agent
    stop(agent.proc)


def _wait_ready(agent: Agent, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: Any = None
    while time.monotonic() < deadline:
        status, _, body = _http("GET", f"{agent.probes}/readyz", timeout=5)
        if status == 200:
            return dict(body)
        time.sleep(0.2)
    raise AssertionError(f"never ready: {body}")


def _slow_query(agent: Agent, fake: FakeOpenAI, question: str, delay: float) -> tuple[threading.Thread, list[Any]]:
    """A query whose LLM call takes ``delay`` seconds, in a thread; waits until the LLM has it."""
    fake.chat_delay = delay
    before = fake.calls["chat"]
    result: list[Any] = []
    thread = threading.Thread(
        target=lambda: result.append(_http("POST", f"{agent.url}/api/v1/query", {"query": question}, timeout=120))
    )
    thread.start()
    deadline = time.monotonic() + 60
    while fake.calls["chat"] == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fake.calls["chat"] > before, "the query never reached the LLM"
    return thread, result


# ------------------------------------------------------------------ probes


def test_livez_answers_while_a_query_is_in_flight(agent: Agent, fake_llm: FakeOpenAI) -> None:
    """Defect 4: a query blocks the app's loop; the side server still says alive (the app's /health cannot)."""
    _wait_ready(agent)
    thread, result = _slow_query(agent, fake_llm, "livez while busy?", delay=4)
    try:
        t0 = time.monotonic()
        status, _, body = _http("GET", f"{agent.probes}/livez", timeout=2)
        assert status == 200 and body["status"] == "alive", body
        assert time.monotonic() - t0 < 1.5
        with pytest.raises(OSError):  # the old probe target waits behind the query
            _http("GET", f"{agent.url}/health", timeout=1.5)
    finally:
        thread.join()
        fake_llm.chat_delay = 0
    assert result[0][0] == 200, result


def test_saturated_pod_leaves_readyz_and_returns(agent: Agent, fake_llm: FakeOpenAI) -> None:
    _wait_ready(agent)
    thread, _ = _slow_query(agent, fake_llm, "readyz while busy?", delay=4)
    try:
        deadline = time.monotonic() + 3.5
        bodies = []
        while time.monotonic() < deadline:
            status, _, body = _http("GET", f"{agent.probes}/readyz", timeout=2)
            bodies.append((status, body))
            if status == 503 and "in flight" in body.get("reason", "") and "event loop" in body.get("reason", ""):
                break
            time.sleep(0.2)
        status, body = bodies[-1]
        assert status == 503, bodies
        assert "1 requests in flight (limit 1)" in body["reason"] and "event loop" in body["reason"], body
        assert agent.metric("kga_http_requests_in_flight") == 1
    finally:
        thread.join()
        fake_llm.chat_delay = 0
    assert _wait_ready(agent)["in_flight"] == 0
    assert agent.metric("kga_http_requests_in_flight") == 0
    assert agent.metric("kga_event_loop_lag_seconds") >= 0


# -------------------------------------------------------- Chroma over HTTP


def test_index_writes_to_the_chroma_server_not_chroma_db(agent: Agent, chroma_server: ChromaServer) -> None:
    """Defect 2: the factory's default is ./chroma_db; with the runtime layer the server holds the vectors."""
    _, _, body = _http(
        "POST", f"{agent.url}/api/v1/index/repository", {"repository_url": OUR_REPO, "incremental": True}
    )
    assert agent.wait_workflow(body["workflow_id"])["status"] == "completed"
    collection = chroma_server.client().get_collection("knowledge-base-graph")
    assert collection.count() == 3
    assert not (agent.workdir / "chroma_db").exists()
    # Defect 5 as the app has it: no commit is ever recorded, so "incremental" is a full run; ids keep it single.
    _, _, body = _http(
        "POST", f"{agent.url}/api/v1/index/repository", {"repository_url": OUR_REPO, "incremental": True}
    )
    assert agent.wait_workflow(body["workflow_id"])["documents_added"] == 3
    assert collection.count() == 3
    assert _tracked(agent) == {}
    assert agent.metric("kga_indexing_runs_total", outcome="succeeded") >= 2
    assert agent.metric("kga_indexing_runs_total", outcome="started") >= 2


def test_full_index_again_stores_each_chunk_once(agent: Agent, chroma_server: ChromaServer) -> None:
    """Defects 5 and 11: POST /index is always full and the app adds each batch twice, without ids; now ids upsert."""
    collection = chroma_server.client().get_or_create_collection("knowledge-base-graph")
    mine = {"repository": "anhhai680/knowledge-graph-agent"}  # appSettings.json's repository
    for _ in range(2):
        _, _, body = _http("POST", f"{agent.url}/api/v1/index", {})
        (workflow,) = body["workflows"]
        workflow = agent.wait_workflow(workflow["workflow_id"])
        assert workflow["status"] == "completed"
        assert workflow["documents_added"] == 3
        assert len(collection.get(where=mine)["ids"]) == 3


TRACKED_REPO = "https://github.com/acme/tracker-demo"


def _index_incrementally(agent: Agent, url: str, status: str = "completed") -> dict[str, Any]:
    _, _, body = _http("POST", f"{agent.url}/api/v1/index/repository", {"repository_url": url, "incremental": True})
    workflow = agent.wait_workflow(body["workflow_id"])
    assert workflow["status"] == status, workflow
    return workflow


def _tracked(agent: Agent) -> dict[str, Any]:
    path = agent.workdir / "indexed_commits.json"
    return dict(json.loads(path.read_text())) if path.exists() else {}


def test_incremental_runs_are_full_ones_that_record_no_commit_and_add_no_duplicates(
    agent: Agent, chroma_server: ChromaServer
) -> None:
    """Defect 10 as the app has it at the pinned commit: GitDiffService runs ``git git rev-parse``, so no commit
    is learned, nothing is tracked and each incremental run indexes everything again; chunk ids keep one copy."""
    collection = chroma_server.client().get_or_create_collection("knowledge-base-graph")
    added = [_index_incrementally(agent, TRACKED_REPO)["documents_added"] for _ in range(2)]
    assert added == [3, 3]
    assert len(collection.get(where={"repository": "acme/tracker-demo"})["ids"]) == 3
    assert _tracked(agent) == {}
    # A tracker entry written by hand (e.g. a restore's handback of a non-empty tracker) makes the app try its
    # diff path, which fails at the pinned commit (_prepare_repository_for_diff): that repository stops indexing.
    entry = {"repository": "acme/tracker-demo", "branch": "main", "last_commit": "0" * 40}
    (agent.workdir / "indexed_commits.json").write_text(json.dumps({"acme/tracker-demo#main": entry}))
    try:
        _index_incrementally(agent, TRACKED_REPO, status="failed")
    finally:
        _http("DELETE", f"{agent.url}/api/v1/commits/tracking/acme/tracker-demo")
    assert _tracked(agent) == {}


SWEPT_REPO = "https://github.com/acme/sweep-demo"


def test_a_full_index_removes_chunks_of_changed_and_deleted_files(agent: Agent, chroma_server: ChromaServer) -> None:
    """Stale answers: chunks of a file's earlier version, and of a deleted file, are gone after the next index;
    the current chunks are there and other repositories keep theirs."""
    collection = chroma_server.client().get_or_create_collection("knowledge-base-graph")
    mine = {"repository": "acme/sweep-demo"}
    _index_incrementally(agent, OUR_REPO)  # another repository in the same collection
    others = set(collection.get(where={"repository": "acme/knowledge-graph-agent"})["ids"])
    _index_incrementally(agent, SWEPT_REPO)
    before = collection.get(where=mine)
    assert len(before["ids"]) == 3
    clone = agent.workdir / "temp_repo" / "acme" / "sweep-demo"
    (clone / "module_1.py").write_text("sweep-demo: module 1, rewritten\n")
    (clone / "module_2.py").unlink()
    (clone / "module_3.py").write_text("sweep-demo: module 3, new\n")
    _index_incrementally(agent, SWEPT_REPO)
    after = collection.get(where=mine)
    assert sorted(after["documents"]) == [
        "sweep-demo: module 0 of acme/sweep-demo\n",
        "sweep-demo: module 1, rewritten\n",
        "sweep-demo: module 3, new\n",
    ]
    by_text = dict(zip(before["documents"], before["ids"], strict=True))
    assert by_text["sweep-demo: module 0 of acme/sweep-demo\n"] in after["ids"]  # unchanged: kept, not rewritten
    assert set(collection.get(where={"repository": "acme/knowledge-graph-agent"})["ids"]) == others
    assert any("removed 2 stale chunks of acme/sweep-demo" in line for line in agent.log_lines())


# ------------------------------------------------------------------ caches


def test_repeated_query_hits_redis_for_embedding_and_llm(
    agent: Agent, fake_llm: FakeOpenAI, redis_server: RedisServer
) -> None:
    """Defect 3: Redis was a cost with no effect; now the second identical query never reaches the provider."""
    question = "what does the cache hold?"
    hits = {c: agent.metric("kga_cache_requests_total", cache=c, result="hit") for c in ("llm", "embeddings")}
    calls = []
    for _ in range(2):
        before = dict(fake_llm.calls)
        status, _, _ = _http("POST", f"{agent.url}/api/v1/query", {"query": question})
        assert status == 200
        calls.append({k: fake_llm.calls[k] - before.get(k, 0) for k in ("embeddings", "chat")})
    assert calls[0] == {"embeddings": 1, "chat": 1}, calls
    assert calls[1] == {"embeddings": 0, "chat": 0}, f"the repeated query went to the provider: {calls}"
    assert agent.metric("kga_cache_requests_total", cache="embeddings", result="hit") >= hits["embeddings"] + 1
    assert agent.metric("kga_cache_requests_total", cache="llm", result="hit") == hits["llm"] + 1
    assert agent.metric("kga_queries_total", outcome="succeeded") >= 2
    client = redis_server.client()
    llm_keys = list(client.scan_iter(match="kga:llm:*"))
    emb_keys = list(client.scan_iter(match="kga:emb:*"))
    assert llm_keys and emb_keys
    assert 0 < client.ttl(llm_keys[0]) <= 600 and 600 < client.ttl(emb_keys[0]) <= 900


# -------------------------------------------------------------------- logs


def test_every_log_line_of_a_request_carries_its_id_and_no_credential(agent: Agent) -> None:
    """Seed 3.1, defect 8: the indexer logs the clone URL; the token must not appear, the request ID must."""
    rid = "req-acme-0001"
    status, headers, body = _http(
        "POST",
        f"{agent.url}/api/v1/index/repository",
        {"repository_url": OUR_REPO, "incremental": False},
        headers={"x-request-id": rid},
    )
    assert status == 200 and headers["x-request-id"] == rid
    agent.wait_workflow(body["workflow_id"])
    lines = agent.log_lines()
    assert lines and all(line.startswith("{") for line in lines), [ln for ln in lines if not ln.startswith("{")][:5]
    records = agent.json_lines()
    assert all({"ts", "level", "logger", "msg", "request_id"} <= set(r) for r in records)
    mine = [r for r in records if r["request_id"] == rid]
    assert any("Cloning repository" in r["msg"] for r in mine), "the indexer's lines lost the request ID"
    assert any("Loading files from" in r["msg"] for r in mine), "the indexer's pool threads lost the request ID"
    assert any(r["logger"] == "kga.access" for r in mine)
    clone = next(r["msg"] for r in mine if "Cloning repository" in r["msg"])
    assert "github.com/acme/knowledge-graph-agent.git" in clone, clone
    text = agent.log_path.read_text()
    assert TOKEN not in text and API_KEY not in text and RedisServer.password not in text
    # A request without an ID gets one, echoed back.
    _, headers, _ = _http("GET", f"{agent.url}/api/v1/stats")
    assert len(headers["x-request-id"]) == 32


def test_a_prober_that_gives_up_leaves_no_traceback_in_the_log(agent: Agent) -> None:
    """A kubelet whose probe timed out closes its connection before the answer. The side server's default
    printed socketserver's traceback to stderr: lines outside the JSON format (seen in the real-app run)."""
    for path in ("/livez", "/readyz", "/metrics") * 10:
        with socket.create_connection(("127.0.0.1", agent.runtime_port), timeout=5) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a reset
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: probe\r\n\r\n".encode())
    assert _http("GET", f"{agent.probes}/livez")[0] == 200  # the server is still there
    time.sleep(0.5)
    lines = agent.log_lines()
    assert not [line for line in lines if not line.startswith("{")], [ln for ln in lines if not ln.startswith("{")][:8]


# ------------------------------------------------------------ repository URL


def test_repository_name_keeps_its_last_letters(agent: Agent) -> None:
    """Defect 8: rstrip(".git") turned knowledge-graph-agent into knowledge-graph-agen."""
    _, _, body = _http(
        "POST", f"{agent.url}/api/v1/index/repository", {"repository_url": OUR_REPO, "incremental": True}
    )
    workflow = agent.wait_workflow(body["workflow_id"])
    assert workflow["repository_name"] == "knowledge-graph-agent"
    assert workflow["clone_url"] == "https://github.com/acme/knowledge-graph-agent.git"  # no token in the URL


_GIT_AUTH = """
import json, os, subprocess
from src.loaders.repository_url_handler import RepositoryUrlHandler
from kga_runtime import adapters

def seen():
    url = RepositoryUrlHandler().build_clone_url("acme", "knowledge-graph-agent", os.environ["GITHUB_TOKEN"])
    get = ["git", "config", "--get-urlmatch", "http.extraheader", url]
    return {"url": url, "header": subprocess.run(get, capture_output=True, text=True).stdout.strip()}

old = seen()
(adapter,) = [a for a in adapters.ADAPTERS if a.name == "repository-urls"]
adapter.apply(None)  # the launcher's step; this adapter reads only the environment
print(json.dumps({"old": old, "new": seen()}))
"""


def test_git_gets_the_token_as_a_header_never_in_the_url(tmp_path: Path) -> None:
    """Defect 8, second half: the app builds ``https://<token>@github.com/...``, logs it and hands it to git as an
    argument (GitCommandExecutor). With the adapter the URL the app logs and passes is bare, and git, as it
    resolves its own configuration for that URL, still sends the token: as an Authorization header."""
    res = subprocess.run(
        [_agent_python(), "-c", _GIT_AUTH],
        cwd=tmp_path,
        env={
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(tmp_path),  # no user or system git configuration of this machine
            "GIT_CONFIG_NOSYSTEM": "1",
            "PYTHONPATH": os.pathsep.join([str(RUNTIME_SRC), str(FIXTURE_APP)]),
            "PYTHONDONTWRITEBYTECODE": "1",
            "GITHUB_TOKEN": TOKEN,
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    seen = json.loads(res.stdout.strip().splitlines()[-1])
    # The app's own behaviour: the token in the URL, nothing in git's configuration.
    assert seen["old"] == {"url": f"https://{TOKEN}@github.com/acme/knowledge-graph-agen.git", "header": ""}
    assert seen["new"]["url"] == "https://github.com/acme/knowledge-graph-agent.git"
    scheme, _, credential = seen["new"]["header"].partition(": Basic ")
    assert scheme == "Authorization", seen
    assert base64.b64decode(credential).decode() == f"x-access-token:{TOKEN}"


def test_metrics_use_route_templates(agent: Agent) -> None:
    _http("GET", f"{agent.url}/api/v1/workflows/0000/status")
    assert (
        agent.metric(
            "kga_http_requests_total", method="GET", route="/api/v1/workflows/{workflow_id}/status", status="404"
        )
        >= 1
    )
    assert agent.metric("kga_http_requests_total", method="GET", route="unmatched", status="404") == 0
    _http("GET", f"{agent.url}/no/such/path")
    assert agent.metric("kga_http_requests_total", method="GET", route="unmatched", status="404") == 1


# ----------------------------------------------------------- old behaviour


def test_old_entry_point_has_each_defect(
    tmp_path: Path, chroma_server: ChromaServer, fake_llm: FakeOpenAI, redis_server: RedisServer
) -> None:
    """The checks above fail on the app's own entry point (python main.py): each defect is real in the stand-in."""
    chroma_server.wipe()
    old = start_agent(
        tmp_path / "old",
        {
            "LLM_API_BASE_URL": fake_llm.base_url,
            "CHROMA_HOST": "127.0.0.1",
            "CHROMA_PORT": str(chroma_server.port),
            "REDIS_URL": _redis_url(redis_server),
        },
        launcher=False,
    )
    try:
        _, _, body = _http(
            "POST",
            f"{old.url}/api/v1/index/repository",
            {"repository_url": OUR_REPO, "incremental": True},
            headers={"x-request-id": "old-1"},
        )
        workflow = old.wait_workflow(body["workflow_id"])
        assert workflow["documents_added"] == 3
        assert json.loads((old.workdir / "indexed_commits.json").read_text()) == {}  # defect 10: no commit recorded
        assert _embedded_count(old.workdir / "chroma_db") == 6  # defect 11: each chunk twice
        assert workflow["repository_name"] == "knowledge-graph-agen"  # the name loses its last letter
        assert (old.workdir / "chroma_db").is_dir()  # an embedded store in the working directory
        assert "knowledge-base-graph" not in [c.name for c in chroma_server.client().list_collections()]
        log = old.log_path.read_text()
        assert TOKEN in log  # the clone URL, token included
        assert not any(line.startswith("{") and "old-1" in line for line in log.splitlines())  # no request ID
        keys = redis_server.client().dbsize()
        thread, _ = _slow_query(old, fake_llm, "old?", delay=4)
        with pytest.raises(OSError):  # a busy pod fails its probe
            _http("GET", f"{old.url}/health", timeout=1.5)
        thread.join()
        assert redis_server.client().dbsize() == keys  # Redis unused
    finally:
        fake_llm.chat_delay = 0
        stop(old.proc)


def _embedded_count(path: Path) -> int:
    """Vectors in the app's embedded store, counted by the agent venv's chromadb (the store's own version)."""
    code = "import chromadb,sys; print(chromadb.PersistentClient(sys.argv[1]).get_collection(sys.argv[2]).count())"
    out = subprocess.run(
        [_agent_python(), "-c", code, str(path), "knowledge-base-graph"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return int(out.stdout.strip())


# ------------------------------------------------------------------- launcher


def _launcher(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_agent_python(), "-m", "kga_runtime", *args],
        cwd=cwd,
        env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(RUNTIME_SRC), "PYTHONDONTWRITEBYTECODE": "1", **env},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_check_resolves_every_adapter_symbol_and_names_a_missing_one(tmp_path: Path) -> None:
    ok = _launcher(["--check"], {"KGA_APP_DIR": str(FIXTURE_APP)}, tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "symbols resolve" in ok.stdout
    broken = tmp_path / "app"
    shutil.copytree(FIXTURE_APP, broken, ignore=shutil.ignore_patterns("__pycache__"))
    factory = broken / "src" / "vectorstores" / "store_factory.py"
    factory.write_text(factory.read_text().replace("def _create_chroma_store", "def _make_chroma_store"))
    bad = _launcher(["--check"], {"KGA_APP_DIR": str(broken)}, tmp_path)
    assert bad.returncode == 1
    assert "src.vectorstores.store_factory:VectorStoreFactory._create_chroma_store" in bad.stderr, bad.stderr


def test_bad_setting_is_named_and_exits_non_zero(tmp_path: Path) -> None:
    res = _launcher([], {"KGA_MAX_IN_FLIGHT": "many"}, tmp_path)
    assert res.returncode == 2
    assert "KGA_MAX_IN_FLIGHT: expected an integer, got 'many'" in res.stderr


def test_scrubber_masks_env_credentials_and_url_userinfo() -> None:
    sys.path.insert(0, str(RUNTIME_SRC))
    try:
        from kga_runtime.logs import Scrubber
    finally:
        sys.path.remove(str(RUNTIME_SRC))
    scrub = Scrubber.from_env(
        {"GITHUB_TOKEN": TOKEN, "OPENAI_API_KEY": API_KEY, "GRAPH_STORE_PASSWORD": "pw-123456", "LOG_LEVEL": "INFO"}
    )
    line = f"clone https://{TOKEN}@github.com/a/b.git key={API_KEY} redis://:other-secret@redis:6379 pw-123456 INFO"
    out = scrub(line)
    assert TOKEN not in out and API_KEY not in out and "other-secret" not in out and "pw-123456" not in out
    assert "https://***@github.com/a/b.git" in out and out.endswith("INFO")
