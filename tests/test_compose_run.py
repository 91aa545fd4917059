"""The Compose target, run for real: a project our renderer writes, up on Debian's Docker Engine, driven.

The environment is ``environments/single.yaml`` with what cannot run here swapped, and nothing else:

* images: built locally with podman (tests/image_build.py) and loaded into the engine: the agent (the stand-in
  app with our runtime layer, trusting the node test CA), Chroma, Redis, the backup tool and redis_exporter are
  the real node's builds (tests/real_node.py ``Images``); nginx-unprivileged is a Debian nginx stand-in with
  wget, the health checks' client (tests/fixtures/nginx-unprivileged), and the web UI is built on it; stage
  staging (the stand-ins are unpinned);
* the model provider: tests/fake_openai.py in a container on the ``egress`` network, answering as
  ``api.openai.com`` (the default provider the file renders) with a certificate of the node test CA;
* the backup target: the rendered ``s3://`` bucket on a moto S3 server bound to the ``egress`` network's gateway
  (an address of this host the containers reach); ``KGB_S3_ENDPOINT_URL`` is set to it for each run, as
  ``backup.s3EndpointUrl`` must be https.

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
import yaml
from conftest import ROOT, env_data
from docker_engine import DockerEngine, transient
from fake_openai import vector
from image_build import build_command, tool_command
from real_node import OPENAI_HOST, Images, _certificate, local, node_ca
from rendered import CHROMA_CONTENT
from tools import free_port, missing

from kgstack.compose_gate import ComposeGate
from kgstack.compose_project import ComposeProject
from kgstack.environment import parse_environment

pytestmark = pytest.mark.go_build("compose")

COMPOSE = ROOT / ".tools" / "compose" / "docker-compose"
FIXTURE_APP = ROOT / "tests" / "fixtures" / "agent-app"
NGINX_STANDIN = ROOT / "tests" / "fixtures" / "nginx-unprivileged" / "Dockerfile"
PROJECT = "kga-run"
KEY = secrets.token_hex(32)

NODE_BUILDS = {
    "agent": "agent",
    "chroma": "chroma",
    "redis": "redis",
    "backup": "backup",
    "redis_exporter": "redis-exporter",
}
"""images.<name> of the environment -> the real node's build of it (tests/real_node.py ``Images``)."""
IMAGES = {  # images.<name> of the environment -> what is loaded for it
    **{name: local(build) for name, build in NODE_BUILDS.items()},
    "nginx": "localhost/kga-nginx:compose",
    "web": "localhost/kga-web:compose",
}
DOCS = {f"src/module_{i}.py": f"def step_{i}(): return 'the indexer walks repository {i}'" for i in range(24)}
"""What the test puts in Chroma: the agent's collection, embedded as the fake provider embeds."""


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
    if not shutil.which("prometheus-redis-exporter"):
        missing("prometheus-redis-exporter not installed (scripts/setup.sh test installs it)")
    node = Images(tmp_path_factory.mktemp("images"))
    node.build(set(NODE_BUILDS.values()))  # the real node's recipes, layers shared with its runs
    print(f"[compose-run] node builds (s): { {k: round(v) for k, v in node.built.items()} }")
    builds = [
        (NGINX_STANDIN, IMAGES["nginx"], node.base, NGINX_STANDIN.parent, []),
        (ROOT / "docker" / "web" / "Dockerfile", IMAGES["web"], IMAGES["nginx"], ROOT / "docker" / "web",
         ["--build-context", f"agent={FIXTURE_APP}"]),
    ]  # fmt: skip
    for dockerfile, tag, base_image, context, extra in builds:
        started = time.monotonic()
        _run(build_command(node.podman, dockerfile, tag, base_image, context, *extra), 1800)
        print(f"[compose-run] built {tag} in {time.monotonic() - started:.0f} s")
    return node.podman


def run_environment() -> dict[str, Any]:
    """single.yaml with the swaps of the module docstring."""
    return env_data(
        "single",
        stage="staging",
        images={
            name: dict(zip(("repository", "tag"), ref.rsplit(":", 1), strict=True)) for name, ref in IMAGES.items()
        },
    )


def _secret_files(folder: Path, project: ComposeProject) -> None:
    """Every file the project's secrets name (``secret_files``), as docs/single-server.md makes them."""
    redis = project.env.instance + "-redis"
    values = {
        "kga-agent/OPENAI_API_KEY": "sk-test-the-fake-provider-takes-any",
        "kga-agent/GITHUB_TOKEN": "ghp-test-not-used",
        "kga-agent/EMBEDDING_API_KEY": "",  # optional: an empty file leaves the variable unset
        "kga-backup/credentials": "[default]\naws_access_key_id = testing\naws_secret_access_key = testing\n",
    }
    passwords = {k: secrets.token_hex(16) for k in ("app-password", "exporter-password", "backup-password")}
    values |= {f"kga-redis/{k}": v for k, v in passwords.items()}
    values["kga-redis/url"] = f"redis://app:{passwords['app-password']}@{redis}:6379/0"
    exporter = passwords["exporter-password"]
    # redis_exporter looks the password up by its REDIS_ADDR (v1.66.0), or with the user in it (later releases).
    values["kga-redis/exporter-password.json"] = json.dumps(
        {f"redis://{redis}:6379": exporter, f"redis://exporter@{redis}:6379": exporter}
    )
    basic = b64encode(f"kga:{KEY}".encode()).decode()
    values["kga-edge-keys/keys.map"] = f'"{KEY}" test-client;\n"basic:{basic}" test-client;\n'
    for path, value in values.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text(value)
    tls = folder / "kga-edge-tls"
    tls.mkdir()
    domain = project.env.domain
    _run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
         "-subj", f"/CN={domain}", "-addext", f"subjectAltName=DNS:{domain}",
         "-keyout", str(tls / "tls.key"), "-out", str(tls / "tls.crt")],
        60,
    )  # fmt: skip
    written = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert written == project.secret_files, "the secret files the project names"
    for entry in folder.rglob("*"):
        os.chown(entry, 10001, 10001)
        entry.chmod(0o700 if entry.is_dir() else 0o400)


class Stack:
    """The running project: compose commands, requests through the edge, containers."""

    def __init__(self, engine: DockerEngine, folder: Path, secret_dir: Path, domain: str) -> None:
        self.engine, self.folder, self.domain = engine, folder, domain
        self.project: dict[str, Any] = yaml.safe_load((folder / "compose.yaml").read_text())
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
        for _ in range(3):
            result = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout, check=False)
            if result.returncode == 0 or not transient(result.stderr):
                break
            time.sleep(2)
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

    def request(
        self, path: str, headers: dict[str, str] | None = None, body: dict[str, Any] | None = None
    ) -> tuple[int, dict[str, str], str]:
        """A request through the edge (a POST of ``body`` as JSON when given)."""
        context = ssl.create_default_context(cafile=str(self.secret("kga-edge-tls/tls.crt")))
        context.check_hostname = False  # the certificate names the domain; we connect to 127.0.0.1
        request = urllib.request.Request(
            f"https://127.0.0.1:{self.https}{path}",
            headers={"Host": self.domain, **(headers or {}), **({"Content-Type": "application/json"} if body else {})},
            data=json.dumps(body).encode() if body is not None else None,
        )
        try:
            with urllib.request.urlopen(request, context=context, timeout=120) as response:
                return response.status, dict(response.headers), response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read().decode(errors="replace")

    def secret(self, path: str) -> Path:
        return Path(self.env["KGA_SECRETS"]) / path

    def exec(self, service: str, script: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.compose("exec", "-T", service, "sh", "-c", script, check=check, timeout=120)

    def python(self, service: str, code: str) -> str:
        return self.compose("exec", "-T", service, "python", "-c", code, timeout=300).stdout.strip()

    def network(self, name: str) -> str:
        return f"{PROJECT}_{name}"

    def redis_cli(self, *args: str) -> str:
        auth = 'REDISCLI_AUTH="$(cat /secrets/app-password)" redis-cli --user app --no-auth-warning'
        return self.exec("redis", f"{auth} {' '.join(args)}").stdout.strip()

    def wait_healthy(self, *services: str, timeout: float = 300) -> None:
        """Every container of ``services`` healthy: ``up --wait`` gives up on a client whose store was away
        (its readiness follows the store's) instead of waiting for it to recover."""
        deadline = time.monotonic() + timeout
        while True:
            states = [json.loads(line) for line in self.compose("ps", "--format", "json").stdout.splitlines() if line]
            health = {(s["Service"], s["Name"]): s.get("Health") for s in states if s["Service"] in services}
            if {service for service, _ in health} == set(services) and set(health.values()) == {"healthy"}:
                return
            if time.monotonic() > deadline:
                logs = {name: self.engine.docker("inspect", name).stdout[-1500:] for (_, name), h in health.items()
                        if h != "healthy"}  # fmt: skip
                pytest.fail(f"not healthy after {timeout} s: {health}\n{logs}")
            time.sleep(3)

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
    _secret_files(secret_dir, project)
    engine = DockerEngine(Path(f"/tmp/kga-engine-{os.getpid()}")).start()
    running = Stack(engine, folder, secret_dir, env.domain)
    try:
        started = time.monotonic()
        for name, ref in IMAGES.items():
            engine.load(images, ref, tag=env.images.all()[name].reference)
        print(f"[compose-run] loaded images in {time.monotonic() - started:.0f} s")
        started = time.monotonic()
        for attempt in range(3):
            # On a host this loaded (load average 20-40 on 2 cores) an agent tier's readiness (event-loop lag,
            # a 3 s check) can flip to unhealthy while Compose waits for the others, and `up --wait` then gives up
            # at once: start again from where it stopped, at most twice.
            up = running.compose("up", "-d", "--wait", "--wait-timeout", "600", timeout=900, check=attempt == 2)
            if up.returncode == 0:
                break
            if "is unhealthy" not in up.stderr:
                pytest.fail(f"compose up --wait failed ({up.returncode}):\n{up.stderr[-4000:]}")
            print(f"[compose-run] up --wait: {up.stderr.strip().splitlines()[-1]}; again")
        print(f"[compose-run] up --wait in {time.monotonic() - started:.0f} s")
        yield running
    finally:
        # Also after a failed start: dockerd leaves its networks' bridges and iptables rules on the host when it
        # stops, so the project's networks go first.
        running.compose("down", "--volumes", "--timeout", "20", check=False)
        engine.remove()


FAKE_PROVIDER = """
import ssl, sys
from http.server import ThreadingHTTPServer
sys.path.insert(0, "/fake")
from fake_openai import FakeOpenAI
fake = FakeOpenAI()
fake.server.server_close()
server = ThreadingHTTPServer(("0.0.0.0", 443), fake.server.RequestHandlerClass)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain("/tls/provider.pem", "/tls/provider.key")
server.socket = context.wrap_socket(server.socket, server_side=True)
print("serving", flush=True)
server.serve_forever()
"""
PROVIDER_STATS = (
    "import ssl, urllib.request as u; "
    "print(u.urlopen('https://127.0.0.1/stats', context=ssl._create_unverified_context()).read().decode())"
)


class Provider:
    """tests/fake_openai.py in a container of the engine, at the provider's public name on ``egress``."""

    def __init__(self, stack: Stack, container: str) -> None:
        self.stack, self.container = stack, container

    def calls(self) -> dict[str, int]:
        out = self.stack.engine.docker("exec", self.container, "python", "-c", PROVIDER_STATS).stdout
        return json.loads(out)["calls"]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def provider(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    tls = tmp_path_factory.mktemp("provider")
    ca_cert, ca_key = node_ca()  # the agent image trusts it (tests/real_node.py)
    key, cert = _certificate(OPENAI_HOST, (ca_key.read_bytes(), ca_cert.read_bytes()))
    (tls / "provider.key").write_bytes(key)
    (tls / "provider.pem").write_bytes(cert)
    for path in (tls, *tls.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)
    name = f"{PROJECT}-provider"
    stack.engine.docker(
        "run", "-d", "--name", name, "--network", stack.network("egress"), "--network-alias", OPENAI_HOST,
        "--user", "10001:10001", "--read-only", "--cap-drop", "ALL",
        "--sysctl", "net.ipv4.ip_unprivileged_port_start=443",
        "-v", f"{ROOT / 'tests'}:/fake:ro", "-v", f"{tls}:/tls:ro",
        "--entrypoint", "python", IMAGES["agent"], "-c", FAKE_PROVIDER,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while "serving" not in stack.engine.docker("logs", name).stdout:
        assert time.monotonic() < deadline, stack.engine.docker("logs", name).stderr
        time.sleep(0.5)
    yield Provider(stack, name)
    stack.engine.docker("rm", "-f", name, check=False)


class S3:
    """moto's S3 server on the ``egress`` network's gateway: the rendered bucket, reached by the backup runs."""

    def __init__(self, endpoint: str) -> None:
        import boto3

        self.endpoint = endpoint
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def run(self) -> list[str]:
        """``compose run`` options of a backup or restore against this server."""
        return ["-e", f"KGB_S3_ENDPOINT_URL={self.endpoint}"]

    def keys(self, bucket: str, prefix: str) -> list[str]:
        listed = self.client.list_objects_v2(Bucket=bucket, Prefix=prefix)
        return [o["Key"] for o in listed.get("Contents", [])]


@pytest.fixture(scope="module")
def s3(stack: Stack, target: tuple[str, str]) -> Iterator[S3]:
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        missing("moto[server] not installed (scripts/setup.sh test installs requirements/backup-test.txt)")
    inspect = stack.engine.docker("network", "inspect", stack.network("egress"), "--format", "{{json .IPAM.Config}}")
    gateway = json.loads(inspect.stdout)[0]["Gateway"]
    port = free_port()
    server = ThreadedMotoServer(ip_address=gateway, port=port, verbose=False)
    server.start()
    try:
        store = S3(f"http://{gateway}:{port}")
        store.client.create_bucket(Bucket=target[0])
        yield store
    finally:
        server.stop()


@pytest.fixture(scope="module")
def target(stack: Stack) -> tuple[str, str]:
    """The rendered backup target's bucket and prefix."""
    rendered = stack.project["services"]["backup-redis"]["environment"]["KGB_TARGET"]
    bucket, _, prefix = rendered.removeprefix("s3://").partition("/")
    return bucket, prefix


def chroma_content(stack: Stack, add: dict[str, Any] | None = None) -> dict[str, Any]:
    """The agent's collection, read (or first added to) by the indexer through the Chroma client it runs."""
    argv = ["add", json.dumps(add)] if add else ["get"]
    out = stack.compose("exec", "-T", "indexer", "python", "-c", CHROMA_CONTENT, *argv, timeout=300).stdout
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def indexed(stack: Stack) -> dict[str, Any]:
    """:data:`DOCS` in Chroma, as the indexer would write them."""
    docs = {source: {"text": text, "vector": vector(text)} for source, text in DOCS.items()}
    content = chroma_content(stack, docs)
    assert len(content) == len(DOCS)
    return content


def test_every_long_running_service_is_up_and_healthy(stack: Stack) -> None:
    # Healthy after `up --wait` already; a check that timed out on this loaded host meanwhile is given time
    # to pass again (Compose health steers no traffic: the edge resolves the names whatever their health).
    stack.wait_healthy("edge", "auth", "web", "query", "indexer", "redis", "chroma", timeout=120)
    states = [json.loads(line) for line in stack.compose("ps", "--format", "json").stdout.splitlines() if line]
    by_service = {s["Service"]: s for s in states}
    assert by_service["redis-exporter"]["State"] == "running", by_service["redis-exporter"]
    assert "volumes" not in by_service, "the one-shot volume owner has exited"


def test_the_agent_reaches_chroma_by_its_service_name(stack: Stack) -> None:
    beat = "import os, urllib.request as u; print(u.urlopen(f'http://{os.environ[\"CHROMA_HOST\"]}:8000/api/v2/heartbeat').read().decode())"
    for service in ("query", "indexer"):
        assert "nanosecond heartbeat" in stack.python(service, beat), service


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
    redis = stack.container("redis")
    address = redis["NetworkSettings"]["Networks"][f"{PROJECT}_redis"]["IPAddress"]
    for service in ("edge", "web", "auth"):
        # Neither by name (no shared network, so no DNS entry) nor by address (internal networks are isolated).
        for host in ("kga-single-redis", address):
            connect = f"timeout 5 bash -c 'exec 3<>/dev/tcp/{host}/6379' 2>&1; echo rc=$?"
            tried = stack.exec(service, connect, check=False)
            assert "rc=0" not in tried.stdout, (service, host, tried.stdout)
    assert "rc=0" in stack.exec("query", f"timeout 5 bash -c 'exec 3<>/dev/tcp/{address}/6379'; echo rc=$?").stdout
    assert not any(redis["NetworkSettings"]["Ports"].values()), "nothing of the store is published"


def test_a_query_with_a_key_is_answered_through_the_edge(stack: Stack, provider: Provider, indexed: Any) -> None:
    """POST /api/v1/query through the edge: the agent embeds the question, searches Chroma and asks the model
    (the fake provider at its public name); without a key the edge answers 401 and the agent is never asked."""
    question = {"query": "What does the indexer walk?", "k": 3}
    before = provider.calls()
    status, headers, _ = stack.request("/api/v1/query", body=question)
    assert status == 401
    assert headers.get("WWW-Authenticate", "").startswith("Basic")
    assert provider.calls() == before, "a refused request never reaches the agent"
    status, headers, body = stack.request("/api/v1/query", {"X-API-Key": KEY}, body=question)
    assert status == 200, body
    answer = json.loads(body)
    assert answer["response"].startswith("fake answer"), answer
    assert len(answer["sources"]) == 3 and {s["source"] for s in answer["sources"]} <= set(DOCS), answer["sources"]
    assert headers["X-Request-ID"]
    after = provider.calls()
    print(f"[compose-run] query: {answer['response']!r}, sources {[s['source'] for s in answer['sources']]}, "
          f"provider calls {before} -> {after}")  # fmt: skip
    assert after.get("chat", 0) == before.get("chat", 0) + 1, after
    assert after.get("embeddings", 0) > before.get("embeddings", 0), after


def test_the_redis_exporter_is_scraped_on_the_metrics_network(stack: Stack) -> None:
    """A scraper on ``metrics`` (where the server's Prometheus goes) reads redis_exporter, which logs in to Redis
    as the exporter ACL user of the Kubernetes stack (redis_up 1); it does not reach Redis itself."""
    scrape = (
        "import socket, urllib.request as u; "
        "print(u.urlopen('http://redis-exporter:9121/metrics', timeout=10).read().decode()); "
        "s = socket.socket(); s.settimeout(3)\n"
        "try: print('redis', s.connect_ex(('kga-single-redis', 6379)))\n"
        "except OSError as e: print('redis', type(e).__name__)"
    )
    out = stack.engine.docker(
        "run", "--rm", "--network", stack.network("metrics"), "--user", "65534:65534", "--read-only",
        "--entrypoint", "python", IMAGES["agent"], "-c", scrape,
    ).stdout  # fmt: skip
    metrics = dict(line.rsplit(" ", 1) for line in out.splitlines() if line and not line.startswith(("#", "redis ")))
    reached = [x for x in out.splitlines() if x.startswith("redis ")]
    print(f"[compose-run] scrape: redis_up {metrics.get('redis_up')}, from metrics to the store: {reached}")
    assert metrics["redis_up"] == "1", out[-2000:]
    assert float(metrics["redis_connected_clients"]) >= 1
    assert "redis 0" not in out, "the metrics network reaches the exporter, not the store"
    environment = stack.project["services"]["redis-exporter"]["environment"]
    assert environment["REDIS_USER"] == "exporter"


def test_chroma_backup_to_s3_wipe_and_restore_lose_nothing(
    stack: Stack, s3: S3, target: tuple[str, str], indexed: dict[str, Any], provider: Provider
) -> None:
    """The Chroma backup to the rendered S3 target, the store and its volume wiped, the restore: every record
    back, and the agent answers from it."""
    stack.compose("--profile", "backup", "run", "--rm", "--no-deps", *s3.run(), "backup-chroma", timeout=900)
    assert [k for k in s3.keys(*target) if "chroma" in k], s3.keys(*target)
    print(f"[compose-run] chroma backup in S3: {s3.keys(*target)}")
    stack.compose("rm", "--stop", "--force", "chroma", "volumes")  # every container that mounts the volume
    stack.engine.docker("volume", "rm", f"{PROJECT}_chroma-data")
    stack.compose("up", "-d", "--wait", "--force-recreate", "volumes", "chroma", timeout=600)
    stack.wait_healthy("query", "indexer")  # ready again once their store is back
    assert chroma_content(stack) == {}, "wiped"
    restore = ["--profile", "restore", "run", "--rm", "--no-deps", *s3.run(), "restore-chroma"]
    restored = stack.compose(*restore, timeout=900)
    assert '"restore.done"' in restored.stdout, restored.stdout[-3000:]
    assert chroma_content(stack) == indexed
    print(f"[compose-run] chroma: {len(indexed)} records backed up, wiped (0), restored {len(chroma_content(stack))}")
    status, _, body = stack.request("/api/v1/query", {"X-API-Key": KEY}, body={"query": "After the restore?", "k": 2})
    assert status == 200, body
    assert {s["source"] for s in json.loads(body)["sources"]} <= set(DOCS)


def test_redis_backup_to_s3_wipe_and_restore_lose_nothing(stack: Stack, s3: S3, target: tuple[str, str]) -> None:
    for i in range(50):
        stack.redis_cli("SET", f"k{i}", f"v{i}")
    stack.redis_cli("SET", "session", "kept", "EX", "86400")
    before = stack.redis_cli("DBSIZE")
    stack.compose("--profile", "backup", "run", "--rm", "--no-deps", *s3.run(), "backup-redis", timeout=600)
    assert [k for k in s3.keys(*target) if "redis" in k], s3.keys(*target)
    # The wipe: the store and its volume are gone.
    stack.compose("rm", "--stop", "--force", "redis", "volumes")  # every container that mounts the volume
    volume = f"{PROJECT}_redis-data"
    stack.engine.docker("volume", "rm", volume)
    # A new volume: the one-shot owner runs again before Redis mounts it, as on the first start.
    stack.compose("up", "-d", "--wait", "--force-recreate", "volumes", "redis", timeout=600)
    assert stack.redis_cli("DBSIZE") == "0"
    restore = ["--profile", "restore", "run", "--rm", "--no-deps", *s3.run(), "restore-redis"]
    restored = stack.compose(*restore, timeout=900)
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
