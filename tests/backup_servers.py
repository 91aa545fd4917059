"""Real servers on loopback for the backup tool tests: redis-server, chroma, moto S3.

Import the fixtures into a test module (``from backup_servers import ...``).
A missing binary skips the tests locally and fails them in CI (``CI`` set).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

BACKUP_DIR = Path(__file__).resolve().parent.parent / "docker" / "backup"
if str(BACKUP_DIR) not in sys.path:
    sys.path.insert(0, str(BACKUP_DIR))

from tools import free_port, missing, require_tool, stop  # noqa: E402

from kgbackup import cli, logjson  # noqa: E402


def require_binary(name: str, hint: str) -> str:
    """Path of ``name``; skip with a reason outside CI, fail inside CI."""
    return require_tool(name, hint=hint)


def wait_for(check: Callable[[], bool], what: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready after {timeout}s")


class RedisServer:
    """A redis-server on 127.0.0.1:<random>, with a password, no persistence."""

    password = "s3cret-test-pw"

    def __init__(self, binary: str, workdir: Path) -> None:
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        # Password via a config file on stdin, so it is not on a command line (as in prod).
        config = (
            f"port {self.port}\nbind 127.0.0.1\nsave ''\nappendonly no\ndir {workdir}\n"
            f"requirepass {self.password}\nrepl-diskless-sync-delay 0\nlogfile {workdir}/redis.log\n"
        )
        self.proc = subprocess.Popen([binary, "-"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        assert self.proc.stdin is not None
        self.proc.stdin.write(config.encode())
        self.proc.stdin.close()
        wait_for(lambda: bool(self.client().ping()), "redis-server", self.proc)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self, db: int = 0) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, db=db, password=self.password)


@pytest.fixture
def redis_factory(tmp_path: Path) -> Iterator[Callable[[], RedisServer]]:
    binary = require_binary("redis-server", "apt-get install -y redis-server")
    servers: list[RedisServer] = []

    def make() -> RedisServer:
        servers.append(RedisServer(binary, tmp_path / f"redis{len(servers)}"))
        return servers[-1]

    yield make
    for server in servers:
        stop(server.proc)


class ChromaServer:
    def __init__(self, binary: str, workdir: Path) -> None:
        self.port = free_port()
        self.log = (workdir / "chroma.log").open("wb")
        self.proc = subprocess.Popen(
            [binary, "run", "--host", "127.0.0.1", "--port", str(self.port), "--path", str(workdir / "data")],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "ANONYMIZED_TELEMETRY": "False"},
        )
        wait_for(lambda: self.client().heartbeat() > 0, "chroma", self.proc, timeout=90)

    def client(self) -> Any:
        import chromadb
        from chromadb.config import Settings

        return chromadb.HttpClient(host="127.0.0.1", port=self.port, settings=Settings(anonymized_telemetry=False))

    def wipe(self) -> None:
        client = self.client()
        for col in client.list_collections():
            client.delete_collection(col.name)


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChromaServer]:
    """One server per session (start-up takes seconds); tests call ``wipe()`` first."""
    binary = require_binary("chroma", "pip install -r requirements/backup-test.txt")
    server = ChromaServer(binary, tmp_path_factory.mktemp("chroma"))
    yield server
    stop(server.proc)
    server.log.close()


@pytest.fixture
def chroma(chroma_server: ChromaServer) -> ChromaServer:
    chroma_server.wipe()
    return chroma_server


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on loopback, with dummy credentials in the environment."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        missing("moto[server] not installed (pip install -r requirements/backup-test.txt)")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_target(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    import uuid

    import boto3

    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    bucket = f"kgb-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    return f"s3://{bucket}/backups"


class IndexerApi:
    """The two routes of the agent's indexer that a backup reads, in src/api/routes.py's shapes, on loopback.

    ``tracker()`` is the content of ``indexed_commits.json``; ``busy()`` whether an indexing workflow runs.
    """

    def __init__(self, tracker: Callable[[], dict[str, Any]], busy: Callable[[], bool] = lambda: False) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/api/v1/commits/tracking":
                    tracked = tracker()
                    body: Any = {"tracked_repositories": tracked, "statistics": {}, "total_repositories": len(tracked)}
                elif self.path == "/api/v1/workflows?include_completed=false":
                    body = [{"workflow_id": "wf-1", "workflow_type": "indexing", "status": "running"}] if busy() else []
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        import threading

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.http.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


def run_cli(*argv: str) -> tuple[int, list[dict[str, Any]]]:
    """Run the CLI in-process; returns the exit code and the parsed JSON log lines."""
    buf = io.StringIO()
    logjson.set_stream(buf)
    try:
        code = cli.main(list(argv))
    finally:
        logjson.set_stream(None)
    lines = [json.loads(line) for line in buf.getvalue().splitlines() if line.strip()]
    return code, lines


def error_of(lines: list[dict[str, Any]]) -> str:
    errors = [line for line in lines if line["level"] == "error"]
    assert errors, lines
    assert "traceback" not in errors[-1], errors[-1]
    return str(errors[-1]["error"])


def dump_object(target_dir: Path, store: str) -> tuple[Path, Path]:
    """(dump object, manifest) of the only backup of ``store`` under a file:// target dir."""
    (backup_dir,) = [p for p in (target_dir / store).iterdir() if p.is_dir()]
    (obj,) = backup_dir.glob("dump.*.gz")
    return obj, backup_dir / "manifest.json"
