"""What dist/ ships, started on loopback: a pod's ConfigMaps and Secrets as files, its paths and ports remapped.

Tests that start real software read what they start from here, never from the
constructs: the objects are the committed YAML under ``dist/<env>/`` (regenerate
it with the synth command in README.md). Secret data is never in dist/; a test
supplies made-up values (:func:`made_up`). The only changes made to run a pod on
a test machine are mechanical: each mount path becomes a folder under the test's
temporary directory, and each container port becomes a free loopback port.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import redis
import yaml
from backup_servers import wait_for
from conftest import ENV_DIRS
from tools import ROOT, free_port, require_tool, stop

DIST = ROOT / "dist"

Obj = dict[str, Any]


@functools.cache
def objects(env: str) -> dict[str, Obj]:
    """``{"Kind/name": object}`` of ``dist/<env>/``, as committed."""
    out: dict[str, Obj] = {}
    for path in sorted((DIST / env).glob("*.yaml")):
        if path.name != "kustomization.yaml":
            obj = yaml.safe_load(path.read_text(encoding="utf-8"))
            out[f"{obj['kind']}/{obj['metadata']['name']}"] = obj
    return out


def of_kind(env: str, kind: str) -> list[Obj]:
    return [obj for key, obj in objects(env).items() if key.startswith(f"{kind}/")]


def workload(env: str, component: str) -> Obj | None:
    """The Deployment or StatefulSet of ``component`` (label ``app.kubernetes.io/component``), if deployed."""
    for obj in of_kind(env, "StatefulSet") + of_kind(env, "Deployment"):
        if obj["metadata"]["labels"].get("app.kubernetes.io/component") == component:
            return obj
    return None


def envs_with(component: str) -> list[str]:
    return [env for env in ENV_DIRS if workload(env, component)]


def made_up(secret: str, key: str) -> str:
    """A test value for ``secret``/``key``: printable, no shell or printf metacharacters."""
    return f"test-{secret}-{key}-x9"


class LocalPod:
    """A pod template from dist/ with its volumes as folders under ``root``.

    ``ports`` maps container ports to the loopback ports the test starts them on (default: a free
    port for each of the pod's container ports);
    ``secrets`` overrides :func:`made_up` values (``{secret: {key: value}}``).
    """

    def __init__(
        self,
        env: str,
        obj: Obj,
        root: Path,
        *,
        ports: Mapping[int, int] | None = None,
        secrets: Mapping[str, Mapping[str, str]] = {},
    ) -> None:
        self.env_name, self.obj, self.root = env, obj, root
        self.spec: Obj = obj["spec"]["template"]["spec"]
        if ports is None:
            ports = {p["containerPort"]: free_port() for c in self.spec["containers"] for p in c.get("ports", [])}
        self.ports, self.secrets = dict(ports), secrets
        self.volumes = {v["name"]: self._materialize(v) for v in self.spec.get("volumes", [])}
        for claim in obj["spec"].get("volumeClaimTemplates", []):
            self.volumes[claim["metadata"]["name"]] = self._materialize({"name": claim["metadata"]["name"]})

    @classmethod
    def of(cls, env: str, component: str, root: Path, **options: Any) -> LocalPod:
        """The pod template of ``component``'s workload in dist/<env>."""
        obj = workload(env, component)
        assert obj, f"dist/{env}: no {component} workload"
        return cls(env, obj, root, **options)

    def secret(self, name: str, key: str) -> str:
        return self.secrets.get(name, {}).get(key) or made_up(name, key)

    def _materialize(self, volume: Obj) -> Path:
        path = self.root / "volumes" / volume["name"]
        path.mkdir(parents=True)
        if "configMap" in volume:
            data = objects(self.env_name)[f"ConfigMap/{volume['configMap']['name']}"]["data"]
            for key, target in self._items(volume["configMap"], data):
                (path / target).write_text(data[key], encoding="utf-8")
        elif "secret" in volume:
            name = volume["secret"]["secretName"]
            for key, target in self._items(volume["secret"], self.secrets.get(name, {})):
                (path / target).write_text(self.secret(name, key), encoding="utf-8")
                (path / target).chmod(volume["secret"].get("defaultMode", 0o644))
        return path  # emptyDir and PVCs start empty

    @staticmethod
    def _items(source: Obj, data: Mapping[str, str]) -> list[tuple[str, str]]:
        if "items" in source:
            return [(item["key"], item["path"]) for item in source["items"]]
        return [(key, key) for key in data]

    def container(self, name: str) -> Obj:
        for container in self.spec.get("initContainers", []) + self.spec["containers"]:
            if container["name"] == name:
                return container  # type: ignore[no-any-return]
        raise KeyError(f"{self.obj['metadata']['name']}: no container {name!r}")

    def port(self, container: Obj, name: str) -> int:
        """The loopback port of the container port called ``name``."""
        (number,) = [p["containerPort"] for p in container.get("ports", []) if p["name"] == name]
        return self.ports[number]

    def local(self, container: Obj, text: str) -> str:
        """``text`` as the test machine sees it: mount paths and container ports remapped."""
        # One pass each, ports first: a replacement is never rewritten again.
        if self.ports:
            numbers = "|".join(str(n) for n in self.ports)
            text = re.sub(rf"(?<![\w.])({numbers})(?!\d)", lambda m: str(self.ports[int(m[1])]), text)
        mounts = {
            m["mountPath"]: self.volumes[m["name"]] / m.get("subPath", "") for m in container.get("volumeMounts", [])
        }
        if mounts:
            paths = "|".join(re.escape(p) for p in sorted(mounts, key=len, reverse=True))
            text = re.sub(rf"({paths})(?![\w.-])", lambda m: str(mounts[m[1]]), text)
        return text

    def command(self, container: Obj) -> list[str]:
        return [self.local(container, arg) for arg in container.get("command", []) + container.get("args", [])]

    def env(self, container: Obj) -> dict[str, str]:
        """The container's environment with Secret and ConfigMap references resolved."""
        out = {}
        for var in container.get("env", []):
            if "value" in var:
                out[var["name"]] = self.local(container, var["value"])
            elif ref := var["valueFrom"].get("secretKeyRef"):
                out[var["name"]] = self.secret(ref["name"], ref["key"])
            elif ref := var["valueFrom"].get("configMapKeyRef"):
                out[var["name"]] = objects(self.env_name)[f"ConfigMap/{ref['name']}"]["data"][ref["key"]]
            else:
                raise NotImplementedError(f"{container['name']}: env {var['name']} from {var['valueFrom']}")
        return out

    def local_file(self, container: Obj, path: str) -> Path:
        """A remapped copy of the file ``path`` that the container reads (a config naming paths and ports)."""
        source = Path(self.local(container, path))
        copy = self.root / "local" / container["name"] / source.name
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_text(self.local(container, source.read_text(encoding="utf-8")), encoding="utf-8")
        return copy

    def run_init_containers(self) -> None:
        for container in self.spec.get("initContainers", []):
            env = {"PATH": os.environ["PATH"], **self.env(container)}
            subprocess.run(self.command(container), check=True, env=env, timeout=60)


class RedisPod:
    """The Redis StatefulSet of an environment, running on loopback: redis-server, then optionally the exporter."""

    def __init__(self, pod: LocalPod, server: subprocess.Popen[bytes]) -> None:
        self.pod, self.server = pod, server
        self.redis = pod.container("redis")
        self.port = pod.port(self.redis, "redis")
        (volume,) = [v for v in pod.spec["volumes"] if v["name"] == "secret"]
        self.secret_name: str = volume["secret"]["secretName"]

    def password(self, user: str) -> str:
        return self.pod.secret(self.secret_name, f"{user}-password")

    def client(self, user: str, password: str | None = None) -> redis.Redis:
        password = password or self.password(user)
        return redis.Redis(port=self.port, username=user, password=password, decode_responses=True)


@contextlib.contextmanager
def run_redis(env: str, root: Path) -> Iterator[RedisPod]:
    """redis-server with dist/<env>'s redis.conf and the ACL file its init container renders."""
    binary = require_tool("redis-server", hint="apt-get install redis-server")
    pod = LocalPod.of(env, "redis", root)
    pod.run_init_containers()
    server = pod.container("redis")
    argv = pod.command(server)
    config = pod.local_file(server, server["command"][1])
    # Loopback only: the rendered `bind * -::*` would listen on every interface of the test machine.
    config.write_text(config.read_text(encoding="utf-8") + "bind 127.0.0.1\n", encoding="utf-8")
    proc = subprocess.Popen([binary, str(config), *argv[2:]], stdout=subprocess.DEVNULL)
    try:
        running = RedisPod(pod, proc)
        wait_for(lambda: bool(running.client("app").ping()), "redis-server", proc, timeout=30)
        yield running
    finally:
        stop(proc)


class ChromaPod:
    """The Chroma StatefulSet of an environment, running on loopback with its rendered config.yaml."""

    def __init__(self, pod: LocalPod, container: Obj, settings: Obj) -> None:
        self.pod, self.container, self.settings = pod, container, settings
        self.port = pod.port(container, container["readinessProbe"]["httpGet"]["port"])
        self.url = f"http://127.0.0.1:{self.port}"

    def client(self) -> Any:
        import chromadb
        from chromadb.config import Settings

        return chromadb.HttpClient(host="127.0.0.1", port=self.port, settings=Settings(anonymized_telemetry=False))


@contextlib.contextmanager
def run_chroma(env: str, root: Path) -> Iterator[ChromaPod]:
    """The chroma server of the client's release with the args and mounted config.yaml of dist/<env>."""
    binary = require_tool("chroma", hint="pip install -r requirements/backup-test.txt")
    pod = LocalPod.of(env, "chroma", root)
    (container,) = pod.spec["containers"]
    args = container["args"]
    config = pod.local_file(container, args[-1])
    settings = json.loads(config.read_text())
    settings["listen_address"] = "127.0.0.1"  # loopback only: the rendered address is every interface
    config.write_text(json.dumps(settings))
    proc = subprocess.Popen([binary, *args[:-1], str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        running = ChromaPod(pod, container, settings)
        health = running.url + container["readinessProbe"]["httpGet"]["path"]
        wait_for(lambda: urllib.request.urlopen(health, timeout=2).status == 200, "chroma", proc)
        yield running
    finally:
        stop(proc)


@contextlib.contextmanager
def run_exporter(pod: RedisPod) -> Iterator[Obj]:
    """The exporter sidecar's rendered settings on the Debian redis_exporter, until its readiness probe passes."""
    binary = require_tool("prometheus-redis-exporter", hint="apt-get install prometheus-redis-exporter")
    container = pod.pod.container("exporter")
    # The image listens on :9121 by default; here the loopback port the test gave 9121.
    listen = f"127.0.0.1:{pod.pod.port(container, 'metrics')}"
    env = {**pod.pod.env(container), "REDIS_EXPORTER_WEB_LISTEN_ADDRESS": listen, "PATH": os.environ["PATH"]}
    log = pod.pod.root / "exporter.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([binary, *pod.pod.command(container)], env=env, stdout=out, stderr=subprocess.STDOUT)
    ready = container["readinessProbe"]["httpGet"]
    url = f"http://127.0.0.1:{pod.pod.port(container, ready['port'])}{ready['path']}"
    try:
        try:
            wait_for(lambda: http_get(url, timeout=2)[0] == 200, "exporter", proc, 30)
        except RuntimeError as err:
            raise AssertionError(f"{err}:\n{log.read_text(errors='replace')[-2000:]}") from None
        yield container
    finally:
        stop(proc)


def http_get(url: str, timeout: float = 10) -> tuple[int, str]:
    """Status and body; an HTTP error status is returned, not raised."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def wait_until(check: Any, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not true after {timeout}s")
        time.sleep(0.1)


CHROMA_CONTENT = """
import chromadb, json, os, sys
client = chromadb.HttpClient(host=os.environ["CHROMA_HOST"], port=int(os.environ["CHROMA_PORT"]))
name = os.environ["CHROMA_COLLECTION_NAME"]
if sys.argv[1] == "drop":
    client.delete_collection(name)
if sys.argv[1] == "add":
    docs = json.loads(sys.argv[2])
    collection = client.get_or_create_collection(name, embedding_function=None)  # as the app's LangChain does
    collection.add(ids=list(docs), documents=[d["text"] for d in docs.values()],
                   embeddings=[d["vector"] for d in docs.values()], metadatas=[{"source": k} for k in docs])
names = [c if isinstance(c, str) else c.name for c in client.list_collections()]
if name not in names:
    print(json.dumps({}))
else:
    got = client.get_collection(name).get(include=["documents", "metadatas"])
    print(json.dumps({i: [d, m] for i, d, m in zip(got["ids"], got["documents"], got["metadatas"])}))
"""
"""Run with ``python -c`` where the agent's Chroma settings are (CHROMA_HOST, CHROMA_PORT, CHROMA_COLLECTION_NAME):
``add <json {id: {text, vector}}>``, ``drop`` (the collection) or ``get``; prints the collection as JSON,
``{id: [document, metadata]}``, through the Chroma client the agent runs."""

AGENT_RUNTIME = ROOT / "docker" / "agent" / "runtime"
"""The runtime layer's source (installed into the image's venv there)."""
STAND_IN_APP = ROOT / "tests" / "fixtures" / "agent-app"
"""The stand-in for the app: its module paths, routes and behaviours (/app in the image)."""
AGENT_PYTHON = ROOT / ".venvs" / "agent" / "bin" / "python"
"""The image's dependency set (docker/agent/requirements.lock), built by scripts/setup.sh test."""


class AgentPod:
    """An agent tier's pod of dist/, running ``python -m kga_runtime`` around the stand-in app on loopback."""

    def __init__(self, pod: LocalPod, container: Obj, env: dict[str, str], log: Path) -> None:
        self.pod, self.container, self.env, self.log = pod, container, env, log
        self.tier = str(pod.obj["metadata"]["labels"]["app.kubernetes.io/component"])
        self.llm: Any = None
        """The fake LLM server its test points it at, if the test keeps it here."""

    def port(self, name: str) -> int:
        """The loopback port of the container port ``name`` (``http``, ``runtime``)."""
        return self.pod.port(self.container, name)

    def url(self, name: str = "http") -> str:
        return f"http://127.0.0.1:{self.port(name)}"

    def get(self, name: str, path: str, timeout: float = 5) -> tuple[int, str]:
        try:
            return http_get(f"{self.url(name)}{path}", timeout=timeout)
        except OSError as err:
            return 0, str(err)

    def post(self, path: str, body: Any, timeout: float = 60) -> tuple[int, Any]:
        request = urllib.request.Request(
            f"{self.url()}{path}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    def metric(self, name: str, **labels: str) -> float:
        """A sample of the runtime's ``/metrics`` (0 when absent)."""
        _, text = self.get("runtime", "/metrics")
        want = "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else ""
        for line in text.splitlines():
            if line.startswith(f"{name}{want} "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def tail(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-3000:]


def redis_url_of(env: str, redis: RedisPod) -> str:
    """The ``url`` key External Secrets writes into the Redis Secret (its rendered template), as it reads on
    loopback: the made-up app password, the Service's host and port remapped to the running server."""
    (external,) = [o for o in of_kind(env, "ExternalSecret") if o["spec"]["target"]["name"] == redis.secret_name]
    template = external["spec"]["target"]["template"]["data"]["url"]
    password = urllib.parse.quote(redis.password("app"), safe="")
    url = re.sub(r"\{\{[^}]*\}\}", password, template)
    return re.sub(r"@[a-z0-9-]+:\d+/", f"@127.0.0.1:{redis.port}/", url)


@contextlib.contextmanager
def run_agent(
    env: str,
    component: str,
    root: Path,
    *,
    redis: RedisPod,
    chroma: ChromaPod,
    llm_url: str,
    app_dir: Path = STAND_IN_APP,
) -> Iterator[AgentPod]:
    """dist/<env>'s ``query`` or ``indexer`` pod: its args, its env and its ConfigMap's, on loopback.

    Mechanical changes only: ports and mount paths remapped (LocalPod), the Services of Chroma and Redis
    pointed at the running stores, the listen address on loopback, and the LLM at a fake server (the
    rendered env uses the provider's default). What the image's ENV adds (the app's directory, the
    installed runtime, tiktoken's seeded tables) comes from the paths above. ``app_dir``: the app's checkout
    (default the stand-in; scripts/real_app_run.py passes the real app at the pinned commit)."""
    for path in (AGENT_RUNTIME / "kga_runtime", app_dir / "src" / "api", AGENT_PYTHON):
        if not path.exists():
            from tools import missing

            missing(f"{path} missing (the runtime layer of issue 16; scripts/setup.sh test)")
    pod = LocalPod.of(env, component, root, secrets={redis.secret_name: {"url": redis_url_of(env, redis)}})
    container = pod.container("agent")
    (config,) = [source["configMapRef"]["name"] for source in container["envFrom"]]
    data = objects(env)[f"ConfigMap/{config}"]["data"]
    values = {name: pod.local(container, value) for name, value in data.items() if name.isupper()}
    values |= pod.env(container)  # the container's own env wins, as in Kubernetes
    tiktoken = ROOT / ".cache" / "tiktoken"
    subprocess.run(
        [str(AGENT_PYTHON), "-m", "kga_runtime.tiktoken_cache", str(tiktoken)],
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(AGENT_RUNTIME)},
        check=True,
        capture_output=True,
        timeout=120,
    )
    values |= {
        "PATH": os.environ["PATH"],
        "HOST": "127.0.0.1",
        "CHROMA_HOST": "127.0.0.1",
        "CHROMA_PORT": str(chroma.port),
        "LLM_API_BASE_URL": llm_url,
        "KGA_APP_DIR": str(app_dir),
        "PYTHONPATH": str(AGENT_RUNTIME),
        "TIKTOKEN_CACHE_DIR": str(tiktoken),
        "ANONYMIZED_TELEMETRY": "False",
    }
    workdir = Path(pod.local(container, container["workingDir"]))
    shutil.copy(pod.local(container, f"{container['workingDir']}/appSettings.json"), workdir / "appSettings.json")
    log = root / f"{component}.log"
    with log.open("wb") as out:
        command = [str(AGENT_PYTHON) if arg == "python" else arg for arg in container["args"]]
        proc = subprocess.Popen(command, cwd=workdir, env=values, stdout=out, stderr=subprocess.STDOUT)
    running = AgentPod(pod, container, values, log)
    startup = container["startupProbe"]["httpGet"]
    try:
        try:
            wait_for(lambda: running.get(startup["port"], startup["path"])[0] == 200, component, proc, 120)
        except RuntimeError as err:
            raise AssertionError(f"{err}:\n{running.tail()}") from None
        yield running
    finally:
        stop(proc)
