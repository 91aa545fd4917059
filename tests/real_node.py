"""A real Kubernetes node on this host, under the control plane of tests/control_plane.py.

containerd and runc (Debian), kubelet and kube-proxy (the control plane's release), the CNI bridge
(Debian's plugins), kube-router for NetworkPolicy, CoreDNS for cluster DNS, and a local-directory
provisioner that binds volumes the way a WaitForFirstConsumer class does. Images cannot be pulled
here: they are built locally (tests/image_build.py) and imported into containerd, and
:func:`apply_dist` deploys ``dist/<env>`` as Argo CD's first sync (wave by wave under its health rules,
tests/argo_sync.py) through a kustomize overlay that only points its images at them. The node and the
API server listen on :data:`NODE_IP`, an address on the host's loopback interface that the pods reach
through the bridge.

An environment that one node of this host cannot hold (dist/staging and dist/prod request more CPU than the
host has) runs on several nodes at once (:func:`nodes_needed`): a kubelet each, with its own containerd,
bridge, pod CIDR, ports and zone label, in the host's one network stack (:func:`real_node`).

Torn down without a trace: :class:`HostState` records what the node changes (sysctls, mounts, links,
addresses, iptables rules, ipsets, cgroups, well-known paths) before it starts; teardown stops every
process, puts each of those back and fails when anything still differs.

    python tests/real_node.py cluster [ENV]   # `make cluster`: dist/<ENV> (dev) on the nodes it needs, until Ctrl-C
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from argo_sync import WaveResult, first_sync, read_folder, waves
from argo_sync import table as wave_table
from control_plane import BIN, POD_CIDR, ZONE, ZONES, ControlPlane, control_plane, platform_storage_classes
from image_build import AGENT_DOCKERFILE, CACHE_DIR, build_command, tool_command
from tools import stop

ROOT = Path(__file__).resolve().parent.parent
NODE_NAME = "kga-node"
"""The first node's name (the only one of a one-node cluster); the others are ``kga-node-1``, ``kga-node-2``..."""
NODE_IP = "10.200.0.1"
"""The nodes' InternalIP: a /32 on ``lo`` for the test's lifetime (the API server, the kubelets and the
pods' cluster DNS answer there; nothing listens on the host's real interfaces). Every node of a cluster shares
it, each kubelet on its own port: they share the host's one network stack, and kube-router firewalls the pods
whose hostIP is its node's address (see :func:`real_node`)."""
CLUSTER_DNS = "10.96.0.10"
STORAGE_CLASS = "local"
PROVISIONER = "kgstack.example.com/local-dir"
OPENAI_HOST = "api.openai.com"
"""Where the agent's model provider is when the environment sets no ``llm.apiBaseUrl`` (dist/dev sets none)."""
OPENAI_IP = "198.51.100.10"
"""The fake provider's address (TEST-NET-2, an "internet" address to the NetworkPolicies), on ``lo``; cluster
DNS answers it for OPENAI_HOST."""
S3_IP = "198.51.100.11"
"""The S3 server's address (moto, :func:`fake_s3`), on ``lo``: cluster DNS answers it for the endpoint the
backup CronJobs of ``dist/<env>`` name (:func:`dist_hosts`)."""
IMAGE_REGISTRY = "kga.local"
IMAGE_TAG = "node"
NODE_BINARIES = ("kubelet", "kube-proxy", "kube-router", "coredns")
HOST_TOOLS = ("containerd", "containerd-shim-runc-v2", "runc", "ctr", "ipset", "iptables-save", "iptables-restore")
CNI_DIR = Path("/usr/lib/cni")
CNI_PLUGINS = ("bridge", "host-local", "loopback")

# Paths the node's software writes outside its work directory whatever it is told (the kubelet's
# device-plugin socket and container log links, containerd's shim sockets, CNI's cache).
WATCHED_PATHS = (
    "/var/lib/kubelet",
    "/var/log/containers",
    "/var/log/pods",
    "/var/lib/cni",
    "/var/lib/containerd",
    "/run/containerd",
    "/opt/containerd",
    "/etc/cni",
    "/run/netns",
    "/var/run/netns",
    "/var/lib/kube-router",
    "/run/kube-router",
    "/usr/libexec/kubernetes",
)
NODE_SYSCTLS = (
    # The kubelet's kernel tunables (it writes them whatever protectKernelDefaults says, when they differ).
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
    # The bridge plugin's gateway; kube-proxy's and kube-router's netfilter settings.
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/forwarding",
    "net/ipv6/conf/all/forwarding",
    "net/ipv4/conf/all/route_localnet",
    "net/bridge/bridge-nf-call-iptables",
    "net/bridge/bridge-nf-call-ip6tables",
    "net/netfilter/nf_conntrack_max",
    "net/netfilter/nf_conntrack_tcp_timeout_established",
    "net/netfilter/nf_conntrack_tcp_timeout_close_wait",
    "net/netfilter/nf_conntrack_tcp_be_liberal",
)
"""What the node's software writes. Only these are put back: the host is shared, and another session's
container engine may set ip_forward, say, meanwhile."""
OURS = re.compile(r"KUBE-|CNI-|KGA-|kube-router|kubernetes|kga", re.IGNORECASE)
"""Names of what the node makes (iptables chains and rules, ipsets, links, cgroups); what other
software on the shared host makes (Docker's chains, podman's cgroups) never matches."""
CONTAINER_ID = re.compile(r"^[0-9a-f]{64}$")


def tools_missing() -> list[str]:
    missing = [f"{BIN / name}" for name in NODE_BINARIES if not (BIN / name).exists()]
    missing += [name for name in HOST_TOOLS if shutil.which(name) is None]
    missing += [str(CNI_DIR / p) for p in CNI_PLUGINS if not (CNI_DIR / p).exists()]
    return missing


def require_node() -> None:
    """Skip (fail in CI) when this host cannot run a node: not root, or a tool missing."""
    from tools import missing

    if os.geteuid() != 0:
        missing("a real node needs root (containerd, kubelet, iptables)")
    absent = tools_missing()
    if absent:
        missing(f"not installed: {', '.join(absent)} (scripts/setup.sh test installs them)")


def _run(*argv: str, check: bool = True, timeout: float = 120, **kw: Any) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, **kw)
    if check and out.returncode:
        raise RuntimeError(f"{' '.join(argv)} failed ({out.returncode}):\n{out.stderr[-3000:]}{out.stdout[-2000:]}")
    return out


# -- the host before and after ---------------------------------------------------------------------------
# The host is shared with other sessions: only what the node makes is recorded, put back and compared.


def _sysctls() -> dict[str, str]:
    values = {}
    for key in NODE_SYSCTLS:
        with contextlib.suppress(OSError):
            values[key] = (Path("/proc/sys") / key).read_text()
    return values


def _mounts(workdir: Path | None) -> list[str]:
    """Mount points under the node's places: its work directory and the paths its software uses."""
    prefixes = tuple(p for p in (str(workdir) if workdir else None, *WATCHED_PATHS) if p)
    points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    return [m for m in points if m.startswith(prefixes)]


def _iptables_tables(family: str) -> dict[str, list[str]]:
    """``{table: the node's chains and rules}`` as ``<family>-save`` prints them, without counters."""
    tables: dict[str, list[str]] = {}
    current: list[str] = []
    for line in _run(f"{family}-save", check=False).stdout.splitlines():
        if line.startswith("*"):
            current = tables.setdefault(line[1:], [])
        elif line.startswith((":", "-A")) and OURS.search(line):
            current.append(re.sub(r" \[\d+:\d+\]$", "", line))
    return tables


def _iptables(family: str) -> str:
    return "".join(
        f"*{table}\n" + "".join(f"{line}\n" for line in lines)
        for table, lines in sorted(_iptables_tables(family).items())
        if lines
    )


def _restore_iptables(family: str) -> None:
    """Remove the node's rules from the built-in chains, then its own chains."""
    for table, lines in _iptables_tables(family).items():
        chains = [line.split()[0][1:] for line in lines if line.startswith(":")]
        for line in lines:
            words = shlex.split(line)
            if words[0] == "-A" and words[1] not in chains:
                _run(family, "-t", table, "-D", *words[1:], check=False)
        for chain in chains:
            _run(family, "-t", table, "-F", chain, check=False)
        for chain in chains:
            _run(family, "-t", table, "-X", chain, check=False)


def _links() -> dict[str, str]:
    """``{name: master}`` of the node's links: ours by name, or enslaved to one of the pod bridges."""
    out = {}
    for line in _run("ip", "-o", "link", "show").stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        master = line.split(" master ")[1].split()[0] if " master " in line else ""
        if OURS.search(name) or (master and OURS.search(master)):
            out[name] = master
    return out


def _addresses() -> set[str]:
    out = _run("ip", "-o", "addr", "show", "dev", "lo").stdout
    ours = {f"{a}/32" for a in (NODE_IP, OPENAI_IP, S3_IP)}
    return {line.split()[3] for line in out.splitlines() if line.split()[3] in ours}


def _ipsets() -> set[str]:
    if shutil.which("ipset") is None:
        return set()
    return {name for name in _run("ipset", "list", "-n", check=False).stdout.split() if OURS.search(name)}


def _cgroups() -> set[str]:
    """Cgroups of the node's containers (named by container id, or by Kubernetes), in every hierarchy."""
    found = set()
    for top in Path("/sys/fs/cgroup").iterdir():
        for path in top.glob("*") if top.is_dir() else []:
            if path.is_dir() and (CONTAINER_ID.match(path.name) or OURS.search(path.name)):
                found.add(str(path))
    return found


def _remove_cgroup(path: Path) -> None:
    """A cgroup and the ones under it (empty once their processes are gone), deepest first."""
    for sub in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            sub.rmdir()
    with contextlib.suppress(OSError):
        path.rmdir()


def _remove(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        path.unlink()
    else:
        shutil.rmtree(path, ignore_errors=True)


@dataclass
class HostState:
    """What the node may change on the host, recorded before it starts."""

    workdir: Path | None
    sysctls: dict[str, str]
    mounts: list[str]
    iptables: dict[str, str]
    links: dict[str, str]
    addresses: set[str]
    ipsets: set[str]
    cgroups: set[str]
    paths: set[str]

    @classmethod
    def now(cls, workdir: Path | None = None) -> HostState:
        return cls(
            workdir=workdir,
            sysctls=_sysctls(),
            mounts=_mounts(workdir),
            iptables={family: _iptables(family) for family in ("iptables", "ip6tables")},
            links=_links(),
            addresses=_addresses(),
            ipsets=_ipsets(),
            cgroups=_cgroups(),
            paths={p for p in WATCHED_PATHS if os.path.lexists(p)},
        )

    def restore(self) -> None:
        """Put back what differs (processes already stopped); best effort, then :meth:`differences` says."""
        for mount in reversed(_mounts(self.workdir)):
            if mount not in self.mounts:
                subprocess.run(["umount", "-l", mount], capture_output=True, check=False)
        for family, before in self.iptables.items():
            if _iptables(family) != before:
                _restore_iptables(family)
        for name in _ipsets() - self.ipsets:
            _run("ipset", "destroy", name, check=False)
        links = _links()
        for name in sorted(links.keys() - self.links.keys(), key=lambda n: links[n] == ""):  # enslaved first
            _run("ip", "link", "delete", name, check=False)
        for cidr in _addresses() - self.addresses:
            _run("ip", "addr", "del", cidr, "dev", "lo", check=False)
        now = _sysctls()
        for key, value in self.sysctls.items():
            if now.get(key, value) != value:
                with contextlib.suppress(OSError):
                    (Path("/proc/sys") / key).write_text(value)
        for path in _cgroups() - self.cgroups:
            _remove_cgroup(Path(path))
        for path in WATCHED_PATHS:
            if path not in self.paths and os.path.lexists(path):
                _remove(Path(path))

    def differences(self) -> list[str]:
        """What is not as it was; empty when the host is as found."""
        after = HostState.now(self.workdir)
        out = [
            f"sysctl {k}: {v.strip()} -> {after.sysctls.get(k, '?').strip()}"
            for k, v in self.sysctls.items()
            if after.sysctls.get(k, v) != v
        ]
        out += [f"mount left: {m}" for m in after.mounts if m not in self.mounts]
        out += [f"{f} rules left:\n{after.iptables[f]}" for f in self.iptables if after.iptables[f] != self.iptables[f]]
        out += [f"link left: {name}" for name in sorted(after.links.keys() - self.links.keys())]
        out += [f"address left on lo: {a}" for a in sorted(after.addresses - self.addresses)]
        out += [f"ipset left: {s}" for s in sorted(after.ipsets - self.ipsets)]
        out += [f"cgroup left: {c}" for c in sorted(after.cgroups - self.cgroups)]
        out += [f"path left: {p}" for p in sorted(after.paths - self.paths)]
        return out


# -- images ---------------------------------------------------------------------------------------------

BASE_SCRIPT = ROOT / "scripts" / "build-test-base.sh"
FIXTURE_APP = ROOT / "tests" / "fixtures" / "agent-app"

# Stand-ins for the third-party images dist/ names, on the same Debian base as ours.
_NGINX = """\
FROM {base}
RUN apt-get update && apt-get install -y --no-install-recommends nginx-light \\
    && rm -rf /var/lib/apt/lists/* \\
    && groupadd --system --gid 101 nginx \\
    && useradd --system --uid 101 --gid 101 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin nginx \\
    && mkdir -p /var/cache/nginx /usr/share/nginx/html && chown 101:0 /var/cache/nginx
USER 101
EXPOSE 8080
CMD ["nginx", "-g", "daemon off;"]
"""
TRUST_CA = """\
FROM {image}
USER root
COPY test-ca.pem /tmp/test-ca.pem
RUN cat /tmp/test-ca.pem >> "$(python -c 'import certifi; print(certifi.where())')" \\
    && cat /tmp/test-ca.pem >> /etc/ssl/certs/ca-certificates.crt && rm /tmp/test-ca.pem
USER {user}
"""
_CHROMA = """\
FROM {agent}
ENTRYPOINT ["chroma"]
CMD ["run"]
"""
_EXPORTER = """\
FROM {base}
COPY redis_exporter /redis_exporter
USER 59000:59000
EXPOSE 9121
ENTRYPOINT ["/redis_exporter"]
"""
_SLEEP = """\
FROM {base}
USER {user}
ENTRYPOINT ["sleep", "infinity"]
"""
_COREDNS = """\
FROM {base}
COPY coredns /coredns
ENTRYPOINT ["/coredns"]
"""
_MEMGRAPH = """\
FROM {base}
COPY memgraph.py /usr/lib/memgraph/memgraph.py
USER 10001:10001
EXPOSE 7687
ENTRYPOINT ["python3", "/usr/lib/memgraph/memgraph.py"]
"""
MEMGRAPH_STAND_IN = ROOT / "tests" / "fixtures" / "memgraph_stand_in.py"

DIST_IMAGES = {
    "knowledge-graph-agent": "agent",
    "knowledge-graph-agent-web": "web",
    "kga-redis": "redis",
    "kgbackup": "backup",
    "chroma": "chroma",
    "nginx-unprivileged": "nginx",
    "redis_exporter": "redis-exporter",
    "memgraph": "memgraph",
}
"""The local build standing in for each image of dist/, by the last part of its repository."""


def local(name: str) -> str:
    return f"{IMAGE_REGISTRY}/{name}:{IMAGE_TAG}"


@dataclass
class Images:
    """Builds the images the node runs into the repo-local podman store (tests/image_build.py)."""

    workdir: Path
    podman: list[str] = field(default_factory=list)
    base: str = ""
    built: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        command = tool_command("podman")
        if command is None:
            raise FileNotFoundError("podman not installed (scripts/setup.sh test installs it)")
        self.podman = command

    def _build(self, name: str, dockerfile: Path, context: Path, *extra: str, base: str = "") -> str:
        start = time.monotonic()
        command = build_command(self.podman, dockerfile, local(name), base or self.base, context, *extra)
        _run(*command, timeout=1800)
        self.built[name] = time.monotonic() - start
        return local(name)

    def _inline(self, name: str, text: str, files: dict[str, Path] | None = None) -> str:
        context = self.workdir / f"ctx-{name}"
        context.mkdir(parents=True, exist_ok=True)
        (context / "Containerfile").write_text(text)
        for target, source in (files or {}).items():
            shutil.copy2(source, context / target)
        return self._build(name, context / "Containerfile", context)

    def _agent(self) -> str:
        """The agent image from the stand-in app, as tests/test_images.py builds it, trusting the test CA
        (:func:`node_ca`) as a TLS-intercepting company proxy's CA would be: its model provider is a
        fake one on the host (:func:`fake_openai`)."""
        context = self.workdir / "ctx-agent-app"
        shutil.copytree(FIXTURE_APP, context, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
        args = ("--build-arg", "VERSION=node", "--build-arg", "VCS_REF=fixture")
        return self._trusting_node_ca("agent", self._build("agent-app", AGENT_DOCKERFILE, context, *args))

    def _trusting_node_ca(self, name: str, image: str) -> str:
        """``image`` with the test CA (:func:`node_ca`) added to its trust stores, as a TLS-intercepting
        company proxy's CA would be: the servers it calls on the "internet" are the tests' own."""
        user = _run(*self.podman, "image", "inspect", "--format", "{{.Config.User}}", image).stdout.strip()
        ca, _ = node_ca()
        return self._inline(name, TRUST_CA.format(image=image, user=user), {"test-ca.pem": ca})

    def _backup(self) -> str:
        """The backup image from docker/backup, trusting the test CA: its S3 endpoint is moto on the host
        (:func:`fake_s3`)."""
        docker = ROOT / "docker" / "backup"
        return self._trusting_node_ca("backup", self._build("backup-app", docker / "Dockerfile", docker))

    def _exporter(self) -> str:
        exporter = shutil.which("prometheus-redis-exporter")
        if exporter is None:
            raise FileNotFoundError("prometheus-redis-exporter not installed (scripts/setup.sh test installs it)")
        return self._inline("redis-exporter", _EXPORTER.format(base=self.base), {"redis_exporter": Path(exporter)})

    def build(self, names: set[str]) -> list[str]:
        """Build ``names`` (and what they stand on), in order; the tags, for :meth:`save`."""
        env = {**os.environ, "KGA_IMAGE_CACHE": str(CACHE_DIR)}
        self.base = _run("bash", str(BASE_SCRIPT), env=env, timeout=1800).stdout.strip().splitlines()[-1]
        docker = ROOT / "docker"
        steps: dict[str, Callable[[], str]] = {
            "pause": lambda: self._inline("pause", _SLEEP.format(base=self.base, user="65535:65535")),
            "agent": self._agent,
            "chroma": lambda: self._inline("chroma", _CHROMA.format(agent=local("agent"))),
            "nginx": lambda: self._inline("nginx", _NGINX.format(base=self.base)),
            "web": lambda: self._build(
                "web",
                docker / "web" / "Dockerfile",
                docker / "web",
                f"--build-context=agent={FIXTURE_APP}",
                base=local("nginx"),
            ),
            "redis": lambda: self._build("redis", docker / "redis" / "Dockerfile", docker / "redis"),
            "redis-exporter": self._exporter,
            "backup": self._backup,
            "probe": lambda: self._inline("probe", _SLEEP.format(base=self.base, user="65534:65534")),
            "coredns": lambda: self._inline("coredns", _COREDNS.format(base=self.base), {"coredns": BIN / "coredns"}),
            "memgraph": lambda: self._inline(
                "memgraph", _MEMGRAPH.format(base=self.base), {"memgraph.py": MEMGRAPH_STAND_IN}
            ),
        }
        wanted = {"pause", *names, *(["agent"] if "chroma" in names else []), *(["nginx"] if "web" in names else [])}
        unknown = wanted - steps.keys()
        if unknown:
            raise ValueError(f"no local build for {sorted(unknown)}")
        return [step() for name, step in steps.items() if name in wanted]

    def save(self, tags: list[str]) -> Path:
        archive = self.workdir / "images.tar"
        archive.unlink(missing_ok=True)
        _run(
            *self.podman,
            "save",
            "--multi-image-archive",
            "--format",
            "docker-archive",
            "-o",
            str(archive),
            *tags,
            timeout=1800,
        )
        return archive


# -- a model provider on the host --------------------------------------------------------------------------


def node_ca() -> tuple[Path, Path]:
    """A throw-away CA for the fake provider's certificate, made once per image cache (the agent image the
    node runs trusts it, so it stays put between runs): ``(certificate, key)``."""
    folder = CACHE_DIR / "node-test-ca"
    cert, key = folder / "ca.pem", folder / "ca.key"
    if not (cert.exists() and key.exists()):
        folder.mkdir(parents=True, exist_ok=True)
        private, certificate = _certificate("kgstack node test CA", None)
        key.write_bytes(private)
        key.chmod(0o600)
        cert.write_bytes(certificate)
    return cert, key


def _certificate(name: str, issuer: tuple[bytes, bytes] | None, *also: str) -> tuple[bytes, bytes]:
    """``(key PEM, certificate PEM)``: a CA when ``issuer`` is ``None``, else a server certificate for ``name``
    and the host names or addresses ``also``."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    if issuer is None:
        signer, issuer_name = key, subject
    else:
        signer = serialization.load_pem_private_key(issuer[0], None)  # type: ignore[assignment]
        issuer_name = x509.load_pem_x509_certificate(issuer[1]).subject
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650 if issuer is None else 1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if issuer is not None:
        sans: list[x509.GeneralName] = [x509.DNSName(name)]
        for other in also:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(other)))
            except ValueError:
                sans.append(x509.DNSName(other))
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    certificate = builder.sign(signer, hashes.SHA256())
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return pem_key, certificate.public_bytes(serialization.Encoding.PEM)


def tls_fake_openai(address: str, cert: Path, key: Path) -> Any:
    """tests/fake_openai.py, not yet started, serving HTTPS on ``address``:443 with ``cert`` and ``key``."""
    import ssl
    from http.server import ThreadingHTTPServer

    from fake_openai import FakeOpenAI

    fake = FakeOpenAI()
    handler = fake.server.RequestHandlerClass
    fake.server.server_close()
    fake.server = ThreadingHTTPServer((address, 443), handler)
    fake.server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    fake.server.socket = context.wrap_socket(fake.server.socket, server_side=True)
    return fake


@contextlib.contextmanager
def fake_openai(workdir: Path) -> Iterator[Any]:
    """tests/fake_openai.py over TLS on OPENAI_IP:443, with a certificate for OPENAI_HOST from :func:`node_ca`."""
    ca_cert, ca_key = node_ca()
    key, cert = _certificate(OPENAI_HOST, (ca_key.read_bytes(), ca_cert.read_bytes()))
    (workdir / "openai.key").write_bytes(key)
    (workdir / "openai.pem").write_bytes(cert)
    fake = tls_fake_openai(OPENAI_IP, workdir / "openai.pem", workdir / "openai.key").start()
    try:
        yield fake
    finally:
        fake.stop()


# -- the node ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Machine:
    """One node of the cluster on this host: a kubelet with its own containerd (root, state, socket, runc
    root), CNI bridge and pod subnet (the /24 the controller-manager allocates it), ports and zone label."""

    index: int
    workdir: Path
    """The cluster's work directory; the node's files are under :attr:`dir`."""

    @property
    def name(self) -> str:
        return NODE_NAME if self.index == 0 else f"{NODE_NAME}-{self.index}"

    @property
    def zone(self) -> str:
        return ZONES[self.index % len(ZONES)]

    @property
    def dir(self) -> Path:
        return self.workdir / self.name

    @property
    def socket(self) -> Path:
        return self.dir / "containerd" / "containerd.sock"

    @property
    def bridge(self) -> str:
        return f"kga-cni{self.index}"

    def ctr(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run("ctr", "--address", str(self.socket), "--namespace", "k8s.io", *args, timeout=timeout, check=check)


@dataclass
class Node:
    """A started cluster of one or more nodes (:class:`Machine`) on this host; ``cp`` is its control plane."""

    cp: ControlPlane
    workdir: Path
    host: HostState
    machines: list[Machine] = field(default_factory=list)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    provisioner_errors: list[str] = field(default_factory=list)
    provisioner_stop: threading.Event = field(default_factory=threading.Event)
    storage_classes: dict[str, str] = field(default_factory=lambda: {STORAGE_CLASS: "Delete"})
    """``{StorageClass: its reclaimPolicy}`` of the classes whose claims the node's provisioner binds."""
    timings: dict[str, float] = field(default_factory=dict)
    hosts: dict[str, str] = field(default_factory=lambda: {OPENAI_HOST: OPENAI_IP})
    """Names cluster DNS answers with a host address (``{name: address}``): the servers the tests start."""

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.machines]

    def start(self, name: str, *argv: str) -> None:
        log = (self.workdir / f"{name}.log").open("wb")
        self.processes[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def log(self, name: str, tail: int = 3000) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-tail:] if path.exists() else ""

    def alive(self) -> None:
        for name, proc in self.processes.items():
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited with {proc.returncode}:\n{self.log(name)}")

    def wait(self, what: str, done: Callable[[], bool], timeout: float = 120) -> float:
        def check() -> bool:
            self.alive()
            with contextlib.suppress(httpx.HTTPError, OSError, subprocess.SubprocessError):
                return done()
            return False

        return self.cp.wait(what, check, timeout)

    def import_images(self, archive: Path) -> None:
        """The archive into every node's containerd, side by side (each node has its own image store)."""
        start = time.monotonic()
        errors: list[BaseException] = []

        def one(machine: Machine) -> None:
            try:
                # Unpacked on first use (containerd's CRI unpacks an image a container needs), as a pull
                # unpacks only where a pod runs: each node unpacks only its pods' images.
                machine.ctr("images", "import", "--no-unpack", str(archive), timeout=1800)
            except BaseException as err:  # re-raised below, in the caller's thread
                errors.append(err)

        threads = [threading.Thread(target=one, args=(m,)) for m in self.machines]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        self.timings["image import"] = time.monotonic() - start

    # -- volumes: a provisioner for the node's classes ------------------------------------------------------
    def provision_once(self) -> None:
        """Bind each claim the scheduler placed on a node to a new directory; delete released volumes."""
        volumes = self.workdir / "volumes"
        for pvc in self.cp.items("/api/v1/persistentvolumeclaims"):
            meta, spec = pvc["metadata"], pvc["spec"]
            node = meta.get("annotations", {}).get("volume.kubernetes.io/selected-node")
            if spec.get("volumeName") or node not in self.names or meta.get("deletionTimestamp"):
                continue
            if spec.get("storageClassName") not in self.storage_classes:
                continue
            name = f"pv-{meta['uid']}"
            path = volumes / name
            path.mkdir(parents=True, exist_ok=True)  # root-owned 0755, like a fresh filesystem: fsGroup opens it
            pv = {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": name, "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER}},
                "spec": {
                    "capacity": {"storage": spec["resources"]["requests"]["storage"]},
                    "accessModes": spec["accessModes"],
                    "storageClassName": spec["storageClassName"],
                    "persistentVolumeReclaimPolicy": self.storage_classes[spec["storageClassName"]],
                    "claimRef": {"namespace": meta["namespace"], "name": meta["name"], "uid": meta["uid"]},
                    "local": {"path": str(path)},
                    "nodeAffinity": {
                        "required": {
                            "nodeSelectorTerms": [
                                {
                                    "matchExpressions": [
                                        {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}
                                    ]
                                }
                            ]
                        }
                    },
                },
            }
            response = self.cp.api.post("/api/v1/persistentvolumes", json=pv)
            if response.status_code not in (201, 409):
                self.provisioner_errors.append(response.text)
        for volume in self.cp.items("/api/v1/persistentvolumes"):
            released = volume.get("status", {}).get("phase") == "Released"
            ours = volume["metadata"].get("annotations", {}).get("pv.kubernetes.io/provisioned-by") == PROVISIONER
            if released and ours and volume["spec"]["persistentVolumeReclaimPolicy"] == "Delete":
                shutil.rmtree(volume["spec"]["local"]["path"], ignore_errors=True)
                self.cp.api.delete(f"/api/v1/persistentvolumes/{volume['metadata']['name']}")

    # -- teardown -------------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop the nodes' processes and every container (:class:`HostState` puts the host back)."""
        self.provisioner_stop.set()
        for name in ("kube-router", "kube-proxy", *(f"kubelet-{m.name}" for m in self.machines)):
            _terminate(self.processes.get(name))
        for machine in self.machines:
            containerd = self.processes.get(f"containerd-{machine.name}")
            if containerd is not None and containerd.poll() is None:
                with contextlib.suppress(subprocess.SubprocessError):
                    tasks = machine.ctr("tasks", "ls", "-q", check=False).stdout.split()
                    for task in tasks:
                        machine.ctr("tasks", "kill", "--all", "--signal", "SIGKILL", task, check=False)
                    for task in tasks:
                        machine.ctr("tasks", "rm", "--force", task, check=False)
            _terminate(containerd)
            # Container processes and shims that outlived containerd: found by the node's runc root.
            runc_root = machine.dir / "runc" / "k8s.io"
            if runc_root.exists():
                for container in _run("runc", "--root", str(runc_root), "list", "-q", check=False).stdout.split():
                    _run("runc", "--root", str(runc_root), "kill", container, "KILL", check=False)
                    _run("runc", "--root", str(runc_root), "delete", "-f", container, check=False)
        for pid in _pids_mentioning(str(self.workdir)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _terminate(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None:
        stop(proc)


def _pids_mentioning(text: str) -> list[int]:
    """Processes whose command line names ``text`` (containerd's shims name its socket)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                if text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    found.append(int(entry.name))
    return found


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((NODE_IP, 0))
        return int(sock.getsockname()[1])


def _containerd_config(workdir: Path) -> str:
    c = workdir / "containerd"
    return f"""\
version = 2
root = "{c / "root"}"
state = "{c / "state"}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]

[grpc]
  address = "{c / "containerd.sock"}"

[ttrpc]
  address = "{c / "containerd.sock.ttrpc"}"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{c / "opt"}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{local("pause")}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  # Without it every sandbox fails here ("can't get final child's PID from pipe"): no CAP_SYS_RESOURCE.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{workdir / "runc"}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_DIR}"
    conf_dir = "{workdir / "cni"}"
"""


def _cni_config(machine: Machine, subnet: str) -> dict[str, Any]:
    """The node's bridge, with the pod CIDR the controller-manager gave the node: pods of different nodes talk
    through the host's routes between the bridges, as nodes do through their network."""
    return {
        "cniVersion": "0.4.0",
        "name": "kga",
        "plugins": [
            {
                "type": "bridge",
                "bridge": machine.bridge,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,  # a pod reaches itself through its own Service
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": subnet}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(machine.dir / "cni-ipam"),
                },
            }
        ],
    }


def _kubelet_config(workdir: Path, port: int, healthz: int) -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": NODE_IP,
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz,
        # The API server calls the kubelet (logs, exec) without a client certificate.
        "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
        "authorization": {"mode": "AlwaysAllow"},
        "containerRuntimeEndpoint": f"unix://{workdir / 'containerd' / 'containerd.sock'}",
        "clusterDNS": [CLUSTER_DNS],
        "clusterDomain": "cluster.local",
        "resolvConf": str(workdir / "resolv.conf"),
        "podLogsDir": str(workdir / "pod-logs"),
        "volumePluginDir": str(workdir / "volume-plugins"),
        "staticPodPath": "",
        # What this VM allows: cgroup v1 (hybrid), no systemd, no CAP_SYS_RESOURCE, swap tolerated.
        "cgroupDriver": "cgroupfs",
        "cgroupsPerQOS": False,
        "enforceNodeAllocatable": [],
        "failSwapOn": False,
        "failCgroupV1": False,
        "protectKernelDefaults": False,
        "oomScoreAdj": 0,
        "kernelMemcgNotification": False,
        # A shared disk: never evict the tests' pods or collect their images for the host's free space.
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        "nodeStatusUpdateFrequency": "4s",
        "shutdownGracePeriod": "0s",
    }


def _kube_proxy_config(kubeconfig: Path) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": NODE_NAME,
        "mode": "iptables",
        "clusterCIDR": POD_CIDR,
        "healthzBindAddress": f"127.0.0.1:{_free_port_loopback()}",
        "metricsBindAddress": f"127.0.0.1:{_free_port_loopback()}",
        "nodePortAddresses": [f"{NODE_IP}/32"],
        "oomScoreAdj": 0,
        # Leave the host's sysctls alone: no conntrack table sizing or timeouts, no localhost NodePorts.
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
        "iptables": {"localhostNodePorts": False, "syncPeriod": "30s", "minSyncPeriod": "0s"},
    }


def _free_port_loopback() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def coredns_objects(hosts: dict[str, str]) -> str:
    """CoreDNS for cluster DNS, answering ``hosts`` (``{name: address}``) as the internet would."""
    entries = "\n            ".join(f"{address} {name}" for name, address in sorted(hosts.items()))
    return f"""\
apiVersion: v1
kind: ServiceAccount
metadata: {{name: coredns, namespace: kube-system}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: "system:coredns"}}
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: "system:coredns"}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns"}}
subjects: [{{kind: ServiceAccount, name: coredns, namespace: kube-system}}]
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: coredns, namespace: kube-system}}
data:
  Corefile: |
    .:53 {{
        errors
        health :8080
        ready :8181
        kubernetes cluster.local in-addr.arpa ip6.arpa {{
            pods insecure
            fallthrough in-addr.arpa ip6.arpa
        }}
        cache 30
        hosts {{
            {entries}
            fallthrough
        }}
    }}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: coredns, namespace: kube-system, labels: {{k8s-app: kube-dns}}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{k8s-app: kube-dns}}}}
  template:
    metadata: {{labels: {{k8s-app: kube-dns}}}}
    spec:
      serviceAccountName: coredns
      dnsPolicy: Default
      containers:
      - name: coredns
        image: {local("coredns")}
        imagePullPolicy: Never
        args: [-conf, /etc/coredns/Corefile]
        ports:
        - {{name: dns, containerPort: 53, protocol: UDP}}
        - {{name: dns-tcp, containerPort: 53, protocol: TCP}}
        readinessProbe: {{httpGet: {{path: /ready, port: 8181}}, periodSeconds: 2}}
        livenessProbe: {{httpGet: {{path: /health, port: 8080}}}}
        volumeMounts: [{{name: config, mountPath: /etc/coredns, readOnly: true}}]
      volumes: [{{name: config, configMap: {{name: coredns}}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: kube-dns, namespace: kube-system, labels: {{k8s-app: kube-dns}}}}
spec:
  clusterIP: {CLUSTER_DNS}
  selector: {{k8s-app: kube-dns}}
  ports:
  - {{name: dns, port: 53, protocol: UDP}}
  - {{name: dns-tcp, port: 53, protocol: TCP}}
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: {STORAGE_CLASS}
  annotations: {{storageclass.kubernetes.io/is-default-class: "true"}}
provisioner: {PROVISIONER}
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Delete
"""


def _ready(node: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"].get("conditions", []))


def node_ready(cp: ControlPlane, names: list[str] | None = None) -> bool:
    """Whether every node of ``names`` (the first node when ``None``) is registered and Ready."""
    ready = {n["metadata"]["name"] for n in cp.nodes() if _ready(n)}
    return set(names or [NODE_NAME]) <= ready


@contextlib.contextmanager
def node_lock() -> Iterator[None]:
    """One cluster per host at a time (they would share NODE_IP, the pod bridges and the iptables chains):
    an exclusive lock on /run, held until the nodes are gone; another session's cluster waits."""
    import fcntl

    fd = os.open("/run", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


_REMOVING: list[subprocess.Popen[bytes]] = []
"""Work directories being deleted in the background (kept, so they are reaped, not warned about)."""


@contextlib.contextmanager
def real_node(images: set[str] | None = None, hosts: dict[str, str] | None = None, *, nodes: int = 1) -> Iterator[Node]:
    """A control plane and ``nodes`` real nodes (zones ``zone-a``, ``zone-b``, ``zone-c`` in turn) with
    cluster DNS, NetworkPolicy and volumes, with the local builds of ``images`` (names of :data:`DIST_IMAGES`
    values, plus ``probe``) imported into every node; cluster DNS answers ``hosts`` (default: the model
    provider, :data:`OPENAI_HOST`).

    The nodes share the host's network stack: one kube-proxy serves them all (its Service rules are the same
    on every node), and one kube-router firewalls every pod. kube-router enforces policy for the pods whose
    ``hostIP`` is its node's InternalIP and removes any pod chain it did not make (v2.1.0,
    ``pkg/controllers/netpol``: ``getLocalPods``, ``cleanupStaleRules``), so one instance per node in one
    netfilter would delete each other's chains; with the InternalIP (:data:`NODE_IP`) shared, the one instance
    holds the chains of every node's pods, each pod's ingress and egress checked on the path between bridges.

    Stops everything and restores the host at the end; raises if the host is not as it was."""
    if nodes < 1:
        raise ValueError(f"nodes: at least one, not {nodes}")
    missing = tools_missing()
    if missing:
        raise FileNotFoundError(f"not installed: {', '.join(missing)} (scripts/setup.sh test installs them)")
    if os.geteuid() != 0:
        raise PermissionError("a real node needs root (containerd, kubelet, iptables)")
    workdir = Path(tempfile.mkdtemp(prefix="kgstack-node-"))
    timings: dict[str, float] = {}
    start = time.monotonic()
    try:
        builder = Images(workdir / "build")
        tags = builder.build({*(images or set()), "coredns"})
        archive = builder.save(tags)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    timings |= {f"build {k}": v for k, v in builder.built.items()}
    timings["images"] = time.monotonic() - start
    try:
        with node_lock():
            host = HostState.now(workdir)
            try:
                for address in (NODE_IP, OPENAI_IP, S3_IP):
                    _run("ip", "addr", "add", f"{address}/32", "dev", "lo")
                with control_plane("generic", address=NODE_IP, simulated_nodes=False) as cp:
                    machines = [Machine(i, workdir) for i in range(nodes)]
                    node = Node(
                        cp, workdir, host, machines=machines, timings=timings, hosts=hosts or {OPENAI_HOST: OPENAI_IP}
                    )
                    try:
                        _start_node(node, archive)
                        yield node
                    finally:
                        node.stop()
            finally:
                host.restore()
            left = host.differences()
    finally:
        # In the background, after the lock: deleting the nodes' image stores (tens of thousands of unpacked
        # files a node) takes minutes on a busy disk, and nothing waits for it. --one-file-system: never
        # through a mount that teardown could not remove.
        _REMOVING.append(
            subprocess.Popen(
                ["rm", "-rf", "--one-file-system", str(workdir)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
    if left:
        raise AssertionError("the node left traces on the host:\n" + "\n".join(left))


def _start_node(node: Node, archive: Path) -> None:
    cp = node.cp
    t0 = time.monotonic()
    (node.workdir / "volumes").mkdir(parents=True, exist_ok=True)
    for machine in node.machines:
        wd = machine.dir
        for sub in ("containerd", "cni", "kubelet", "pod-logs", "volume-plugins", "cni-ipam"):
            (wd / sub).mkdir(parents=True, exist_ok=True)
        (wd / "containerd.toml").write_text(_containerd_config(wd))
        (wd / "resolv.conf").write_text("# no upstream resolver: pods resolve cluster names only\n")
        node.start(f"containerd-{machine.name}", "containerd", "--config", str(wd / "containerd.toml"))
    for machine in node.machines:
        node.wait(
            f"containerd of {machine.name} to serve",
            lambda m=machine: m.socket.exists() and m.ctr("version").returncode == 0,  # type: ignore[misc]
            60,
        )
    node.import_images(archive)
    kubeconfig = cp.kubectl.kubeconfig
    for machine in node.machines:
        wd = machine.dir
        port, healthz = _free_port(), _free_port_loopback()
        (wd / "kubelet.yaml").write_text(yaml.safe_dump(_kubelet_config(wd, port, healthz)))
        node.start(
            f"kubelet-{machine.name}",
            str(BIN / "kubelet"),
            f"--config={wd / 'kubelet.yaml'}",
            f"--kubeconfig={kubeconfig}",
            f"--root-dir={wd / 'kubelet'}",
            f"--cert-dir={wd / 'kubelet' / 'pki'}",
            f"--hostname-override={machine.name}",
            f"--node-ip={NODE_IP}",
            f"--node-labels={ZONE}={machine.zone},topology.kubernetes.io/region=region-1",
        )
    # The CNI network of each node once the controller-manager has given it a pod CIDR (containerd's CRI
    # picks the file up; the node turns Ready then).
    for machine in node.machines:

        def pod_cidr(m: Machine = machine) -> bool:
            cidr = cp.get(f"/api/v1/nodes/{m.name}").get("spec", {}).get("podCIDR")
            if cidr:
                (m.dir / "cni" / "10-kga.conflist").write_text(json.dumps(_cni_config(m, cidr)))
            return bool(cidr)

        node.wait(f"{machine.name} to register and get a pod CIDR", pod_cidr, 120)
    node.wait("the nodes to be Ready", lambda: node_ready(cp, node.names), 120)
    (node.workdir / "kube-proxy.yaml").write_text(yaml.safe_dump(_kube_proxy_config(kubeconfig)))
    node.start("kube-proxy", str(BIN / "kube-proxy"), f"--config={node.workdir / 'kube-proxy.yaml'}")
    # After the Node exists: kube-router reads its addresses at start.
    node.start(
        "kube-router",
        str(BIN / "kube-router"),
        f"--kubeconfig={kubeconfig}",
        f"--hostname-override={NODE_NAME}",
        "--run-firewall=true",
        "--run-router=false",
        "--run-service-proxy=false",
        "--enable-cni=false",
        "--enable-ipv6=false",
        "--metrics-port=0",
        "--health-port=0",
    )

    def provisioner() -> None:
        while not node.provisioner_stop.is_set():
            with contextlib.suppress(httpx.HTTPError, OSError):
                node.provision_once()
            node.provisioner_stop.wait(0.5)

    threading.Thread(target=provisioner, daemon=True).start()
    cp.kubectl.ok(
        "apply", "--server-side", "--field-manager=kgstack-test", "-f", "-", stdin=coredns_objects(node.hosts)
    )
    node.wait("cluster DNS (CoreDNS) to be Ready", lambda: _deployment_ready(cp, "kube-system", "coredns"), 180)
    node.timings["node start"] = time.monotonic() - t0


def _deployment_ready(cp: ControlPlane, namespace: str, name: str) -> bool:
    d = cp.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
    return int(d.get("status", {}).get("readyReplicas", 0)) >= int(d["spec"].get("replicas", 1))


# -- dist/ on the node ---------------------------------------------------------------------------------------


def dist_images(env: str) -> dict[str, str]:
    """``{image as dist/<env> names it: local build}`` for every container of the environment."""
    found: dict[str, str] = {}
    for path in sorted((ROOT / "dist" / env).glob("*.yaml")):
        for image in re.findall(r"^\s*(?:- )?image: (\S+)$", path.read_text(), re.M):
            repository = image.split("@")[0].rsplit(":", 1)[0]
            found[image] = DIST_IMAGES[repository.rsplit("/", 1)[-1]]
    return found


def workload_images(env: str) -> set[str]:
    """The local builds every container of ``dist/<env>`` runs (its CronJobs' too), plus ``probe`` for the
    tests' connections."""
    return {*dist_images(env).values(), "probe"}


def _dist_objects(env: str) -> list[dict[str, Any]]:
    objects = []
    for path in sorted((ROOT / "dist" / env).glob("*.yaml")):
        obj = yaml.safe_load(path.read_text())
        if path.name != "kustomization.yaml" and isinstance(obj, dict):
            objects.append(obj)
    return objects


def _pull_policy_patches(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """JSON patches that let the kubelet use an imported image where dist/ says ``Always`` (it would ask
    a registry, unreachable here, for the tag's digest)."""
    patches = []
    for obj in objects:
        ops = []
        spec = obj.get("spec", {})
        pod_path, pod = "/spec/template/spec", spec.get("template", {}).get("spec")
        if obj["kind"] == "CronJob":
            pod_path, pod = "/spec/jobTemplate/spec/template/spec", spec["jobTemplate"]["spec"]["template"]["spec"]
        for key in ("initContainers", "containers"):
            for i, container in enumerate((pod or {}).get(key, [])):
                if container.get("imagePullPolicy") == "Always":
                    ops.append(
                        {"op": "replace", "path": f"{pod_path}/{key}/{i}/imagePullPolicy", "value": "IfNotPresent"}
                    )
        if ops:
            target = {"kind": obj["kind"], "name": obj["metadata"]["name"]}
            patches.append({"target": target, "patch": json.dumps(ops)})
    return patches


def _kustomization(env: str, resources: list[str], objects: list[dict[str, Any]]) -> dict[str, Any]:
    """A Kustomization of ``resources`` that points the images of ``dist/<env>`` at the local builds."""
    images: list[dict[str, str]] = []
    for image, name in sorted(dist_images(env).items()):
        repository = image.split("@")[0].rsplit(":", 1)[0]
        if all(i["name"] != repository for i in images):
            images.append({"name": repository, "newName": f"{IMAGE_REGISTRY}/{name}", "newTag": IMAGE_TAG})
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": resources,
        "images": images,
        "patches": _pull_policy_patches(objects),
    }


def overlay(env: str, folder: Path) -> Path:
    """A kustomize overlay of ``dist/<env>`` that points it at the local images; its folder."""
    folder.mkdir(parents=True, exist_ok=True)
    kustomization = _kustomization(env, [os.path.relpath(ROOT / "dist" / env, folder)], _dist_objects(env))
    (folder / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))
    return folder


def apply_one_off(node: Node, env: str, manifest: dict[str, Any]) -> str:
    """Apply a Job that ``app.py`` prints for ``env`` (``make restore``, ``make backups``) through the same
    image overlay as ``dist/<env>``; its name."""
    name = str(manifest["metadata"]["name"])
    folder = node.workdir / "one-off" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "job.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    kustomization = _kustomization(env, ["job.yaml"], [manifest])
    (folder / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))
    built = node.cp.kubectl.ok("kustomize", str(folder))
    node.cp.kubectl.ok("apply", "--server-side", "--field-manager=kgstack-test", "-f", "-", stdin=built)
    return name


# -- S3 on the host ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class S3Target:
    """Where the backup CronJobs of ``dist/<env>`` write: ``KGB_S3_ENDPOINT_URL`` and ``KGB_TARGET``."""

    endpoint: str
    bucket: str
    prefix: str

    @property
    def hosts(self) -> list[str]:
        """The endpoint's host name and the bucket's virtual host under it (either addressing style)."""
        host = str(httpx.URL(self.endpoint).host)
        return [host, f"{self.bucket}.{host}"]


def s3_target(env: str) -> S3Target | None:
    """The one S3 target every backup CronJob of ``dist/<env>`` names; ``None`` without S3 backups."""
    found = set()
    for obj in _dist_objects(env):
        if obj["kind"] != "CronJob":
            continue
        for container in obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]:
            values = {e["name"]: e.get("value", "") for e in container.get("env", [])}
            if values.get("KGB_TARGET", "").startswith("s3://") and values.get("KGB_S3_ENDPOINT_URL"):
                bucket, _, prefix = values["KGB_TARGET"].removeprefix("s3://").partition("/")
                found.add(S3Target(values["KGB_S3_ENDPOINT_URL"], bucket, prefix))
    if len(found) > 1:
        raise ValueError(f"dist/{env}: the backup CronJobs name different S3 targets: {sorted(map(str, found))}")
    return found.pop() if found else None


def dist_hosts(env: str) -> dict[str, str]:
    """Names cluster DNS answers for ``dist/<env>``: its model provider and its backups' S3 endpoint."""
    target = s3_target(env)
    return {OPENAI_HOST: OPENAI_IP, **{host: S3_IP for host in (target.hosts if target else [])}}


@dataclass
class FakeS3:
    """moto's S3 server on S3_IP:443 over TLS, holding the target's bucket; ``client`` is boto3's."""

    target: S3Target
    client: Any

    def keys(self, under: str = "") -> list[str]:
        """Every object key under the target's prefix and ``under``."""
        prefix = "/".join(p for p in (self.target.prefix, under) if p)
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.target.bucket, Prefix=prefix)
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))


@contextlib.contextmanager
def fake_s3(workdir: Path, target: S3Target, address: str = S3_IP, hosts: Sequence[str] = ()) -> Iterator[FakeS3]:
    """moto's S3 server (requirements/backup-test.txt) on ``address``:443, with a certificate from :func:`node_ca`
    for the target's endpoint and bucket host names (and ``hosts``), and the target's bucket created (as the
    environment's administrators would have). Path-style requests to the endpoint's own name address buckets by
    path (``MOTO_S3_CUSTOM_ENDPOINTS``); ``<bucket>.<endpoint>`` by host."""
    import importlib.util

    if importlib.util.find_spec("moto") is None:
        raise FileNotFoundError("moto[server] not installed (requirements/backup-test.txt)")
    import boto3
    from botocore.config import Config

    ca_cert, ca_key = node_ca()
    names = [*target.hosts, *hosts]
    key, cert = _certificate(names[0], (ca_key.read_bytes(), ca_cert.read_bytes()), *names[1:], address)
    (workdir / "s3.key").write_bytes(key)
    (workdir / "s3.pem").write_bytes(cert)
    log = (workdir / "moto.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", address, "-p", "443", "-c", str(workdir / "s3.pem"),
         "-k", str(workdir / "s3.key")],
        stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "MOTO_S3_CUSTOM_ENDPOINTS": target.endpoint},
    )  # fmt: skip
    try:
        client = boto3.client(
            "s3",
            endpoint_url=f"https://{address}",
            verify=str(ca_cert),
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
            config=Config(retries={"max_attempts": 1}),
        )
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"moto exited with {proc.returncode}:\n{(workdir / 'moto.log').read_text()[-3000:]}")
            try:
                client.create_bucket(Bucket=target.bucket)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield FakeS3(target, client)
    finally:
        stop(proc)
        log.close()


def _made_up(key: str, data: dict[str, str], redis: str) -> str:
    """A made-up value for a Secret key, in the format docs/secrets.md and docs/edge.md document for it."""
    if key == "url":
        return f"redis://app:{data.setdefault('app-password', secrets.token_hex(16))}@{redis}/0"
    if key == "keys.map":
        key_value = secrets.token_hex(32)
        basic = base64.b64encode(f"kga:{key_value}".encode()).decode()
        return f'"{key_value}" node-test;\n"basic:{basic}" node-test;\n'
    if key == "credentials":
        return "[default]\naws_access_key_id = testing\naws_secret_access_key = testing\n"
    if key == ".dockerconfigjson":
        return json.dumps({"auths": {}})
    if key.endswith("-url"):
        return "https://hooks.example.com/services/node-test"
    return secrets.token_hex(16)


def _secret(name: str, namespace: str, data: dict[str, str]) -> dict[str, Any]:
    secret_type = "kubernetes.io/dockerconfigjson" if ".dockerconfigjson" in data else "Opaque"
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": secret_type,
        "stringData": data,
    }


def _redis_address(env: str) -> str:
    return next(
        f"{obj['metadata']['name']}:{obj['spec']['ports'][0]['port']}"
        for obj in (yaml.safe_load(p.read_text()) for p in (ROOT / "dist" / env).glob("service-*.yaml"))
        if obj["metadata"]["labels"].get("app.kubernetes.io/component") == "redis"
    )


def hand_made_secrets(env: str, namespace: str) -> list[dict[str, Any]]:
    """The Secrets docs/environments/<env>/secrets.md says a person creates before the first sync, with
    made-up values in the documented formats (docs/secrets.md, docs/edge.md)."""
    table = (ROOT / "docs" / "environments" / env / "secrets.md").read_text()
    redis = _redis_address(env)
    out = []
    for name, keys in re.findall(r"^\| `([^`]+)` \| ([^|]+) \| \*\*you\*\*", table, re.M):
        data: dict[str, str] = {}
        for key in re.findall(r"`([^`]+)`", keys):
            data.setdefault(key, _made_up(key, data, redis))
        out.append(_secret(name, namespace, data))
    return out


def _quoted(values: dict[str, str], match: re.Match[str]) -> str:
    from urllib.parse import quote_plus

    return quote_plus(values[match.group(1)])


_TEMPLATE_VALUE = re.compile(r'\{\{ index \. "([^"]+)" \| urlquery \}\}')


def external_secret_targets(env: str, namespace: str) -> list[dict[str, Any]]:
    """The Secrets External Secrets Operator would write for the ExternalSecrets of ``dist/<env>`` (no operator
    and no secret store run here): each ``spec.data`` key with a made-up value as :func:`hand_made_secrets`
    makes them, the target template's ``data`` rendered from those (the one template form dist/ uses,
    ``{{ index . "key" | urlquery }}``; any other fails), and the template's type."""
    out = []
    for path in sorted((ROOT / "dist" / env).glob("externalsecret-*.yaml")):
        obj = yaml.safe_load(path.read_text())
        spec, redis = obj["spec"], _redis_address(env)
        if spec.get("dataFrom"):
            raise NotImplementedError(f"{path.name}: spec.dataFrom has no stand-in here")
        data: dict[str, str] = {}
        for item in spec.get("data", []):
            data.setdefault(item["secretKey"], _made_up(item["secretKey"], data, redis))
        template = spec.get("target", {}).get("template") or {}
        for key, text in (template.get("data") or {}).items():
            rendered = _TEMPLATE_VALUE.sub(partial(_quoted, dict(data)), text)
            if "{{" in rendered:
                raise NotImplementedError(f"{path.name}: template of {key!r} has no stand-in here: {text}")
            data[key] = rendered
        secret = _secret(spec.get("target", {}).get("name") or obj["metadata"]["name"], namespace, data)
        secret["type"] = template.get("type", secret["type"])
        out.append(secret)
    return out


@dataclass
class _ApplyLog:
    """A kubectl that keeps what each ``apply`` printed, so a wave's warnings are not lost."""

    kubectl: Any
    outputs: list[subprocess.CompletedProcess[str]] = field(default_factory=list)

    def run(self, *args: str, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        out: subprocess.CompletedProcess[str] = self.kubectl.run(*args, stdin=stdin, timeout=timeout)
        if args[:1] == ("apply",):
            self.outputs.append(out)
        return out


@dataclass
class DistSync:
    """What :func:`apply_dist` saw: every warning and rejection, and the first sync's waves."""

    problems: list[str]
    waves: list[WaveResult]


def _claimed_classes(env: str) -> set[str]:
    """The StorageClasses the claims of ``dist/<env>`` name (their own, their StatefulSets' and CronJobs')."""
    text = "".join(p.read_text() for p in sorted((ROOT / "dist" / env).glob("*.yaml")))
    return set(re.findall(r"^\s*storageClassName: (\S+)$", text, re.M))


def add_storage_classes(node: Node, env: str) -> list[str]:
    """The platform layer's StorageClasses that ``dist/<env>``'s claims name, as the node's: the platform's
    object (dist/argocd/<cluster>/platform) with the node's local-directory provisioner in place of the
    cloud's CSI driver and its parameters; its binding mode (WaitForFirstConsumer) and reclaim policy kept.
    The names added."""
    platform = platform_storage_classes()
    added = []
    for name in sorted(_claimed_classes(env) - node.storage_classes.keys()):
        obj = dict(platform[name])
        if obj.get("volumeBindingMode") != "WaitForFirstConsumer":
            raise AssertionError(f"StorageClass {name}: the node's provisioner binds on first consumer only")
        obj.pop("parameters", None)
        obj["provisioner"] = PROVISIONER
        node.cp.kubectl.ok("apply", "--server-side", "--field-manager=kgstack-test", "-f", "-", stdin=json.dumps(obj))
        node.storage_classes[name] = obj.get("reclaimPolicy", "Delete")
        added.append(name)
    return added


def namespace_of(env: str) -> str:
    return str(yaml.safe_load(next((ROOT / "dist" / env).glob("namespace-*.yaml")).read_text())["metadata"]["name"])


class _Yaml12ishLoader(yaml.SafeLoader):
    """PyYAML's safe loader without YAML 1.1's ``=`` value tag: kustomize prints a matcher's ``matchType: =``
    unquoted, which is a plain string to Kubernetes' YAML 1.2 parser."""


_Yaml12ishLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:value"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def apply_dist(node: Node, env: str, *, timeout: float = 600) -> DistSync:
    """``dist/<env>`` through the image overlay, as Argo CD's first sync deploys it: the namespace, the
    hand-made Secrets (what a person creates first) and the Secrets External Secrets Operator would write
    (:func:`external_secret_targets`; their ExternalSecrets sync too, without a built-in health check), the
    platform's StorageClasses its claims name (:func:`add_storage_classes`), then the overlay's objects wave by
    wave, server-side, each wave gated on Argo CD's health rules (tests/argo_sync.py); ``timeout`` is per wave.
    A wave that does not become healthy raises :class:`argo_sync.SyncStuckError`."""
    cp = node.cp
    folder = ROOT / "dist" / env
    namespace = namespace_of(env)
    cp.kubectl.ok(
        "apply", "--server-side", "--field-manager=kgstack-test", "-f", str(next(folder.glob("namespace-*.yaml")))
    )
    for secret in [*hand_made_secrets(env, namespace), *external_secret_targets(env, namespace)]:
        cp.kubectl.ok("apply", "--server-side", "--field-manager=kgstack-test", "-f", "-", stdin=json.dumps(secret))
    add_storage_classes(node, env)
    built = cp.kubectl.run(
        "kustomize", "--load-restrictor=LoadRestrictionsNone", str(overlay(env, node.workdir / f"overlay-{env}"))
    )
    if built.returncode:
        return DistSync([f"kustomize: {built.stderr}"], [])
    objects = [obj for obj in yaml.load_all(built.stdout, Loader=_Yaml12ishLoader) if obj]
    log = _ApplyLog(cp.kubectl)
    results = first_sync(log, objects, timeout=timeout)
    problems = [line for out in log.outputs for line in out.stderr.splitlines() if line.strip()]
    return DistSync(problems, results)


def first_sync_problems(node: Node, env: str, synced: DistSync, rules: dict[str, str]) -> list[str]:
    """What is wrong with a completed first sync of ``dist/<env>`` (empty when nothing): a wave skipped or out
    of order, an object neither gated nor without a check, a claim not Bound under a WaitForFirstConsumer
    class or not gated in the wave of the workload that mounts it, a Deployment or StatefulSet not gated by
    ``rules[kind]`` (the gitops-engine function the caller expects)."""
    objects = read_folder(ROOT / "dist" / env)
    namespace = namespace_of(env)
    problems = [f"apply: {line}" for line in synced.problems]
    if [r.wave for r in synced.waves] != list(waves(objects)):
        problems.append(f"waves {[r.wave for r in synced.waves]}, dist/ has {list(waves(objects))}")
    for result in synced.waves:
        if sorted([*result.gated, *result.ungated]) != sorted(result.applied):
            problems.append(f"wave {result.wave}: not every object applied was gated or without a check")
    gated = {name: (r.wave, rule) for r in synced.waves for name, rule in r.gated.items()}
    for claim in (o for o in objects if o["kind"] == "PersistentVolumeClaim"):
        name = claim["metadata"]["name"]
        live = node.cp.get(f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/{name}")
        mode = node.cp.get(f"/apis/storage.k8s.io/v1/storageclasses/{live['spec']['storageClassName']}")
        if live["status"]["phase"] != "Bound" or mode["volumeBindingMode"] != "WaitForFirstConsumer":
            problems.append(f"claim {name}: {live['status']['phase']} under {mode['volumeBindingMode']}")
        consumers = [
            f"{o['kind']}/{o['metadata']['name']}"
            for o in objects
            if o["kind"] in ("Deployment", "StatefulSet")
            and any(
                (v.get("persistentVolumeClaim") or {}).get("claimName") == name
                for v in o["spec"]["template"]["spec"].get("volumes", [])
            )
        ]
        wave, rule = gated.get(f"PersistentVolumeClaim/{name}", (None, ""))
        if rule != rules["PersistentVolumeClaim"] or [gated.get(c, (None,))[0] for c in consumers] != [wave]:
            problems.append(f"claim {name}: gated in wave {wave} by {rule!r}; its consumers {consumers}")
    workloads = [o for o in objects if o["kind"] in ("Deployment", "StatefulSet")]
    if not workloads:
        problems.append("no workload")
    for obj in workloads:
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        if gated.get(name, (None, ""))[1] != rules[obj["kind"]]:
            problems.append(f"{name}: gated by {gated.get(name)}, not {rules[obj['kind']]}")
    return problems


def remove_dist(node: Node, env: str, *, timeout: float = 300) -> float:
    """Delete ``dist/<env>``'s namespace and wait until it is gone, its pods force-deleted (their grace
    periods, up to an hour for a running index, only guard data a test does not keep); the seconds taken.
    Its claims' volumes stay, Released, where the class retains them."""
    cp, namespace = node.cp, namespace_of(env)
    start = time.monotonic()
    cp.kubectl.ok("delete", "namespace", namespace, "--wait=false")

    def gone() -> bool:
        pods = cp.items(f"/api/v1/namespaces/{namespace}/pods")
        if pods:
            cp.kubectl.run("delete", "pods", "--all", "-n", namespace, "--force", "--grace-period=0", "--wait=false")
        return not pods and cp.api.get(f"/api/v1/namespaces/{namespace}").status_code == 404

    node.wait(f"namespace {namespace} to be gone", gone, timeout)
    return time.monotonic() - start


# -- how many nodes ------------------------------------------------------------------------------------------

_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9, "m": 1e-3}


def quantity(text: str | int | float) -> float:
    """A Kubernetes resource quantity as a number (cores, bytes)."""
    value = str(text)
    for suffix, factor in _UNITS.items():
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * factor
    return float(value)


def pod_requests(pod: dict[str, Any]) -> dict[str, float]:
    """``{"cpu": cores, "memory": bytes}`` a pod spec requests, as the scheduler counts it: its containers
    (and restartable init containers) together, or its largest init container if that is more."""

    def of(container: dict[str, Any], resource: str) -> float:
        return quantity(((container.get("resources") or {}).get("requests") or {}).get(resource, 0))

    out = {}
    for resource in ("cpu", "memory"):
        sidecars = [c for c in pod.get("initContainers", []) if c.get("restartPolicy") == "Always"]
        running = sum(of(c, resource) for c in [*pod["containers"], *sidecars])
        init = max([of(c, resource) for c in pod.get("initContainers", []) if c not in sidecars], default=0.0)
        out[resource] = max(running, init)
    return out


def dist_pods(env: str) -> list[tuple[str, dict[str, float]]]:
    """``[(workload, requests)]``, one entry per pod the first sync of ``dist/<env>`` starts: each Deployment
    and StatefulSet at its replicas, or at its HorizontalPodAutoscaler's ``minReplicas`` when more (the
    autoscaler raises it within the Deployment's wave). Raises on a hard placement rule (a required
    spread, affinity or node selector), which capacity alone would not account for."""
    folder = ROOT / "dist" / env
    objects = [yaml.safe_load(p.read_text()) for p in sorted(folder.glob("*.yaml")) if p.name != "kustomization.yaml"]
    minimum = {
        o["spec"]["scaleTargetRef"]["name"]: int(o["spec"].get("minReplicas", 1))
        for o in objects
        if o["kind"] == "HorizontalPodAutoscaler"
    }
    out = []
    for obj in objects:
        if obj["kind"] not in ("Deployment", "StatefulSet"):
            continue
        name, pod = obj["metadata"]["name"], obj["spec"]["template"]["spec"]
        affinity = pod.get("affinity") or {}
        hard = [
            *(c for c in pod.get("topologySpreadConstraints", []) if c.get("whenUnsatisfiable") != "ScheduleAnyway"),
            *(k for k in ("nodeSelector", "nodeName") if pod.get(k)),
            *(
                kind
                for kind, rules in affinity.items()
                if (rules or {}).get("requiredDuringSchedulingIgnoredDuringExecution")
            ),
        ]
        if hard:
            raise NotImplementedError(f"{name}: hard placement rules {hard}; node counting covers capacity only")
        replicas = max(int(obj["spec"].get("replicas", 1)), minimum.get(name, 0))
        out += [(name, pod_requests(pod))] * replicas
    return out


def nodes_needed(envs: list[str], capacity: dict[str, float] | None = None) -> int:
    """The fewest nodes of ``capacity`` (this host's cores and memory, which each kubelet reports) on which
    every environment's pods schedule, one environment at a time, whatever order and node the scheduler
    picks: a pod of size ``s`` fails only when every node has less than ``s`` free, i.e. when the other pods
    hold more than ``N * (capacity - s)``; so ``N`` is the least with ``total - s < N * (capacity - s)`` for
    every pod and resource."""
    if capacity is None:
        memory = next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal:"))
        capacity = {"cpu": float(os.cpu_count() or 1), "memory": float(memory.split()[1]) * 1024 - 100 * 2**20}
    needed = 1
    for env in envs:
        pods = dist_pods(env)
        for resource, size in capacity.items():
            total = sum(r[resource] for _, r in pods)
            for _, requests in pods:
                s = requests[resource]
                if s > size:
                    raise AssertionError(f"dist/{env}: a pod requests {s} {resource}, more than a node's {size}")
                if s < size:
                    needed = max(needed, int((total - s) // (size - s)) + 1)
    return needed


# -- `make cluster` --------------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    if not argv or argv[0] != "cluster" or len(argv) > 2:
        print("usage: python tests/real_node.py cluster [ENV]", file=sys.stderr)
        return 2
    env = argv[1] if len(argv) == 2 else "dev"
    with real_node(workload_images(env), dist_hosts(env), nodes=nodes_needed([env])) as node:
        synced = apply_dist(node, env)
        print("\n".join(synced.problems) or f"dist/{env} synced:\n{wave_table(synced.waves)}", file=sys.stderr)
        print(f"export KUBECONFIG={node.cp.kubectl.kubeconfig}", file=sys.stderr)
        print("Ctrl-C stops the node and restores the host.", file=sys.stderr)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
