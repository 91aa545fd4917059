"""The cloud targets, run for real: every container of dist/aws/ecs/template.json and dist/azure/aci/ started on
Debian's Docker Engine as rendered (tests/cloud_run.py plays the platform), then driven through the edge.

Stand-ins, each said where it is made: the images (tests/cloud_images.py); ElastiCache and Azure Cache for Redis
as redis-server with the TLS, port and AUTH the templates ask for (:func:`managed_redis`); the model provider as
tests/fake_openai.py over TLS on the host's side of the network; the public ALB and ACI's gateway are not
played: the tests speak to the edge container directly (with the ALB's ``X-Forwarded-*`` headers on ECS).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from base64 import b64encode
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cloud_images import Images
from cloud_run import (
    FARGATE_SCRATCH,
    REGION,
    SCRATCH_MODE,
    Arm,
    EngineApi,
    Stack,
    Vault,
    aci_container,
    aci_order,
    dynamic_secret,
    ecs_container,
    ecs_dependencies_met,
    ecs_secret,
    ecs_start_order,
    http_get,
    image_for,
    resolver_in_namespace,
    sandbox_config,
    tag_reference,
    volume_dir,
    wait_until,
)
from docker_engine import DockerEngine
from fake_openai import FakeOpenAI, vector
from real_node import FakeS3, S3Target, _certificate, fake_s3, node_ca, tls_fake_openai
from rendered import CHROMA_CONTENT
from tools import ROOT

from kgstack.cloud_components import EDGE, FILES_ENV

pytestmark = pytest.mark.slow  # builds images and runs a Docker engine
ECS_TEMPLATE = ROOT / "dist" / "aws" / "ecs" / "template.json"
ACI_DIR = ROOT / "dist" / "azure" / "aci"
KEY = secrets.token_hex(32)
OPENAI_HOST = "api.openai.com"
"""Where the agent's model provider is: neither environment sets ``llm.apiBaseUrl``."""
PING = "import os, redis; print(redis.Redis.from_url(os.environ['REDIS_URL']).ping())"
"""Run in an agent container: its own REDIS_URL, TLS and AUTH as the agent's cache uses them."""
CLIENT = "203.0.113.7"
"""The client's address the ALB appends to ``X-Forwarded-For``."""
S3_ADDRESS = "198.51.100.21"
"""Where AWS's S3 names point in the ECS run: moto over TLS (the model provider's fake holds the gateway's 443)."""
PLATFORM_ENV = {
    "AWS_REGION": REGION,
    "AWS_DEFAULT_REGION": REGION,
    # Fargate serves the task role's credentials at AWS_CONTAINER_CREDENTIALS_RELATIVE_URI; moto takes any keys.
    "AWS_ACCESS_KEY_ID": "task-role",
    "AWS_SECRET_ACCESS_KEY": "task-role",
}
"""What Fargate adds to every container's environment, as far as the tasks here use it."""


@dataclass
class Engine:
    docker: DockerEngine
    api: EngineApi
    images: dict[str, str]
    workdir: Path
    timings: dict[str, float] = field(default_factory=dict)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    workdir = tmp_path_factory.mktemp("cloud")
    started = time.monotonic()
    builder = Images(workdir)
    images = builder.build()
    timings = {"images built": time.monotonic() - started}
    docker = DockerEngine(Path(f"/tmp/kga-cloud-{os.getpid()}")).start()
    try:
        started = time.monotonic()
        references = _references()
        docker.load_all(builder.podman, list(images.values()))
        for tag in images.values():
            for reference in references:
                if image_for(reference, images) == tag:
                    docker.docker("tag", tag, tag_reference(reference))
        timings["images loaded"] = time.monotonic() - started
        print("[cloud-run] " + ", ".join(f"{k} in {v:.0f} s" for k, v in timings.items()))
        api = EngineApi(docker)
        yield Engine(docker, api, images, workdir, timings)
        api.clear()
    finally:
        docker.remove()


def _references() -> set[str]:
    """Every image reference the two templates name."""
    ecs = json.loads(ECS_TEMPLATE.read_text())
    refs = {
        c["Image"]
        for r in ecs["Resources"].values()
        if r["Type"] == "AWS::ECS::TaskDefinition"
        for c in r["Properties"]["ContainerDefinitions"]
    }
    aci = json.loads((ACI_DIR / "azuredeploy.json").read_text())
    refs |= {
        c["properties"]["image"]
        for r in aci["resources"]
        if r["type"] == "Microsoft.ContainerInstance/containerGroups"
        for c in r["properties"]["containers"]
    }
    return refs


# -- the platform's services -----------------------------------------------------------------------------------------


def _issue(folder: Path, host: str) -> tuple[Path, Path, Path]:
    """A certificate for ``host`` from the test CA the agent image trusts: (certificate, key, CA)."""
    ca_cert, ca_key = node_ca()
    key, cert = _certificate(host, (ca_key.read_bytes(), ca_cert.read_bytes()))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tls.crt").write_bytes(cert)
    (folder / "tls.key").write_bytes(key)
    shutil.copy(ca_cert, folder / "ca.crt")
    return folder / "tls.crt", folder / "tls.key", folder / "ca.crt"


def fake_openai(folder: Path, address: str) -> FakeOpenAI:
    """tests/fake_openai.py over TLS on ``address``:443 (the network's gateway, the host's side of the bridge)."""
    cert, key, _ = _issue(folder, OPENAI_HOST)
    started: FakeOpenAI = tls_fake_openai(address, cert, key).start()
    return started


def managed_redis(e: Engine, name: str, *, network: str, host: str, port: int, password: str, folder: Path) -> str:
    """The managed cache's stand-in: redis-server with TLS only on ``port`` (TLS 1.2+), the password as AUTH,
    a certificate for ``host``; reachable as ``host`` on the network. What differs: Debian's redis 7.0, not
    ElastiCache 7.1 or Azure's 6; no replica, no snapshots."""
    _issue(folder, host)
    (folder / "redis.conf").write_text(
        f"port 0\ntls-port {port}\ntls-cert-file /conf/tls.crt\ntls-key-file /conf/tls.key\n"
        'tls-ca-cert-file /conf/ca.crt\ntls-auth-clients no\ntls-protocols "TLSv1.2 TLSv1.3"\n'
        f"requirepass {password}\nsave ''\nappendonly no\n"
    )
    for path in [folder, *folder.iterdir()]:
        os.chown(path, 10001, 10001)
    e.api.run(
        name,
        {
            "Image": e.images["redis"],
            "Cmd": ["/conf/redis.conf"],
            "User": "10001:10001",
            "HostConfig": {
                "NetworkMode": network,
                "ReadonlyRootfs": True,
                "CapDrop": ["ALL"],
                "Mounts": [{"Type": "bind", "Source": str(folder), "Target": "/conf", "ReadOnly": True}],
            },
            "NetworkingConfig": {"EndpointsConfig": {network: {"Aliases": [host]}}},
        },
    )
    return host


def redis_cli(e: Engine, name: str, port: int, password: str, *args: str) -> str:
    result = e.api.exec(
        name, "redis-cli", "--tls", "--cacert", "/conf/ca.crt", "-p", str(port), "--no-auth-warning",
        "-a", password, *args,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def keys_map() -> str:
    basic = b64encode(f"kga:{KEY}".encode()).decode()
    return f'"{KEY}" cloud-run;\n"basic:{basic}" cloud-run;\n'


@dataclass
class Running:
    """One target, started: its containers (``name -> definition``), where the edge answers, its services."""

    e: Engine
    containers: dict[str, dict[str, Any]]
    edge: str
    domain: str
    fake: FakeOpenAI
    redis: tuple[str, int, str]
    vault: Vault
    volumes: dict[str, Path]
    timings: dict[str, float] = field(default_factory=dict)
    tls: Path | None = None
    helpers: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Non-essential containers that ran to their end before the others started (ECS's volume owners)."""
    deferred: dict[str, EcsTask] = field(default_factory=dict)
    """Scheduled tasks not started with the others, by family: their tests run them (:attr:`start`)."""
    platform: EcsPlatform | None = None
    """Starts one more task run, as EventBridge or ``aws ecs run-task`` would."""
    s3: FakeS3 | None = None

    def request(self, path: str, headers: dict[str, str] | None = None, body: bytes | None = None) -> tuple[int, str]:
        scheme = "https" if self.tls else "http"
        context = None
        if self.tls:
            context = ssl.create_default_context(cafile=str(self.tls))
            context.check_hostname = False  # the certificate names the domain; we connect to the address
        extra = {} if self.tls else {"X-Forwarded-Proto": "https", "X-Forwarded-For": CLIENT}
        request = urllib.request.Request(
            f"{scheme}://{self.edge}:8443{path}",
            data=body,
            headers={"Host": self.domain, **extra, **(headers or {})},
        )
        try:
            with urllib.request.urlopen(request, context=context, timeout=60) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    def logs(self) -> str:
        return "\n".join(f"--- {name}\n{self.e.api.logs(name, 25)}" for name in self.containers)


def _ip(e: Engine, name: str, network: str) -> str:
    return str(e.api.inspect(name)["NetworkSettings"]["Networks"][network]["IPAddress"])


# -- ECS -------------------------------------------------------------------------------------------------------------


@dataclass
class EcsTask:
    """A task to start: a service's (``count`` replicas, reachable by ``aliases``) or a scheduled run."""

    definition: dict[str, Any]
    count: int
    aliases: list[str]
    scheduled: bool = False


def ecs_vault(stack: Stack, endpoint: str) -> tuple[Vault, str]:
    """Secrets Manager: every key a task or the cache reads, made now; and the cache's AUTH token."""
    vault = Vault()
    wanted = {
        ecs_secret(stack.resolve(s["ValueFrom"]))
        for p in stack.of_type("AWS::ECS::TaskDefinition").values()
        for c in p["ContainerDefinitions"]
        for s in c.get("Secrets", [])
    }
    ((_, cache),) = stack.of_type("AWS::ElastiCache::ReplicationGroup").items()
    token = dynamic_secret(cache["AuthToken"])
    for name, key in sorted(wanted | {token}):
        vault.values.setdefault(name, {})[key] = secrets.token_hex(24)
    password = vault.json_key(*token)
    for name, key in wanted:
        if key == "url":  # the cache's URL, as docs/cloud-ecs.md step 4 writes it
            vault.values[name][key] = f"rediss://:{password}@{endpoint}:{cache['Port']}/0"
        if key == "keys.map":
            vault.values[name][key] = keys_map()
    return vault, password


def ecs_tasks(stack: Stack, internal: str) -> list[EcsTask]:
    """The services with their Cloud Map names (and the internal ALB's DNS name for the tasks behind it), and
    the scheduled tasks."""
    definitions = stack.of_type("AWS::ECS::TaskDefinition")
    spaces = {k: p["Name"] for k, p in stack.of_type("AWS::ServiceDiscovery::PrivateDnsNamespace").items()}
    discovery = {
        k: f"{p['Name']}.{spaces[p['NamespaceId']['Fn::GetAtt'][0]]}"
        for k, p in stack.of_type("AWS::ServiceDiscovery::Service").items()
    }
    groups = stack.of_type("AWS::ElasticLoadBalancingV2::TargetGroup")
    behind: dict[str, str] = {}
    for listener in stack.of_type("AWS::ElasticLoadBalancingV2::Listener").values():
        for action in listener["DefaultActions"]:
            if "TargetGroupArn" in action and listener["LoadBalancerArn"]["Ref"] == internal:
                group = action["TargetGroupArn"]["Ref"]
                # The alias stands for the ALB only where the ALB forwards to the port it listens on.
                assert int(listener["Port"]) == int(groups[group]["Port"])
                behind[group] = stack.attributes[(internal, "DNSName")]
    tasks = []
    for service in stack.of_type("AWS::ECS::Service").values():
        aliases = [discovery[r["RegistryArn"]["Fn::GetAtt"][0]] for r in service.get("ServiceRegistries", [])]
        aliases += [
            behind[b["TargetGroupArn"]["Ref"]]
            for b in service.get("LoadBalancers", [])
            if b["TargetGroupArn"]["Ref"] in behind
        ]
        tasks.append(EcsTask(definitions[service["TaskDefinition"]["Ref"]], int(service["DesiredCount"]), aliases))
    for rule in stack.of_type("AWS::Events::Rule").values():
        for target in rule["Targets"]:
            if "EcsParameters" not in target:
                continue  # a rule that notifies (a failed run to the alarm topic), not one that runs a task
            ecs = target["EcsParameters"]
            tasks.append(EcsTask(definitions[ecs["TaskDefinitionArn"]["Ref"]], int(ecs["TaskCount"]), [], True))
    return tasks


def ecs_volumes(stack: Stack, task: dict[str, Any], folder: Path, sandbox: str) -> dict[str, Path]:
    """A task's volumes: an EFS one is the access point's folder (shared by every task that mounts it), owned
    as its CreationInfo says; any other is the task's own scratch folder."""
    points = stack.of_type("AWS::EFS::AccessPoint")
    mounts: dict[str, Path] = {}
    for volume in task.get("Volumes", []):
        efs = volume.get("EFSVolumeConfiguration")
        if efs:
            root = points[efs["AuthorizationConfig"]["AccessPointId"]["Ref"]]["RootDirectory"]
            info = root["CreationInfo"]
            uid, gid, mode = int(info["OwnerUid"]), int(info["OwnerGid"]), int(info["Permissions"], 8)
            mounts[volume["Name"]] = volume_dir(folder / "efs", root["Path"].strip("/"), uid, gid, mode)
        else:
            mounts[volume["Name"]] = volume_dir(folder / "tasks" / sandbox, volume["Name"], *FARGATE_SCRATCH)
    return mounts


def ecs_healthy(e: Engine, containers: dict[str, dict[str, Any]], runs: tuple[str, ...], passed: set[str]) -> bool:
    """Every service container runs, and each health check has passed (Docker keeps its last results: on a
    loaded machine a check can time out after it passed)."""
    for name in containers:
        state = e.api.inspect(name)["State"]
        if name in runs:
            continue  # a run to its end, not a service (test_the_scheduled_reindex_runs_against_the_indexer)
        if not state["Running"]:
            raise AssertionError(f"{name} exited with {state['ExitCode']}:\n{e.api.logs(name)}")
        if any(r["ExitCode"] == 0 for r in state.get("Health", {}).get("Log", [])):
            passed.add(name)
    return all(name in passed for name, c in containers.items() if "HealthCheck" in c)


def _start_task(
    engine: Engine,
    stack: Stack,
    task: dict[str, Any],
    *,
    vault: Vault,
    mounts: dict[str, Path],
    sandbox: str,
    commands: dict[str, list[str]] | None = None,
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Start a task's containers in the ECS agent's order, each once its DependsOn conditions hold; ``commands``:
    a run-task's command overrides, by container name."""
    for c in ecs_start_order(task["ContainerDefinitions"]):
        name = f"{sandbox}-{c['Name']}"
        ecs_dependencies_met(engine.api, sandbox, c, 300)
        config = ecs_container(
            stack, c, vault=vault, volumes=mounts, sandbox=sandbox, platform_env=PLATFORM_ENV,
            command=(commands or {}).get(c["Name"]),
        )  # fmt: skip
        engine.api.run(name, config)
        yield name, c


def _s3_target(stack: Stack) -> S3Target:
    """Where the scheduled backups write (``KGB_TARGET``), on AWS's own S3 endpoint (no ``KGB_S3_ENDPOINT_URL``)."""
    (target,) = {
        e["Value"]
        for p in stack.of_type("AWS::ECS::TaskDefinition").values()
        for c in p["ContainerDefinitions"]
        for e in c.get("Environment", [])
        if e["Name"] == "KGB_TARGET"
    }
    bucket, _, prefix = target.removeprefix("s3://").partition("/")
    return S3Target(f"https://s3.{REGION}.amazonaws.com", bucket, prefix)


@contextlib.contextmanager
def _address_on_lo(address: str) -> Iterator[None]:
    """``address`` on the host's loopback while the run lasts: the tasks reach it through their gateway."""
    # replace, not add: an address a killed run left behind is taken over, not an error
    subprocess.run(["ip", "addr", "replace", f"{address}/32", "dev", "lo"], check=True, capture_output=True)
    try:
        yield
    finally:
        subprocess.run(["ip", "addr", "del", f"{address}/32", "dev", "lo"], check=False, capture_output=True)


def _s3_hosts(target: S3Target) -> list[str]:
    """Every name boto3 may use for the bucket in the region: regional and global, path and virtual host."""
    return [*target.hosts, "s3.amazonaws.com", f"{target.bucket}.s3.amazonaws.com"]


@dataclass
class EcsPlatform:
    """Fargate, as far as starting a task goes: its sandbox on the VPC's network (with the Cloud Map aliases and
    ``hosts``), its volumes, then its containers in order; ``helpers`` and ``volumes`` collect every run's."""

    engine: Engine
    stack: Stack
    vault: Vault
    folder: Path
    network: str
    hosts: list[str]
    helpers: dict[str, dict[str, Any]] = field(default_factory=dict)
    volumes: dict[str, Path] = field(default_factory=dict)

    def start(
        self, task: EcsTask, sandbox: str, commands: dict[str, list[str]] | None = None
    ) -> dict[str, dict[str, Any]]:
        """One run of ``task`` (``commands``: a run-task's overrides); its essential containers by name."""
        api = self.engine.api
        mounts = ecs_volumes(self.stack, task.definition, self.folder, sandbox)
        self.volumes.update({f"{sandbox}/{k}": v for k, v in mounts.items()})
        api.run(sandbox, sandbox_config(self.engine.images["agent"], self.network, task.aliases, self.hosts, None))
        resolver_in_namespace(int(api.inspect(sandbox)["State"]["Pid"]))
        started = dict(
            _start_task(
                self.engine, self.stack, task.definition, vault=self.vault, mounts=mounts, sandbox=sandbox,
                commands=commands,
            )
        )  # fmt: skip
        # The non-essential ones ran to their end before the others (the volume owner).
        self.helpers.update({n: c for n, c in started.items() if not c.get("Essential", True)})
        return {n: c for n, c in started.items() if c.get("Essential", True)}


@pytest.fixture(scope="class")
def ecs(engine: Engine) -> Iterator[Running]:
    template = json.loads(ECS_TEMPLATE.read_text())
    raw = Stack(template, {})
    (vpc,) = raw.of_type("AWS::EC2::VPC").values()
    network = "kga-aws-vpc"
    gateway = engine.api.network(network, vpc["CidrBlock"])
    folder = engine.workdir / "ecs"
    albs = raw.of_type("AWS::ElasticLoadBalancingV2::LoadBalancer")
    internal = next(k for k, p in albs.items() if p.get("Scheme") == "internal")
    public = next(k for k in albs if k != internal)
    ((cache_id, cache),) = raw.of_type("AWS::ElastiCache::ReplicationGroup").items()
    endpoint = f"{cache_id.lower()}.cache.example.com"
    stack = Stack(
        template,
        {
            (internal, "DNSName"): f"internal-{internal.lower()}.{REGION}.elb.example.com",
            (public, "DNSName"): f"{public.lower()}.{REGION}.elb.example.com",
            (cache_id, "PrimaryEndPoint.Address"): endpoint,
        },
    )
    vault, password = ecs_vault(stack, endpoint)
    assert cache["TransitEncryptionEnabled"] is True
    port = int(cache["Port"])
    managed_redis(
        engine, "ecs-redis", network=network, host=endpoint, port=port, password=password, folder=folder / "redis"
    )
    fake = fake_openai(folder / "openai", gateway)
    target = _s3_target(stack)
    (folder / "s3").mkdir(parents=True, exist_ok=True)
    # Whatever fails from here on, each of these is undone (the last first).
    with contextlib.ExitStack() as later:
        later.callback(engine.api.clear)
        later.callback(fake.stop)
        later.enter_context(_address_on_lo(S3_ADDRESS))
        s3 = later.enter_context(fake_s3(folder / "s3", target, S3_ADDRESS, _s3_hosts(target)))
        hosts = [f"{OPENAI_HOST}:{gateway}", *(f"{h}:{S3_ADDRESS}" for h in _s3_hosts(target))]

        platform = EcsPlatform(engine, stack, vault, folder, network, hosts)
        started = time.monotonic()
        containers: dict[str, dict[str, Any]] = {}
        deferred: dict[str, EcsTask] = {}
        runs: tuple[str, ...] = ()
        for task in ecs_tasks(stack, internal):
            if task.scheduled and "-backup-" in task.definition["Family"]:
                # Started by its test, once the re-index has left the indexer idle (EventBridge runs it at 02:45).
                deferred[task.definition["Family"]] = task
                continue
            for i in range(task.count):
                for name, c in platform.start(task, f"{task.definition['Family']}-{i}").items():
                    containers[name] = c
                    runs += (name,) if task.scheduled else ()
        edge_ip = next(_ip(engine, n.rsplit("-", 1)[0], network) for n, c in containers.items() if c["Name"] == EDGE)
        edge = next(c for c in containers.values() if c["Name"] == EDGE)
        domain = _server_name(next(e["Value"] for e in edge["Environment"] if e["Name"] == f"{FILES_ENV}0"))
        redis = ("ecs-redis", port, password)
        running = Running(engine, containers, edge_ip, domain, fake, redis, vault, platform.volumes)
        running.helpers, running.deferred, running.platform, running.s3 = platform.helpers, deferred, platform, s3

        passed: set[str] = set()
        running.timings["started"] = time.monotonic() - started
        running.timings["healthy"] = wait_until(
            "ECS containers healthy", lambda: ecs_healthy(engine, containers, runs, passed), 600, running.logs
        )
        print(f"[cloud-run] {network}: " + ", ".join(f"{k} in {v:.0f} s" for k, v in running.timings.items()))
        yield running


def _server_name(conf: Any) -> str:
    """The public host the edge's nginx.conf answers for (``server_name <domain> _;``)."""
    text = conf if isinstance(conf, str) else json.dumps(conf)
    found = re.search(r"server_name ([a-z0-9.-]+) _;", text)
    assert found, text[:500]
    return found[1]


class TestEcs:
    def test_every_container_runs_as_rendered(self, ecs: Running) -> None:
        for name, c in ecs.containers.items():
            seen = ecs.e.api.inspect(name)
            host, config = seen["HostConfig"], seen["Config"]
            assert host["ReadonlyRootfs"] is c["ReadonlyRootFilesystem"] is True, name
            assert host["CapDrop"] == ["ALL"] and host["Privileged"] is False, name
            assert config["User"] == c["User"] == "10001:10001", name
            if "HealthCheck" in c:
                assert config["Healthcheck"]["Test"] == c["HealthCheck"]["Command"], name

    def test_each_declared_port_answers(self, ecs: Running) -> None:
        import socket

        for name, c in ecs.containers.items():
            sandbox = name.rsplit("-", 1)[0]
            address = _ip(ecs.e, sandbox, "kga-aws-vpc")
            for mapping in c.get("PortMappings", []):
                with socket.create_connection((address, mapping["ContainerPort"]), timeout=5):
                    pass

    def test_a_request_with_a_key_reaches_the_agent(self, ecs: Running) -> None:
        status, body = ecs.request("/api/v1/health", {"X-API-Key": KEY})
        assert status == 200, body
        assert json.loads(body)["status"] == "healthy"
        question = json.dumps({"query": "what is the knowledge graph agent?"}).encode()
        chats = ecs.fake.calls["chat"]
        status, body = ecs.request(
            "/api/v1/query", {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}, question
        )
        assert status == 200, body + ecs.logs()
        assert json.loads(body)["response"].startswith("fake answer")
        assert ecs.fake.calls["chat"] == chats + 1
        host, port, password = ecs.redis
        assert int(redis_cli(ecs.e, host, port, password, "DBSIZE")) > 0, "the agent caches in ElastiCache's stand-in"

    def test_the_agent_reaches_the_cache_with_its_secret(self, ecs: Running) -> None:
        """REDIS_URL from Secrets Manager: TLS to ElastiCache's endpoint and the AUTH token the cache was given."""
        for name, c in ecs.containers.items():
            if any(s["Name"] == "REDIS_URL" for s in c.get("Secrets", [])):
                ping = ecs.e.api.exec(name, "python", "-c", PING)
                assert ping.stdout.strip() == "True", (name, ping.stderr[-2000:])

    def test_a_request_without_a_key_is_refused(self, ecs: Running) -> None:
        assert ecs.request("/api/v1/health")[0] == 401
        assert ecs.request("/api/v1/health", {"X-API-Key": "0" * 64})[0] == 401
        assert ecs.request("/api/v1/workflows/debug", {"X-API-Key": KEY})[0] == 403

    def test_the_scheduled_reindex_runs_against_the_indexer(self, ecs: Running) -> None:
        """EventBridge's run of the re-index task: it reads its files and settings, finds the indexer by its Cloud
        Map name and has its workflow run to an end (``failed`` here: GitHub cannot be reached)."""
        (name,) = (n for n, c in ecs.containers.items() if c["Name"] == "reindex")
        wait_until("the re-index run ends", lambda: not ecs.e.api.inspect(name)["State"]["Running"], 600, ecs.logs)
        log = ecs.e.api.logs(name, 200)
        assert '"reindex.queued"' in log and '"reindex.done"' in log, log

    def test_the_scheduled_chroma_backup_writes_to_s3_and_a_restore_run_brings_every_record_back(
        self, ecs: Running
    ) -> None:
        """EventBridge's run of the Chroma backup task (the CronJob's kgbackup: its settings, scratch and flows),
        once the re-index has left the indexer idle, writes the dump and its manifest to ``backup.target`` on AWS's
        S3 endpoint (moto) as the task role. The agent's collection is then dropped, and a run of the same task
        definition with the restore command (docs/cloud-ecs.md, ``aws ecs run-task --overrides``) brings back
        every record."""
        assert ecs.platform is not None and ecs.s3 is not None
        reindex = next(n for n, c in ecs.containers.items() if c["Name"] == "reindex")
        wait_until("the re-index run ends", lambda: not ecs.e.api.inspect(reindex)["State"]["Running"], 600, ecs.logs)
        indexer = next(
            n for n, c in ecs.containers.items() if n.startswith("kga-aws-indexer-") and c["Name"] == "agent"
        )

        def content(*argv: str) -> dict[str, Any]:
            out = ecs.e.api.exec(indexer, "python", "-c", CHROMA_CONTENT, *argv)
            assert out.returncode == 0, out.stderr[-3000:]
            return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]

        texts = {f"cloud-{i:03d}": f"chunk {i} of the cloud run" for i in range(60)}
        docs = {k: {"text": t, "vector": vector(t)} for k, t in texts.items()}  # the fake provider's embeddings
        before = content("add", json.dumps(docs))
        assert len(before) >= 60, before

        def run(sandbox: str, commands: dict[str, list[str]] | None = None) -> list[dict[str, Any]]:
            (task,) = ecs.deferred.values()
            started = ecs.platform.start(task, sandbox, commands)  # type: ignore[union-attr]
            (name,) = (n for n, c in started.items() if c["Name"] == "kgbackup")
            wait_until(f"{sandbox} ends", lambda: not ecs.e.api.inspect(name)["State"]["Running"], 900, ecs.logs)
            log = ecs.e.api.logs(name, 2000)
            assert ecs.e.api.inspect(name)["State"]["ExitCode"] == 0, log
            return [json.loads(line) for line in log.splitlines() if line.startswith("{")]

        events = run("kga-aws-backup-chroma-0")
        (done,) = (e for e in events if e["event"] == "backup.done")
        assert done["store"] == "chroma" and not done["held"], done
        keys = ecs.s3.keys(f"chroma/{done['backup_id']}")
        assert any(k.endswith("manifest.json") for k in keys) and len(keys) >= 2, keys

        assert content("drop") == {}
        restore = ["restore", "chroma", "--latest", "--force"]
        events = run("kga-aws-backup-chroma-restore", {"kgbackup": restore})
        (restored,) = (e for e in events if e["event"] == "restore.done")
        assert restored["backup_id"] == done["backup_id"]
        assert content("get") == before
        print(f"[cloud-run] chroma backup {done['backup_id']}: {len(keys)} objects in s3://{ecs.s3.target.bucket}; "
              f"restored {len(before)} records")  # fmt: skip

    def test_scratch_volumes_are_handed_to_their_users_before_the_containers_start(self, ecs: Running) -> None:
        """Fargate presents a bind volume as root:root 0755 (FARGATE_SCRATCH). Each task's volume owner ran first,
        to success, as root with CHOWN its only capability, and every scratch volume is now its container's user's:
        each container writes to each of its scratch mounts."""
        assert ecs.helpers, "no task has a volume owner"
        for name, c in ecs.helpers.items():
            seen = ecs.e.api.inspect(name)
            assert (seen["State"]["Status"], seen["State"]["ExitCode"]) == ("exited", 0), ecs.e.api.logs(name)
            assert seen["Config"]["User"] == c["User"] == "0:0" and seen["HostConfig"]["ReadonlyRootfs"] is True
            # What is left of the engine's default set once its rendered drops apply: CAP_CHOWN (bit 0) alone.
            drops = [arg for cap in seen["HostConfig"]["CapDrop"] for arg in ("--cap-drop", cap)]
            caps = ecs.e.docker.docker(
                "run", "--rm", "--user", "0:0", *drops, "--network", "none", "--entrypoint", "grep",
                seen["Config"]["Image"], "^CapEff", "/proc/self/status", timeout=120,
            ).stdout  # fmt: skip
            assert caps.split() == ["CapEff:", "0000000000000001"], caps
        checked = 0
        for name, c in ecs.containers.items():
            sandbox = name.rsplit("-", 1)[0]
            if c["Name"] == "reindex":
                continue  # ended (test_the_scheduled_reindex_runs_against_the_indexer); its run used /tmp
            for mount in c.get("MountPoints", []):
                folder = ecs.volumes.get(f"{sandbox}/{mount['SourceVolume']}")
                if folder is None or "/efs/" in str(folder):
                    continue
                assert (folder.stat().st_uid, folder.stat().st_gid) == (10001, 10001), folder
                probe = f"{mount['ContainerPath']}/.cloud-run-probe"
                wrote = ecs.e.api.exec(name, "sh", "-c", f"echo ok > {probe} && rm {probe}")
                assert wrote.returncode == 0, (name, mount["ContainerPath"], wrote.stderr)
                checked += 1
        assert checked >= 8, checked

    def test_a_fargate_scratch_volume_is_not_writable_without_its_owner(self, ecs: Running, tmp_path: Path) -> None:
        """Why the owner is there: the agent image as 10001 with a fresh root:root 0755 folder at /tmp cannot write."""
        folder = volume_dir(tmp_path, "tmp", *FARGATE_SCRATCH)
        result = ecs.e.docker.docker(
            "run", "--rm", "--read-only", "--user", "10001:10001", "--cap-drop", "ALL", "--network", "none",
            "-v", f"{folder}:/tmp", "--entrypoint", "sh", ecs.e.images["agent"], "-c", "touch /tmp/x",
            check=False, timeout=120,
        )  # fmt: skip
        assert result.returncode != 0 and "Permission denied" in result.stderr, result

    def test_every_efs_mount_is_its_containers_own(self) -> None:
        """An access point makes every file operation its PosixUser's and creates its root with CreationInfo:
        both must be the user of each container mounting it, or that container cannot write its state."""
        resources = json.loads(ECS_TEMPLATE.read_text())["Resources"]
        checked = 0
        for task in (r["Properties"] for r in resources.values() if r["Type"] == "AWS::ECS::TaskDefinition"):
            for volume in task.get("Volumes", []):
                if "EFSVolumeConfiguration" not in volume:
                    continue
                point = resources[volume["EFSVolumeConfiguration"]["AuthorizationConfig"]["AccessPointId"]["Ref"]]
                posix, info = point["Properties"]["PosixUser"], point["Properties"]["RootDirectory"]["CreationInfo"]
                for c in task["ContainerDefinitions"]:
                    if any(m["SourceVolume"] == volume["Name"] for m in c.get("MountPoints", [])):
                        assert c["User"] == f"{posix['Uid']}:{posix['Gid']}" == f"{info['OwnerUid']}:{info['OwnerGid']}"
                        checked += 1
        assert checked == 2  # the indexer's working directory and Chroma's data

    def test_state_lands_on_efs_owned_by_the_access_point_user(self, ecs: Running) -> None:
        indexer = next(n for n in ecs.containers if n.startswith("kga-aws-indexer-"))
        assert ecs.e.api.exec(indexer, "sh", "-c", "echo kept > /data/cloud-run-marker").returncode == 0
        folder = next(v for k, v in ecs.volumes.items() if k.startswith("kga-aws-indexer-") and k.endswith("-data"))
        marker = folder / "cloud-run-marker"
        assert marker.read_text() == "kept\n"
        assert (marker.stat().st_uid, marker.stat().st_gid) == (10001, 10001)
        assert oct(folder.stat().st_mode & 0o777) == "0o750"


# -- ACI -------------------------------------------------------------------------------------------------------------


def aci_vault(references: dict[str, Any], redis_url: str, tls_pem: str) -> Vault:
    """Key Vault: every secret the parameters file references (by its parameter), made now."""
    vault = Vault()
    for param, ref in references.items():
        secret = ref["reference"]["secretName"]
        if secret.endswith("-url"):
            value = redis_url
        elif secret.endswith("keys-map"):
            value = keys_map()
        elif secret.endswith("-tls"):  # a Key Vault certificate read as a secret: key and chain in one PEM
            value = tls_pem
        else:
            value = secrets.token_hex(24)
        vault.values[param] = value
    return vault


def aci_volumes(group: dict[str, Any], folder: Path) -> dict[str, Path]:
    """An Azure Files share is root's with mode 0777 (cifs file_mode/dir_mode; no chown on it); an emptyDir is
    the group's own scratch folder."""
    mounts: dict[str, Path] = {}
    for volume in group["properties"].get("volumes", []):
        if "azureFile" in volume:
            mounts[volume["name"]] = volume_dir(folder / "shares", volume["azureFile"]["shareName"], 0, 0, 0o777)
        else:
            mounts[volume["name"]] = volume_dir(folder / "groups" / group["name"], volume["name"], 0, 0, SCRATCH_MODE)
    return mounts


@pytest.fixture(scope="class")
def aci(engine: Engine) -> Iterator[Running]:
    template = json.loads((ACI_DIR / "azuredeploy.json").read_text())
    references = json.loads((ACI_DIR / "azuredeploy.parameters.json").read_text())["parameters"]
    resources = {r["type"]: r for r in template["resources"]}
    subnet = resources["Microsoft.Network/virtualNetworks"]["properties"]["subnets"][0]["properties"]["addressPrefix"]
    network = "kga-azure-aci"
    gateway = engine.api.network(network, subnet)
    folder = engine.workdir / "aci"
    fake = fake_openai(folder / "openai", gateway)
    cache = resources["Microsoft.Cache/redis"]
    assert cache["properties"]["enableNonSslPort"] is False
    host, port = f"{cache['name']}.cache.example.com", 6380  # Azure Cache for Redis: TLS on 6380 only
    groups = [r for r in template["resources"] if r["type"].endswith("/containerGroups")]
    proxy = next(c for g in groups for c in g["properties"]["containers"] if c["name"] == EDGE)
    domain = _server_name(
        next(e["value"] for e in proxy["properties"]["environmentVariables"] if e["name"] == f"{FILES_ENV}0")
    )
    tls_cert, tls_key, ca = _issue(folder / "edge-tls", domain)
    password = secrets.token_hex(24)
    vault = aci_vault(references, f"rediss://:{password}@{host}:{port}/0", tls_key.read_text() + tls_cert.read_text())
    managed_redis(
        engine, "aci-redis", network=network, host=host, port=port, password=password, folder=folder / "redis"
    )

    started = time.monotonic()
    addresses: dict[str, str] = {}
    arm = Arm(vault.values, addresses)
    containers: dict[str, dict[str, Any]] = {}
    volumes: dict[str, Path] = {}
    for group in aci_order(groups):
        name = group["name"]
        mounts = aci_volumes(group, folder)
        volumes |= {f"{name}/{k}": v for k, v in mounts.items()}
        engine.api.run(name, sandbox_config(engine.images["agent"], network, [], [f"{OPENAI_HOST}:{gateway}"], None))
        addresses[name] = _ip(engine, name, network)
        for c in group["properties"]["containers"]:
            cname = f"{name}-{c['name']}"
            engine.api.run(cname, aci_container(arm, c, volumes=mounts, sandbox=name))
            containers[cname] = {**c["properties"], "group": name}
    edge = next(g["name"] for g in groups if any(c["name"] == EDGE for c in g["properties"]["containers"]))
    running = Running(engine, containers, addresses[edge], domain, fake, ("aci-redis", port, password), vault, volumes,
                      tls=ca)  # fmt: skip

    def probes_pass() -> bool:
        for cname, c in containers.items():
            for key in ("readinessProbe", "livenessProbe"):
                probe = c.get(key)
                if probe and "httpGet" in probe:
                    get = probe["httpGet"]
                    url = f"{get['scheme']}://{addresses[c['group']]}:{get['port']}{get['path']}"
                    if http_get(url, probe["timeoutSeconds"]) != 200:
                        return False
            if not engine.api.inspect(cname)["State"]["Running"]:
                raise AssertionError(f"{cname} exited:\n{engine.api.logs(cname)}")
        return True

    running.timings["started"] = time.monotonic() - started
    running.timings["healthy"] = wait_until("ACI probes pass", probes_pass, 600, running.logs)
    print(f"[cloud-run] {network}: " + ", ".join(f"{k} in {v:.0f} s" for k, v in running.timings.items()))
    try:
        yield running
    finally:
        fake.stop()
        engine.api.clear()


class TestAci:
    def test_every_container_runs_as_rendered(self, aci: Running) -> None:
        for name, c in aci.containers.items():
            seen = aci.e.api.inspect(name)
            security = c["securityContext"]
            assert seen["State"]["Running"], name
            assert seen["Config"]["User"] == f"{security['runAsUser']}:{security['runAsGroup']}", name
            assert seen["HostConfig"]["CapDrop"] == ["ALL"] and "no-new-privileges" in seen["HostConfig"]["SecurityOpt"]
            assert seen["Config"]["Entrypoint"] == c["command"], name

    def test_a_request_with_a_key_reaches_the_agent(self, aci: Running) -> None:
        """The health of the agent through the edge's TLS. No question is asked: the vector store is Pinecone, a
        service with no stand-in here (the model and the cache are exercised on ECS)."""
        status, body = aci.request("/api/v1/health", {"X-API-Key": KEY})
        assert status == 200, body
        assert json.loads(body)["status"] == "healthy"
        status, body = aci.request("/api/v1/stats", {"Authorization": f"Bearer {KEY}"})
        assert status == 200, body

    def test_the_agent_reaches_the_cache_with_its_secret(self, aci: Running) -> None:
        """REDIS_URL from Key Vault: TLS to the cache's name on 6380 and its access key as AUTH."""
        for name, c in aci.containers.items():
            if any(e["name"] == "REDIS_URL" for e in c["environmentVariables"]):
                ping = aci.e.api.exec(name, "python", "-c", PING)
                assert ping.stdout.strip() == "True", (name, ping.stderr[-2000:])

    def test_a_request_without_a_key_is_refused(self, aci: Running) -> None:
        assert aci.request("/api/v1/health")[0] == 401
        assert aci.request("/api/v1/health", {"X-API-Key": "0" * 64})[0] == 401

    def test_the_indexer_keeps_its_state_on_the_share(self, aci: Running) -> None:
        indexer = next(n for n in aci.containers if n.startswith("kga-azure-indexer-"))
        assert aci.e.api.exec(indexer, "sh", "-c", "echo kept > /data/cloud-run-marker").returncode == 0
        folder = next(v for k, v in aci.volumes.items() if k.startswith("kga-azure-indexer/") and k.endswith("-data"))
        assert (folder / "cloud-run-marker").read_text() == "kept\n"
