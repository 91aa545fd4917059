"""The cloud templates' containers, started from dist/ on Debian's Docker Engine, with the platform played locally.

What AWS's ``ecs-cli local`` did for task definitions, for both cloud targets, reading only what ``make synth``
wrote (``dist/aws/ecs/template.json``, ``dist/azure/aci/azuredeploy*.json``): every container is created through
the Engine API with its image, entrypoint/command, environment, secrets, user, read-only root, dropped
capabilities, init process, memory, mounts and health check as rendered. What the platform does around them:

* **a task / a container group** is one network namespace: a sandbox container (ECS's own "pause" container in
  ``awsvpc`` mode) on a bridge network with the template's address range (the VPC's CIDR, the ACI subnet), which
  every container of the task joins (``container:<sandbox>``): they reach each other on 127.0.0.1;
* **Cloud Map** names (``<service>.<namespace>``) and the **internal ALB**'s DNS name are network aliases of the
  tasks behind them (DNS round robin: the ALB's health-checked balancing is not played); the VPC resolver
  (169.254.169.253, which the ECS edge's nginx asks) answers in each ECS task as Docker's resolver does (a DNAT
  in the task's namespace). **ACI** ``reference(...).ipAddress.ip`` is the group's address, groups starting in
  ``dependsOn`` order;
* **secrets**: ECS ``secrets`` (``arn:...:secret:<name>:<json key>::``) become variables from a Secrets Manager
  stand-in (:class:`Vault`); ACI ``secureValue`` ``[parameters('x')]`` resolve through the parameters file's Key
  Vault references to the same stand-in; values are made at run time;
* **volumes**: an ECS task volume without configuration is Fargate's ephemeral bind mount, an empty folder
  presented as ``root:root 0755`` (:data:`FARGATE_SCRATCH`); an EFS volume is a folder owned as its access point's
  ``CreationInfo`` says (uid, gid, permissions); ACI ``emptyDir`` and ``azureFile`` are folders (see
  :data:`SCRATCH_MODE`);
* **start order**: an ECS container starts once each of its ``DependsOn`` conditions holds (``SUCCESS``: that
  container ended with 0); a non-essential container may end while the task runs (:func:`ecs_start_order`,
  :func:`ecs_dependencies_met`);
* **health**: ECS ``HealthCheck`` is the container's Docker health check (same command, interval, timeout,
  retries, start period); ACI's probes are made from outside, as ACI does, against the group's address.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import subprocess
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloud_images import STANDINS
from docker_engine import DockerEngine, transient

ACCOUNT, REGION, PARTITION = "123456789012", "us-east-1", "aws"
VPC_RESOLVER = "169.254.169.253"
SANDBOX_USER = "65534:65534"
NO_HEALTHCHECK = {"Test": ["NONE"]}
SCRATCH_MODE = 0o1777
"""How an empty ACI volume (``emptyDir``) is presented: world-writable with the sticky bit, like ``/tmp`` or a
Kubernetes ``emptyDir`` (ACI documents no owner or mode for it)."""
FARGATE_SCRATCH = (0, 0, 0o755)
"""Owner, group and mode of an ECS task's bind volume on Fargate, as AWS documents it ("By default, the volume
permissions are set to 0755 and the owner as root"; AWS copies an image's ``VOLUME`` content, which no image
here declares): a non-root container cannot write one until the task's volume owner has handed it over."""


# -- the Engine API ------------------------------------------------------------------------------------------------


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("docker", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.socket_path)
        self.sock = sock


class EngineApi:
    """The few Engine API calls the run needs (the CLI cannot create an exec-form health check)."""

    def __init__(self, engine: DockerEngine) -> None:
        self.engine = engine
        self.path = str(engine.socket)

    def call(self, method: str, path: str, body: Any = None, timeout: float = 120) -> Any:
        for attempt in range(3):
            conn = _UnixConnection(self.path, timeout)
            data = json.dumps(body).encode() if body is not None else None
            conn.request(method, f"/v1.41{path}", body=data, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            text = response.read().decode(errors="replace")
            conn.close()
            if response.status < 300:
                return json.loads(text) if text.strip() else None
            if attempt < 2 and transient(text):
                time.sleep(2)
                continue
            raise RuntimeError(f"{method} {path}: {response.status} {text[:2000]}")
        raise AssertionError("unreachable")

    def network(self, name: str, subnet: str) -> str:
        """A bridge network with the template's address range; its gateway (the host's side)."""
        gateway = subnet.split("/", maxsplit=1)[0].rsplit(".", 1)[0] + ".1"
        self.call(
            "POST",
            "/networks/create",
            {"Name": name, "Driver": "bridge", "IPAM": {"Config": [{"Subnet": subnet, "Gateway": gateway}]}},
        )
        return gateway

    def run(self, name: str, config: dict[str, Any]) -> str:
        query = urllib.parse.urlencode({"name": name})
        created = self.call("POST", f"/containers/create?{query}", config)
        self.call("POST", f"/containers/{created['Id']}/start")
        return str(created["Id"])

    def clear(self) -> None:
        """Every container and network removed: the engine's bridges would outlive dockerd on the host."""
        for container in self.call("GET", "/containers/json?all=1"):
            self.call("DELETE", f"/containers/{container['Id']}?force=1&v=1")
        for network in self.call("GET", "/networks"):
            if network["Name"] not in ("bridge", "host", "none"):
                self.call("DELETE", f"/networks/{network['Id']}")

    def inspect(self, name: str) -> dict[str, Any]:
        return self.call("GET", f"/containers/{name}/json")  # type: ignore[no-any-return]

    def logs(self, name: str, tail: int = 60) -> str:
        result = self.engine.docker("logs", "--tail", str(tail), name, check=False)
        return result.stdout + result.stderr

    def exec(self, name: str, *argv: str) -> subprocess.CompletedProcess[str]:
        return self.engine.docker("exec", name, *argv, check=False, timeout=120)


# -- the platform's parts ------------------------------------------------------------------------------------------


@dataclass
class Vault:
    """Secrets Manager and Key Vault stand-in: secret name -> JSON keys (ECS) or value (Key Vault)."""

    values: dict[str, Any] = field(default_factory=dict)

    def json_key(self, name: str, key: str) -> str:
        return str(self.values[name][key])


def volume_dir(root: Path, name: str, uid: int, gid: int, mode: int) -> Path:
    path = root / name
    path.mkdir(parents=True, exist_ok=True)
    import os

    os.chown(path, uid, gid)
    path.chmod(mode)
    return path


def image_for(reference: str, images: Mapping[str, str]) -> str:
    """The local stand-in for an image reference of a template (``repo[:tag][@digest]``)."""
    repository = reference.split("@", maxsplit=1)[0].rsplit(":", 1)[0]
    return images[STANDINS[repository.rsplit("/", 1)[-1]]]


def tag_reference(reference: str) -> str:
    """The reference as Docker can tag it: without the digest (a local build cannot have upstream's)."""
    return reference.split("@", maxsplit=1)[0]


def sandbox_config(image: str, network: str, aliases: list[str], hosts: list[str], ip: str | None) -> dict[str, Any]:
    endpoint: dict[str, Any] = {"Aliases": aliases}
    if ip:
        endpoint["IPAMConfig"] = {"IPv4Address": ip}
    return {
        "Image": image,
        "Entrypoint": ["sleep", "infinity"],
        "Cmd": [],
        "User": SANDBOX_USER,
        "Healthcheck": NO_HEALTHCHECK,
        "HostConfig": {
            "NetworkMode": network,
            "ExtraHosts": hosts,
            "ReadonlyRootfs": True,
            "CapDrop": ["ALL"],
            "Init": True,
        },
        "NetworkingConfig": {"EndpointsConfig": {network: endpoint}},
    }


def resolver_in_namespace(pid: int) -> None:
    """The VPC resolver's address answers in this network namespace as Docker's embedded DNS does."""
    rules = subprocess.run(
        ["nsenter", "-t", str(pid), "-n", "iptables", "-t", "nat", "-S", "DOCKER_OUTPUT"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for proto in ("udp", "tcp"):
        found = re.search(rf"-d 127\.0\.0\.11/32 -p {proto} .*--to-destination (127\.0\.0\.11:\d+)", rules)
        assert found, rules
        subprocess.run(
            ["nsenter", "-t", str(pid), "-n", "iptables", "-t", "nat", "-I", "OUTPUT", "-d", f"{VPC_RESOLVER}/32",
             "-p", proto, "--dport", "53", "-j", "DNAT", "--to-destination", found[1]],
            capture_output=True,
            text=True,
            check=True,
        )  # fmt: skip


def wait_until(what: str, done: Callable[[], bool], timeout: float, on_timeout: Callable[[], str]) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if done():
                return time.monotonic() - started
        except (OSError, RuntimeError, KeyError):
            pass
        time.sleep(2)
    raise AssertionError(f"{what}: not after {timeout:.0f} s\n{on_timeout()}")


def http_get(url: str, timeout: float) -> int:
    """A probe's GET: over TLS without checking the certificate, as ACI's (and the kubelet's) probes do."""
    import ssl
    import urllib.request

    context = ssl._create_unverified_context() if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


# -- CloudFormation ------------------------------------------------------------------------------------------------


class Stack:
    """A CloudFormation template's values, with the intrinsics its containers use resolved."""

    def __init__(self, template: dict[str, Any], attributes: Mapping[tuple[str, str], str]) -> None:
        self.template = template
        self.resources: dict[str, Any] = template["Resources"]
        self.attributes = dict(attributes)

    def of_type(self, kind: str) -> dict[str, dict[str, Any]]:
        return {k: r["Properties"] for k, r in self.resources.items() if r["Type"] == kind}

    def resolve(self, value: Any) -> Any:  # noqa: PLR0911  one return per intrinsic
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if not isinstance(value, dict):
            return value
        if len(value) != 1:
            return {k: self.resolve(v) for k, v in value.items()}
        ((fn, arg),) = value.items()
        if fn == "Ref":
            pseudo = {"AWS::AccountId": ACCOUNT, "AWS::Region": REGION, "AWS::Partition": PARTITION}
            return pseudo.get(arg, arg)
        if fn == "Fn::Join":
            return arg[0].join(str(self.resolve(v)) for v in arg[1])
        if fn == "Fn::GetAtt":
            return self.attributes[(arg[0], arg[1])]
        if fn.startswith("Fn::"):
            raise NotImplementedError(f"{fn} in a container definition")
        return {fn: self.resolve(arg)}


def _bind(source: Path, target: str, read_only: bool | None) -> dict[str, Any]:
    return {"Type": "bind", "Source": str(source), "Target": target, "ReadOnly": bool(read_only)}


def ecs_secret(value_from: str) -> tuple[str, str]:
    """``arn:aws:secretsmanager:<region>:<account>:secret:<name>:<json key>::`` -> (name, key)."""
    tail = value_from.split(":secret:", 1)[1]
    name, key, stage, version = tail.rsplit(":", 3)
    assert not stage and not version, value_from
    return name, key


def dynamic_secret(reference: str) -> tuple[str, str]:
    """``{{resolve:secretsmanager:<name>:SecretString:<key>::}}`` -> (name, key)."""
    found = re.fullmatch(r"\{\{resolve:secretsmanager:([^:]+):SecretString:([^:]+)::\}\}", reference)
    assert found, reference
    return found[1], found[2]


def ecs_health(check: dict[str, Any] | None) -> dict[str, Any] | None:
    if not check:
        return None
    second = 1_000_000_000
    return {
        "Test": check["Command"],
        "Interval": check.get("Interval", 30) * second,
        "Timeout": check.get("Timeout", 5) * second,
        "Retries": check.get("Retries", 3),
        "StartPeriod": check.get("StartPeriod", 0) * second,
    }


def ecs_container(
    stack: Stack,
    c: dict[str, Any],
    *,
    vault: Vault,
    volumes: Mapping[str, Path],
    sandbox: str,
    platform_env: Mapping[str, str] | None = None,
    command: list[str] | None = None,
) -> dict[str, Any]:
    """One container definition as Engine API create options, joined to the task's sandbox. ``platform_env``:
    what Fargate adds (the region, the task role's credentials); ``command``: a run-task override's."""
    env = {e["Name"]: str(stack.resolve(e["Value"])) for e in c.get("Environment", [])}
    env |= platform_env or {}
    for secret in c.get("Secrets", []):
        env[secret["Name"]] = vault.json_key(*ecs_secret(stack.resolve(secret["ValueFrom"])))
    linux = c.get("LinuxParameters", {})
    config: dict[str, Any] = {
        "Image": tag_reference(c["Image"]),
        "Env": [f"{k}={v}" for k, v in env.items()],
        "User": c.get("User", ""),
        "WorkingDir": c.get("WorkingDirectory", ""),
        "StopTimeout": c.get("StopTimeout", 30),
        "HostConfig": {
            "NetworkMode": f"container:{sandbox}",
            "ReadonlyRootfs": bool(c.get("ReadonlyRootFilesystem")),
            "Privileged": bool(c.get("Privileged")),
            "CapDrop": linux.get("Capabilities", {}).get("Drop", []),
            "CapAdd": linux.get("Capabilities", {}).get("Add", []),
            "Init": bool(linux.get("InitProcessEnabled")),
            "Memory": c["Memory"] * 2**20 if "Memory" in c else 0,
            "MemoryReservation": c["MemoryReservation"] * 2**20 if "MemoryReservation" in c else 0,
            "CpuShares": max(2, c.get("Cpu", 0)),
            "Mounts": [
                _bind(volumes[m["SourceVolume"]], m["ContainerPath"], m.get("ReadOnly"))
                for m in c.get("MountPoints", [])
            ],
        },
    }
    if "EntryPoint" in c:
        config["Entrypoint"] = c["EntryPoint"]
    if command is not None or "Command" in c:
        config["Cmd"] = command if command is not None else c["Command"]
    # ECS runs the task definition's check only, never the image's HEALTHCHECK.
    config["Healthcheck"] = ecs_health(c.get("HealthCheck")) or NO_HEALTHCHECK
    return config


def ecs_start_order(definitions: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """A task's container definitions in an order in which each comes after the containers it ``DependsOn``."""
    pending = {c["Name"]: c for c in definitions}
    ordered: list[dict[str, Any]] = []
    while pending:
        ready = [c for c in pending.values() if not {d["ContainerName"] for d in c.get("DependsOn", [])} & set(pending)]
        if not ready:
            raise AssertionError(f"DependsOn cycle among {sorted(pending)}")
        for c in ready:
            ordered.append(pending.pop(c["Name"]))
    return ordered


def ecs_dependencies_met(api: EngineApi, sandbox: str, c: dict[str, Any], timeout: float) -> None:
    """Wait until each ``DependsOn`` condition of ``c`` holds for the containers of the task in ``sandbox``, as the
    ECS agent does before it starts ``c``; a dependency that cannot hold any more (ended, or ended non-zero for
    ``SUCCESS``) fails with that container's logs, as the task would stop."""
    for dependency in c.get("DependsOn", []):
        name, condition = f"{sandbox}-{dependency['ContainerName']}", dependency["Condition"]

        def holds(name: str = name, condition: str = condition) -> bool:
            state = api.inspect(name)["State"]
            ended = not state["Running"] and state["Status"] in ("exited", "dead")
            if condition == "START":
                return bool(state["Running"]) or ended
            if condition == "HEALTHY":
                if ended:
                    raise AssertionError(f"{name} ended before it was healthy:\n{api.logs(name)}")
                return bool(state.get("Health", {}).get("Status") == "healthy")
            if condition == "SUCCESS" and ended and state["ExitCode"] != 0:
                raise AssertionError(
                    f"{name} ended with {state['ExitCode']}, so {c['Name']} never starts:\n{api.logs(name)}"
                )
            return ended

        wait_until(f"{name} to reach {condition}", holds, timeout, lambda name=name: api.logs(name))  # type: ignore[misc]


# -- ARM -----------------------------------------------------------------------------------------------------------


_TOKEN = re.compile(r"\s*('(?:[^']|'')*'|[A-Za-z_][\w]*|\(|\)|,|\.|\[|\]|\d+)")


class Arm:
    """The ARM template language as far as the container groups use it: ``concat``, ``parameters``, ``json``,
    ``resourceId``, and ``reference(<container group>, ...).ipAddress.ip`` (its address once started)."""

    def __init__(self, parameters: Mapping[str, str], addresses: Mapping[str, str]) -> None:
        self.parameters = parameters
        self.addresses = addresses

    def value(self, text: Any) -> Any:
        if not (isinstance(text, str) and text.startswith("[") and text.endswith("]")):
            return text
        if text.startswith("[["):  # ARM's escape of a literal that looks like an expression
            return text[1:]
        tokens = [t for t in _TOKEN.findall(text[1:-1])]
        result, rest = self._expr(tokens)
        assert not rest, text
        return result

    def _expr(self, tokens: list[str]) -> tuple[Any, list[str]]:
        head, rest = tokens[0], tokens[1:]
        if head.startswith("'"):
            value: Any = head[1:-1].replace("''", "'")
        elif re.fullmatch(r"\d+", head):
            value = int(head)
        else:
            assert rest[0] == "(", tokens
            rest = rest[1:]
            args: list[Any] = []
            while rest[0] != ")":
                arg, rest = self._expr(rest)
                args.append(arg)
                if rest[0] == ",":
                    rest = rest[1:]
            rest = rest[1:]
            value = self._call(head, args)
        while rest and rest[0] == ".":
            value, rest = value[rest[1]], rest[2:]
        return value, rest

    def _call(self, name: str, args: list[Any]) -> Any:
        if name == "concat":
            return "".join(str(a) for a in args)
        if name == "parameters":
            return self.parameters[args[0]]
        if name == "json":
            return json.loads(args[0])
        if name == "resourceId":
            return tuple(args)
        if name == "reference":
            kind, group = args[0]
            assert kind == "Microsoft.ContainerInstance/containerGroups", args
            return {"ipAddress": {"ip": self.addresses[group]}}
        raise NotImplementedError(f"{name}() in a container group")


def aci_order(groups: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Container groups in an order that respects their ``dependsOn`` on each other (ARM's deployment order)."""
    pending = {g["name"]: g for g in groups}
    done: list[dict[str, Any]] = []
    while pending:
        for name, group in sorted(pending.items()):
            needs = {m[1] for d in group.get("dependsOn", []) if (m := re.search(r"containerGroups', '([^']+)'", d))}
            if needs <= {g["name"] for g in done}:
                done.append(pending.pop(name))
                break
        else:
            raise AssertionError(f"dependsOn cycle among {sorted(pending)}")
    return done


def aci_container(arm: Arm, c: dict[str, Any], *, volumes: Mapping[str, Path], sandbox: str) -> dict[str, Any]:
    p = c["properties"]
    env = {}
    for e in p.get("environmentVariables", []):
        env[e["name"]] = str(arm.value(e["secureValue"] if "secureValue" in e else e["value"]))
    security = p.get("securityContext", {})
    limits = p["resources"].get("limits", p["resources"]["requests"])
    user = f"{security['runAsUser']}:{security.get('runAsGroup', security['runAsUser'])}" if security else ""
    config: dict[str, Any] = {
        "Image": tag_reference(p["image"]),
        "Env": [f"{k}={v}" for k, v in env.items()],
        "User": user,
        "HostConfig": {
            "NetworkMode": f"container:{sandbox}",
            # ACI has no read-only root: the template cannot ask for one, so it is writable here too.
            "ReadonlyRootfs": False,
            "Privileged": bool(security.get("privileged")),
            "CapDrop": security.get("capabilities", {}).get("drop", []),
            "CapAdd": security.get("capabilities", {}).get("add", []),
            "SecurityOpt": [] if security.get("allowPrivilegeEscalation", True) else ["no-new-privileges"],
            "Memory": int(float(arm.value(limits["memoryInGB"])) * 2**30),
            "NanoCpus": int(float(arm.value(limits["cpu"])) * 1e9),
            "Mounts": [_bind(volumes[m["name"]], m["mountPath"], m.get("readOnly")) for m in p.get("volumeMounts", [])],
        },
    }
    config["Healthcheck"] = NO_HEALTHCHECK  # ACI probes from outside (its probes), never the image's HEALTHCHECK
    if p.get("command"):
        # ACI's command replaces the image's entrypoint, and its CMD with it (as in Kubernetes).
        config["Entrypoint"] = p["command"]
        config["Cmd"] = []
    return config
