"""The Compose target, run for real: a project our renderer writes, up on Debian's Docker Engine, driven.

The environment is ``environments/single.yaml`` with what cannot run here swapped, and nothing else:

* images: built locally with podman (tests/image_build.py) and loaded into the engine, the agent being the
  stand-in app with our runtime layer (as tests/test_images.py builds it); nginx-unprivileged is a Debian nginx
  stand-in (tests/fixtures/nginx-unprivileged);
* the vector store is pinecone (so no Chroma server, whose image cannot be built here): the stack's stores are
  then Redis only; stage staging (upstream images unpinned);
* backups go to a folder of the test (``KGB_TARGET=file:///backups`` for the run) instead of S3.

The project is rendered by :class:`kgstack.compose_project.ComposeProject` and checked by the gate first, so
the run starts exactly what ``make synth`` would write for that file.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from base64 import b64encode
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import DELETE, ROOT, env_data
from docker_engine import DockerEngine
from image_build import AGENT_DOCKERFILE, CACHE_DIR, build_command, tool_command
from tools import free_port, missing

from kgstack.compose_gate import ComposeGate
from kgstack.compose_project import ComposeProject
from kgstack.environment import parse_environment

COMPOSE = ROOT / ".tools" / "compose" / "docker-compose"
BASE_SCRIPT = ROOT / "scripts" / "build-test-base.sh"
FIXTURE_APP = ROOT / "tests" / "fixtures" / "agent-app"
NGINX_STANDIN = ROOT / "tests" / "fixtures" / "nginx-unprivileged" / "Dockerfile"
PROJECT = "kga-run"
KEY = secrets.token_hex(32)

IMAGES = {  # images.<name> of the environment -> what is built for it
    "agent": "localhost/kga-agent:compose",
    "web": "localhost/kga-web:compose",
    "backup": "localhost/kgbackup:compose",
    "redis": "localhost/kga-redis:compose",
    "nginx": "localhost/kga-nginx:compose",
}


def _run(cmd: list[str], timeout: float, **kw: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, **kw)
    if result.returncode != 0:
        pytest.fail(
            f"{' '.join(cmd[:8])} ... failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    if os.geteuid() != 0:
        missing("image builds and dockerd need root")
    podman = tool_command("podman")
    if podman is None or not shutil.which("debootstrap"):
        missing("podman and debootstrap not installed (apt-get install podman buildah debootstrap)")
    if not os.access(COMPOSE, os.X_OK):
        missing(f"{COMPOSE.relative_to(ROOT)} missing: run scripts/setup.sh test (builds Docker Compose)")
    base = _run(["bash", str(BASE_SCRIPT)], 900, env={**os.environ, "KGA_IMAGE_CACHE": str(CACHE_DIR)})
    base_ref = base.stdout.strip().splitlines()[-1]
    ctx = tmp_path_factory.mktemp("agent-ctx") / "app"
    shutil.copytree(FIXTURE_APP, ctx, ignore=shutil.ignore_patterns("__pycache__"))
    docker = ROOT / "docker"
    builds = [
        # The build arguments of tests/test_images.py: podman reuses its layers.
        (AGENT_DOCKERFILE, IMAGES["agent"], base_ref, ctx, ["--build-arg", "VERSION=test", "--build-arg",
                                                           "VCS_REF=fixture"]),
        (docker / "redis" / "Dockerfile", IMAGES["redis"], base_ref, docker / "redis", []),
        (docker / "backup" / "Dockerfile", IMAGES["backup"], base_ref, docker / "backup", []),
        (NGINX_STANDIN, IMAGES["nginx"], base_ref, NGINX_STANDIN.parent, []),
        (docker / "web" / "Dockerfile", IMAGES["web"], IMAGES["nginx"], docker / "web",
         ["--build-context", f"agent={FIXTURE_APP}"]),
    ]  # fmt: skip
    for dockerfile, tag, base_image, context, extra in builds:
        started = time.monotonic()
        _run(build_command(podman, dockerfile, tag, base_image, context, *extra), 1800)
        print(f"[compose-run] built {tag} in {time.monotonic() - started:.0f} s")
    return podman


def run_environment() -> dict[str, Any]:
    """single.yaml with the swaps of the module docstring."""
    return env_data(
        "single",
        stage="staging",
        agent__vectorStore__type="pinecone",
        stores__chroma=DELETE,
        images={
            name: dict(zip(("repository", "tag"), ref.rsplit(":", 1), strict=True)) for name, ref in IMAGES.items()
        },
    )


def _secret_files(folder: Path, domain: str) -> None:
    values = {
        "kga-agent/OPENAI_API_KEY": "sk-test-not-used",
        "kga-agent/GITHUB_TOKEN": "ghp-test-not-used",
        "kga-agent/PINECONE_API_KEY": "pc-test-not-used",
        "kga-backup/credentials": "[default]\naws_access_key_id = unused\naws_secret_access_key = unused\n",
    }
    passwords = {k: secrets.token_hex(16) for k in ("app-password", "exporter-password", "backup-password")}
    values |= {f"kga-redis/{k}": v for k, v in passwords.items()}
    values["kga-redis/url"] = f"redis://app:{passwords['app-password']}@kga-{'single'}-redis:6379/0"
    basic = b64encode(f"kga:{KEY}".encode()).decode()
    values["kga-edge-keys/keys.map"] = f'"{KEY}" test-client;\n"basic:{basic}" test-client;\n'
    for path, value in values.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text(value)
    tls = folder / "kga-edge-tls"
    tls.mkdir()
    _run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
         "-subj", f"/CN={domain}", "-addext", f"subjectAltName=DNS:{domain}",
         "-keyout", str(tls / "tls.key"), "-out", str(tls / "tls.crt")],
        60,
    )  # fmt: skip
    for path in folder.rglob("*"):
        os.chown(path, 10001, 10001)
        path.chmod(0o700 if path.is_dir() else 0o400)


class Stack:
    """The running project: compose commands, requests through the edge, containers."""

    def __init__(self, engine: DockerEngine, folder: Path, secret_dir: Path, domain: str) -> None:
        self.engine, self.folder, self.domain = engine, folder, domain
        self.https, self.http = free_port(), free_port()
        self.env = {
            **engine.env,
            "KGA_SECRETS": str(secret_dir),
            "KGA_HTTPS_PORT": str(self.https),
            "KGA_HTTP_PORT": str(self.http),
            "KGA_BIND": "127.0.0.1",
        }

    def compose(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [
            str(COMPOSE),
            "-p",
            PROJECT,
            "--project-directory",
            str(self.folder),
            "-f",
            str(self.folder / "compose.yaml"),
            *args,
        ]
        result = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout, check=False)
        if check and result.returncode != 0:
            logs = subprocess.run(
                [*cmd[:5], "logs", "--no-color", "--tail", "40"],
                env=self.env,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            ).stdout
            pytest.fail(
                f"compose {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-4000:]}\n{logs[-6000:]}"
            )
        return result

    def request(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
        context = ssl.create_default_context(cafile=str(self.secret("kga-edge-tls/tls.crt")))
        context.check_hostname = False  # the certificate names the domain; we connect to 127.0.0.1
        request = urllib.request.Request(
            f"https://127.0.0.1:{self.https}{path}", headers={"Host": self.domain, **(headers or {})}
        )
        try:
            with urllib.request.urlopen(request, context=context, timeout=30) as response:
                return response.status, dict(response.headers), response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read().decode(errors="replace")

    def secret(self, path: str) -> Path:
        return Path(self.env["KGA_SECRETS"]) / path

    def exec(self, service: str, script: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.compose("exec", "-T", service, "sh", "-c", script, check=check, timeout=120)

    def redis_cli(self, *args: str) -> str:
        auth = 'REDISCLI_AUTH="$(cat /secrets/app-password)" redis-cli --user app --no-auth-warning'
        return self.exec("redis", f"{auth} {' '.join(args)}").stdout.strip()

    def container(self, service: str) -> dict[str, Any]:
        ids = self.compose("ps", "-q", service).stdout.split()
        return json.loads(self.engine.docker("inspect", ids[0]).stdout)[0]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def stack(images: list[str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = parse_environment(run_environment(), source="environments/single.yaml (run)")
    project = ComposeProject(env)
    files = project.files()
    assert ComposeGate(files).problems() == []
    folder = tmp_path_factory.mktemp("project")
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    secret_dir = tmp_path_factory.mktemp("secrets")
    _secret_files(secret_dir, env.domain)
    engine = DockerEngine(Path(f"/tmp/kga-engine-{os.getpid()}")).start()
    try:
        started = time.monotonic()
        for name, ref in IMAGES.items():
            engine.load(images, ref, tag=getattr(env.images, name).reference)
        print(f"[compose-run] loaded images in {time.monotonic() - started:.0f} s")
        running = Stack(engine, folder, secret_dir, env.domain)
        started = time.monotonic()
        running.compose("up", "-d", "--wait", "--wait-timeout", "600", timeout=900)
        print(f"[compose-run] up --wait in {time.monotonic() - started:.0f} s")
        yield running
        running.compose("down", "--volumes", "--timeout", "20", check=False)
    finally:
        engine.remove()


def test_every_long_running_service_is_up_and_healthy(stack: Stack) -> None:
    states = [json.loads(line) for line in stack.compose("ps", "--format", "json").stdout.splitlines() if line]
    by_service = {s["Service"]: s for s in states}
    for service in ("edge", "auth", "web", "query", "indexer", "redis"):
        assert by_service[service]["Health"] == "healthy", by_service[service]
    assert "volumes" not in by_service, "the one-shot volume owner has exited"


def test_a_request_with_a_key_reaches_the_agent_through_the_edge(stack: Stack) -> None:
    status, headers, body = stack.request("/api/v1/health", {"X-API-Key": KEY})
    assert status == 200, body
    assert json.loads(body)["status"] == "healthy"
    assert headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    assert headers["X-Request-ID"]
    status, _, body = stack.request("/api/v1/stats", {"Authorization": f"Bearer {KEY}"})
    assert status == 200, body


def test_a_request_without_a_key_is_refused(stack: Stack) -> None:
    status, headers, _ = stack.request("/api/v1/health")
    assert status == 401
    assert headers.get("WWW-Authenticate", "").startswith("Basic")
    assert stack.request("/api/v1/health", {"X-API-Key": "0" * 64})[0] == 401


def test_blocked_paths_are_refused_even_with_a_key(stack: Stack) -> None:
    for path in ("/api/v1/workflows/debug", "/API/v1/workflows/DEBUG", "/api/v1//graph/query"):
        assert stack.request(path, {"X-API-Key": KEY})[0] == 403, path


def test_plain_http_redirects_to_https(stack: Stack) -> None:
    request = urllib.request.Request(f"http://127.0.0.1:{stack.http}/api/v1/health", headers={"Host": stack.domain})

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any) -> None:
            return None

    try:
        urllib.request.build_opener(NoRedirect).open(request, timeout=10)
        pytest.fail("no redirect")
    except urllib.error.HTTPError as exc:
        assert exc.code == 301
        assert exc.headers["Location"] == f"https://{stack.domain}/api/v1/health"


def test_the_store_is_reachable_from_the_agent_only(stack: Stack) -> None:
    probe = "import socket; socket.create_connection(('kga-single-redis', 6379), timeout=3); print('open')"
    assert stack.compose("exec", "-T", "query", "python", "-c", probe).stdout.strip() == "open"
    assert stack.compose("exec", "-T", "indexer", "python", "-c", probe).stdout.strip() == "open"
    for service in ("edge", "web", "auth"):
        tried = stack.exec(service, "wget -q -T 3 -O- http://kga-single-redis:6379/ 2>&1; echo rc=$?", check=False)
        said = (tried.stdout + tried.stderr).lower()
        assert "rc=0" not in said, (service, said)
        assert any(s in said for s in ("unable to resolve", "bad address", "not known", "failed")), (service, said)
    redis = stack.container("redis")
    assert not any(redis["NetworkSettings"]["Ports"].values()), "nothing of the store is published"


def test_backup_wipe_and_restore_lose_nothing(stack: Stack, tmp_path: Path) -> None:
    backups = tmp_path / "backups"
    backups.mkdir()
    os.chown(backups, 10001, 10001)
    target = ["-e", "KGB_TARGET=file:///backups", "-v", f"{backups}:/backups"]
    for i in range(50):
        stack.redis_cli("SET", f"k{i}", f"v{i}")
    stack.redis_cli("SET", "session", "kept", "EX", "86400")
    before = stack.redis_cli("DBSIZE")
    stack.compose("--profile", "backup", "run", "--rm", "--no-deps", *target, "backup-redis", timeout=600)
    # The wipe: the store and its volume are gone.
    stack.compose("rm", "--stop", "--force", "redis")
    volume = f"{PROJECT}_redis-data"
    stack.engine.docker("volume", "rm", volume)
    # A new volume: the one-shot owner runs again before Redis mounts it, as on the first start.
    stack.compose("up", "-d", "--wait", "--force-recreate", "volumes", "redis", timeout=600)
    assert stack.redis_cli("DBSIZE") == "0"
    restored = stack.compose("--profile", "restore", "run", "--rm", "--no-deps", *target, "restore-redis", timeout=900)
    assert '"restore.done"' in restored.stdout, restored.stdout[-3000:]
    assert stack.redis_cli("DBSIZE") == before
    assert stack.redis_cli("GET", "k49") == "v49"
    assert stack.redis_cli("GET", "session") == "kept"


def test_a_killed_service_comes_back_with_its_data(stack: Stack) -> None:
    marker = json.dumps({"acme/kga": {"last_commit": "abc123"}})
    stack.compose(
        "exec",
        "-T",
        "indexer",
        "python",
        "-c",
        f"import pathlib; pathlib.Path('indexed_commits.json').write_text({marker!r})",
    )
    before = stack.container("indexer")
    os.kill(before["State"]["Pid"], 9)  # a crash, not `docker stop`: the restart policy brings it back
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        now = stack.container("indexer")
        if now["RestartCount"] > before["RestartCount"] and now["State"].get("Health", {}).get("Status") == "healthy":
            break
        time.sleep(2)
    else:
        pytest.fail(f"the indexer did not come back healthy: {now['State']}")
    read = stack.compose("exec", "-T", "indexer", "python", "-c", "print(open('indexed_commits.json').read())")
    assert json.loads(read.stdout) == json.loads(marker)
    status, _, body = stack.request("/api/v1/commits/tracking", {"X-API-Key": KEY})
    assert status == 200, body
