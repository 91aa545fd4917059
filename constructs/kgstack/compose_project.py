"""The Docker Compose target: one server, from the same declarations as the Kubernetes stack.

``ComposeProject(env)`` builds the environment's :class:`~kgstack.agent_stack.AgentStack` in memory (never
written unless the environment also targets Kubernetes) and translates what its constructs declared:

* each workload's pod (Deployment, StatefulSet, the backup and re-index CronJobs, the restore Jobs) becomes a
  service with the same image, command, settings, ports, resources, grace period and probes; an init
  container runs first in its workload's container (same image, its volumes);
* a Secret key becomes a Docker secret read from ``$KGA_SECRETS/<secret>/<key>`` on the server: mounted
  where the pod mounts it, or exported from the file by a shell wrapper where the software reads only
  environment variables (the agent, Memgraph). No value is ever in the file;
* a ConfigMap key becomes a config file under ``config/`` beside ``compose.yaml``; an emptyDir a tmpfs; a
  PersistentVolumeClaim a named volume (no copy-up, like an empty PVC), owned by the pods' user through a
  one-shot ``volumes`` service, the only one that runs as root (with ``CHOWN`` alone and no network);
* every :class:`~kgstack.connections.Connections` flow between components becomes membership of the server's
  own ``internal`` network (so a store is reachable only by its declared clients), a flow to the internet
  the non-internal ``egress`` network, and a flow a client must wait for ``depends_on: service_healthy``;
* the edge is nginx (the verifier's image) with TLS, the routes, headers, limits and the API-key check of
  :mod:`kgstack.edge`: the only service with published ports.

Scheduled CronJobs become ``profiles`` services run by the host's cron (``crontab``, same schedule).
The Redis exporter sidecar becomes a service of its own, a client of Redis as the same ACL user, reading its
password from a Docker secret (its image has no shell for the wrapper); every target Prometheus scrapes (the
``Connections`` flows from the scraper) joins the internal ``metrics`` network, which the server's Prometheus
joins. Prometheus itself, its rules and Alertmanager are not part of the project (docs/single-server.md).
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import cdk8s

from .agent_stack import AgentStack
from .backup_schedule import TRACKED_STORES, TRACKER_FROM_RESTORE_LOG, TRACKER_WRITE, restore_job
from .cluster_platform import Cluster
from .edge.common import (
    API_CSP,
    API_PREFIX,
    AUTH_PORT,
    CREDENTIAL_HEADERS,
    DENY_PORT,
    INDEXER_PATHS,
    KEY_ID_HEADER,
    VERIFY_PATH,
    content_security_policy,
    nginx_size,
    security_headers,
)
from .edge.gateway_api import UI_TIMEOUT_SECONDS, blocked_regex
from .environment import SUPPORTED_KUBERNETES, Environment, Quota, Target
from .network_policies import ComponentPeer, Flow
from .publish import manifests, to_yaml

COMPOSE_FILE = "compose.yaml"
CRONTAB_FILE = "crontab"
SECRETS_VARIABLE = "KGA_SECRETS"
"""The server folder holding ``<secret>/<key>`` files; default ``/etc/kga/<env>/secrets``."""
EDGE = "edge"
VOLUMES_INIT = "volumes"
EGRESS = "egress"
PUBLIC = "public"
METRICS = "metrics"
"""The internal network of the scrape targets: a Prometheus on the server joins it (``<project>_metrics``)."""
EXPORTER_PASSWORDS = "/run/secrets/redis-passwords.json"
"""redis_exporter's ``REDIS_PASSWORD_FILE``: a JSON map of Redis URI to password, not a password file."""
EDGE_HTTPS_PORT = 8443
EDGE_HTTP_PORT = 8080
EDGE_HEALTH_PORT = 8082
TLS_SECRET = "kga-edge-tls"
"""The server certificate (``tls.crt``, full chain) and key (``tls.key``) of ``domain``."""
PROXY_HEADERS = (
    "Host $host",
    "X-Forwarded-For $remote_addr",  # the edge is the first hop: a client's own X-Forwarded-For is dropped
    "X-Forwarded-Proto https",
    "X-Request-ID $kga_request_id",
)
PIDS_LIMIT = 512
LOG_OPTIONS = {"driver": "json-file", "options": {"max-size": "10m", "max-file": "5"}}

# What each image holds, for the checks Compose runs inside it (Kubernetes probes from outside).
HTTP_CLIENT: dict[str, str] = {
    "agent": "python",  # the app's interpreter (docker/agent)
    "web": "wget",  # busybox in nginx-unprivileged:alpine (docker/web)
    "nginx": "wget",
    "chroma": "bash",  # Debian-based; /dev/tcp
    "memgraph": "bash",
    "backup": "python",
    "redis": "bash",  # docker/redis: Debian bookworm
    "redis_exporter": "",  # FROM scratch: the binary alone, so no check runs inside it
}
ENTRYPOINT: dict[str, tuple[list[str], list[str]]] = {
    # image -> (before the secrets wrapper, after it): its ENTRYPOINT, kept around the wrapper.
    "agent": (["/usr/bin/tini", "--"], []),  # docker/agent/Dockerfile
    "memgraph": ([], ["/usr/lib/memgraph/memgraph"]),  # memgraph/memgraph's ENTRYPOINT
}


def _compose_view(env: Environment) -> Environment:
    """The environment as the Kubernetes constructs need it: a Compose-only environment has no placement,
    so it gets a nominal one (nothing of it reaches the Compose output)."""
    if env.on_kubernetes:
        return env
    huge = Quota.model_validate(
        {
            "requests": {"cpu": "1000", "memory": "4Ti"},
            "limits": {"cpu": "1000", "memory": "4Ti"},
            "pods": 1000,
            "storage": "1000Ti",
            "persistentVolumeClaims": 1000,
        }
    )
    return env.model_copy(
        update={
            "targets": [Target.KUBERNETES],
            "namespace": env.instance,
            "kubernetes_version": SUPPORTED_KUBERNETES[-1],
            "cluster": Cluster(name=env.name, server="https://kubernetes.default.svc"),
            "quota": huge,
            # Outside dev the constructs render ExternalSecrets, which need a store; Compose reads files instead.
            "secrets": env.secrets.model_copy(update={"store_name": "compose-files"}),
        }
    )


def _cpus(value: str) -> str:
    return f"{int(value[:-1]) / 1000:g}" if value.endswith("m") else f"{float(value):g}"


def _memory(value: str) -> str:
    units = {"Ki": "k", "Mi": "m", "Gi": "g", "Ti": "t"}
    for suffix, unit in units.items():
        if value.endswith(suffix):
            return value[: -len(suffix)] + unit
    return value


def _bytes(value: str) -> int:
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40}
    for suffix, factor in units.items():
        if value.endswith(suffix):
            return int(value[: -len(suffix)]) * factor
    return int(value)


def _literal(value: Any) -> Any:
    """``$`` doubled in every string: Compose would read ``$(cat ...)`` and ``"$@"`` as its own variables."""
    if isinstance(value, str):
        return value.replace("$", "$$")
    if isinstance(value, list):
        return [_literal(v) for v in value]
    if isinstance(value, dict):
        return {k: _literal(v) for k, v in value.items()}
    return value


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass
class _Pod:
    """One workload's pod, as the service it becomes."""

    name: str
    kind: str
    labels: dict[str, str]
    spec: dict[str, Any]
    schedule: str | None = None
    profile: str | None = None
    replicas: int = 1
    volume_claims: dict[str, str] = field(default_factory=dict)


@dataclass
class _Mounts:
    """What one service mounts, collected from its pod's containers."""

    uid: int
    gid: int
    volumes: list[dict[str, Any]] = field(default_factory=list)
    tmpfs: list[str] = field(default_factory=list)
    configs: list[dict[str, Any]] = field(default_factory=list)
    secrets: list[dict[str, Any]] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)

    def service_fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.volumes:
            out["volumes"] = self.volumes
        if self.tmpfs:
            out["tmpfs"] = self.tmpfs
        if self.configs:
            out["configs"] = self.configs
        if self.secrets:
            out["secrets"] = sorted({s["target"]: s for s in self.secrets}.values(), key=lambda s: s["target"])
        return out


class ComposeError(ValueError):
    """The environment cannot be rendered for Compose; one ``field: reason`` per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class ComposeProject:
    """``dist/<env>/compose/``: ``compose.yaml``, its config files and the host ``crontab``."""

    def __init__(self, env: Environment) -> None:
        self.env = env
        self.problems = self._refusals(env)
        if self.problems:
            raise ComposeError(self.problems)
        self.stack = AgentStack(cdk8s.App(), _compose_view(env))
        self.objects = {f"{o['kind']}/{o['metadata']['name']}": o for o in manifests(self.stack).values()}
        self.configs: dict[str, str] = {}
        """Config entry to its file (relative to the project)."""
        self.config_files: dict[str, str] = {}
        """``config/<configmap>/<key>`` to its text."""
        self.secrets: dict[str, str] = {}
        self.volumes: dict[str, dict[str, Any]] = {}
        self.images = {ref.reference: name for name, ref in env.images.all().items()}
        self.pods = self._pods()
        self.services: dict[str, dict[str, Any]] = {}
        self.sidecars: dict[str, str] = {}
        """Service of a pod's sidecar to the pod's service."""
        for pod in self.pods:
            self.services[pod.name] = self._service(pod)
            for container in pod.spec["containers"][1:]:
                self._sidecar(pod, container)
        self._wire(self.stack.network.props.flows)
        self.services[EDGE] = self._edge()
        if self.volumes:
            self._volumes_init()

    # ------------------------------------------------------------------ what Compose cannot honour

    @staticmethod
    def _refusals(env: Environment) -> list[str]:
        problems = []
        s = env.edge
        if s.controller != "gateway-api" or s.side_by_side_ingress_nginx:
            problems.append("edge.controller: the Compose edge is nginx of its own; leave the Kubernetes edge default")
        if s.backend_tls:
            problems.append("edge.backendTls: no image speaks TLS on the Compose network; remove it")
        if env.query.autoscaling.max_replicas != env.query.autoscaling.min_replicas and not env.on_kubernetes:
            problems.append(
                "query.autoscaling: Compose does not autoscale: set maxReplicas equal to minReplicas "
                "(the number of query containers)"
            )
        return problems

    # ------------------------------------------------------------------ pods

    def _short(self, name: str) -> str:
        return name.removeprefix(f"{self.env.instance}-")

    def _pods(self) -> list[_Pod]:
        pods = []
        for key, obj in sorted(self.objects.items()):
            kind, name = key.split("/", 1)
            if kind in ("Deployment", "StatefulSet"):
                spec = obj["spec"]
                claims = {
                    c["metadata"]["name"]: c["spec"]["resources"]["requests"]["storage"]
                    for c in spec.get("volumeClaimTemplates", [])
                }
                # A Deployment under an HPA has no replicas of its own: the HPA's floor is the count here.
                hpa = self.objects.get(f"HorizontalPodAutoscaler/{name}", {}).get("spec", {})
                replicas = 1 if kind == "StatefulSet" else spec.get("replicas", hpa.get("minReplicas", 1))
                template = spec["template"]
                pods.append(
                    _Pod(
                        self._short(name), kind, template["metadata"]["labels"], template["spec"], None, None,
                        replicas, claims,
                    )
                )  # fmt: skip
            elif kind == "CronJob":
                template = obj["spec"]["jobTemplate"]["spec"]["template"]
                profile = "backup" if "backup" in name else "jobs"
                pods.append(
                    _Pod(
                        self._short(name), kind, template["metadata"]["labels"], template["spec"],
                        obj["spec"]["schedule"], profile,
                    )
                )  # fmt: skip
        for store in self.stack.backups.props.stores:
            job = restore_job(self.stack.backups, store, backup_id=None, force=False)
            template = job["spec"]["template"]
            labels = template["metadata"]["labels"]
            pods.append(_Pod(f"restore-{store}", "Job", labels, template["spec"], None, "restore"))
        return pods

    def _image_name(self, reference: str) -> str:
        return self.images.get(reference, "")

    def _config_file(self, configmap: str, key: str, path: str) -> str:
        """``config/<configmap>/<path>`` beside compose.yaml, holding one ConfigMap key."""
        file = f"config/{self._short(configmap)}/{path}"
        self.config_files[file] = self.objects[f"ConfigMap/{configmap}"]["data"][key]
        return file

    def _config(self, configmap: str, key: str) -> str:
        """A config entry (one file) for one ConfigMap key."""
        entry = f"{self._short(configmap)}-{key}".replace(".", "-").lower()
        self.configs[entry] = self._config_file(configmap, key, key)
        return entry

    def _secret(self, secret: str, key: str) -> str:
        entry = f"{secret}-{key}".replace(".", "-").lower()
        self.secrets[entry] = f"${{{SECRETS_VARIABLE}:-/etc/kga/{self.env.name}/secrets}}/{secret}/{key}"
        return entry

    def _service(self, pod: _Pod) -> dict[str, Any]:
        spec = pod.spec
        main = spec["containers"][0]  # sidecars (the Redis exporter) are services of their own: _sidecar
        image_name = self._image_name(main["image"])
        security = spec.get("securityContext", {})
        uid = security.get("runAsUser", 10001)
        gid = security.get("runAsGroup", uid)
        service: dict[str, Any] = {
            "image": main["image"],
            "user": f"{uid}:{gid}",
            "read_only": True,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges:true"],
            "restart": "unless-stopped" if pod.profile is None else "no",
            "stop_grace_period": f"{spec.get('terminationGracePeriodSeconds', 30)}s",
            "logging": LOG_OPTIONS,
        }
        if pod.profile:
            service["profiles"] = [pod.profile]
        if main.get("workingDir"):
            service["working_dir"] = main["workingDir"]
        if main.get("ports"):
            service["expose"] = [str(port["containerPort"]) for port in main["ports"]]
        mounts = _Mounts(uid=uid, gid=gid)
        environment, from_secrets = self._environment(main, mounts)
        if environment:
            service["environment"] = environment
        for container in [*spec.get("initContainers", []), main]:
            for mount in container.get("volumeMounts", []):
                self._mount(pod, mount, mounts)
        service |= mounts.service_fields()
        service |= self._command(pod.name, main, image_name, from_secrets, spec.get("initContainers", []))
        resources = main.get("resources", {})
        limits, requests = resources.get("limits", {}), resources.get("requests", {})
        service["deploy"] = {
            "replicas": pod.replicas,
            "resources": {
                "limits": {"cpus": _cpus(limits["cpu"]), "memory": _memory(limits["memory"]), "pids": PIDS_LIMIT},
                "reservations": {"cpus": _cpus(requests["cpu"]), "memory": _memory(requests["memory"])},
            },
        }
        check = self._healthcheck(main, image_name)
        if check:
            service["healthcheck"] = check
        return service

    def _sidecar(self, pod: _Pod, container: dict[str, Any]) -> None:
        """A pod's sidecar as a service of its own: it reaches its pod's server by the Service name, not
        127.0.0.1. Only redis_exporter has one: its image holds the binary alone (no shell to export a secret
        file), so its password comes from ``REDIS_PASSWORD_FILE``, a Docker secret holding a JSON map of
        Redis URI to password, for the same ACL user as on Kubernetes."""
        image_name = self._image_name(container["image"])
        name = f"{pod.name}-{container['name']}"
        if image_name != "redis_exporter":
            raise ComposeError([f"{pod.name}: sidecar {container['name']!r} ({image_name}) has no Compose form"])
        environment: dict[str, str] = {}
        mounts = _Mounts(uid=0, gid=0)
        for var in container.get("env", []):
            if "value" in var:
                value = var["value"].replace("//127.0.0.1:", f"//{self._service_name_of(pod.name)}:")
                environment[var["name"]] = value
            elif var["name"] == "REDIS_PASSWORD":
                ref = var["valueFrom"]["secretKeyRef"]
                entry = self._secret(ref["name"], f"{ref['key']}.json")
                mounts.secrets.append({"source": entry, "target": EXPORTER_PASSWORDS})
                environment["REDIS_PASSWORD_FILE"] = EXPORTER_PASSWORDS
        security = pod.spec.get("securityContext", {})
        uid = container.get("securityContext", {}).get("runAsUser", security.get("runAsUser", 10001))
        gid = security.get("runAsGroup", uid)
        limits, requests = container["resources"]["limits"], container["resources"]["requests"]
        self.services[name] = {
            "image": container["image"],
            "user": f"{uid}:{gid}",
            "read_only": True,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges:true"],
            "restart": "unless-stopped",
            "stop_grace_period": f"{pod.spec.get('terminationGracePeriodSeconds', 30)}s",
            "logging": LOG_OPTIONS,
            "expose": [str(port["containerPort"]) for port in container.get("ports", [])],
            "environment": dict(sorted(environment.items())),
            **mounts.service_fields(),
            "deploy": {
                "replicas": 1,
                "resources": {
                    "limits": {"cpus": _cpus(limits["cpu"]), "memory": _memory(limits["memory"]), "pids": PIDS_LIMIT},
                    "reservations": {"cpus": _cpus(requests["cpu"]), "memory": _memory(requests["memory"])},
                },
            },
        }
        self.sidecars[name] = pod.name

    def _environment(self, main: dict[str, Any], mounts: _Mounts) -> tuple[dict[str, str], list[tuple[str, str, bool]]]:
        """Plain settings (values and ConfigMap keys), and the variables read from Secret keys: each a Docker
        secret file the wrapper exports (name, file, optional)."""
        environment: dict[str, str] = {}
        for source in main.get("envFrom", []):
            data = self.objects[f"ConfigMap/{source['configMapRef']['name']}"]["data"]
            environment |= {k: v for k, v in data.items() if _ENV_NAME.match(k)}
        from_secrets: list[tuple[str, str, bool]] = []
        for var in main.get("env", []):
            if "value" in var:
                environment[var["name"]] = var["value"]
            elif "secretKeyRef" in var.get("valueFrom", {}):
                ref = var["valueFrom"]["secretKeyRef"]
                entry = self._secret(ref["name"], ref["key"])
                mounts.secrets.append({"source": entry, "target": f"/run/secrets/{entry}"})
                from_secrets.append((var["name"], f"/run/secrets/{entry}", bool(ref.get("optional"))))
        return dict(sorted(environment.items())), from_secrets

    def _named_volume(self, pod: _Pod, name: str, path: str, mounts: _Mounts) -> None:
        named = f"{pod.name}-{name}"
        self.volumes[named] = {"labels": {"app.kubernetes.io/instance": self.env.instance}}
        # No copy-up: an empty volume, like a new PersistentVolumeClaim.
        mounts.volumes.append({"type": "volume", "source": named, "target": path, "volume": {"nocopy": True}})

    def _mount(self, pod: _Pod, mount: dict[str, Any], mounts: _Mounts) -> None:
        """One volume mount of the pod (the first container to mount a path wins: init containers first)."""
        path = mount["mountPath"]
        if path in mounts.seen:
            return
        mounts.seen.add(path)
        volume: dict[str, Any] = next((v for v in pod.spec.get("volumes", []) if v["name"] == mount["name"]), {})
        if mount["name"] in pod.volume_claims or "persistentVolumeClaim" in volume or "ephemeral" in volume:
            self._named_volume(pod, mount["name"], path, mounts)  # an ephemeral volume holds a dump: disk
        elif "emptyDir" in volume:
            size = _bytes(volume["emptyDir"].get("sizeLimit", "64Mi"))
            mounts.tmpfs.append(f"{path}:size={size},uid={mounts.uid},gid={mounts.gid},mode=0700")
        elif "configMap" in volume or "secret" in volume:
            source = volume.get("configMap") or volume["secret"]
            owner = source.get("name") or source["secretName"]
            keys = self.objects[f"ConfigMap/{owner}"]["data"] if "configMap" in volume else {}
            items = source.get("items") or [{"key": k, "path": k} for k in keys]
            if "configMap" in volume and not mount.get("subPath"):
                # The whole folder, as the pod sees it: the image's own folder (perhaps not ours to read) is hidden.
                files = [self._config_file(owner, item["key"], item["path"]) for item in items]
                folder = f"./{files[0].rsplit('/', 1)[0]}"
                mounts.volumes.append({"type": "bind", "source": folder, "target": path, "read_only": True})
                return
            for item in items:
                if mount.get("subPath") and item["path"] != mount["subPath"]:
                    continue
                target = path if mount.get("subPath") else f"{path}/{item['path']}"
                if "configMap" in volume:
                    mounts.configs.append({"source": self._config(owner, item["key"]), "target": target})
                else:
                    mounts.secrets.append({"source": self._secret(owner, item["key"]), "target": target})

    @staticmethod
    def _command(
        name: str,
        main: dict[str, Any],
        image_name: str,
        from_secrets: list[tuple[str, str, bool]],
        inits: list[dict[str, Any]],
    ) -> dict[str, Any]:
        """``entrypoint``/``command``; with secrets in variables or init containers, a shell wrapper exports the
        files and runs the init scripts first, then execs the container's own command."""
        command, entrypoint = main.get("args"), main.get("command")
        out: dict[str, Any] = {}
        if from_secrets or inits:
            before, after = ENTRYPOINT.get(image_name, ([], []))
            lines = [
                f'[ ! -s {path} ] || export {var}="$(cat {path})"' if optional else f'export {var}="$(cat {path})"'
                for var, path, optional in from_secrets
            ]
            for init in inits:  # a shell script runs inline (in a subshell), anything else as its command line
                argv = [*init.get("command", []), *init.get("args", [])]
                inline = len(argv) == 3 and argv[:2] == ["sh", "-c"]
                lines.append(f"(\n{argv[2].strip()}\n)" if inline else shlex.join(argv))
            script = "set -eu\n" + "\n".join(lines) + '\nexec "$@"\n'
            out["entrypoint"] = [*before, "/bin/sh", "-c", script, name, *after, *(entrypoint or [])]
        elif entrypoint:
            out["entrypoint"] = entrypoint
        if command:
            out["command"] = command
        return out

    def _healthcheck(self, container: dict[str, Any], image_name: str) -> dict[str, Any] | None:
        probe = container.get("readinessProbe") or container.get("livenessProbe")
        if not probe:
            return None
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        timeout = probe.get("timeoutSeconds", 1)
        if "exec" in probe:
            test = ["CMD", *probe["exec"]["command"]]
        elif "httpGet" in probe:
            get = probe["httpGet"]
            port = get["port"] if isinstance(get["port"], int) else ports[get["port"]]
            url = f"http://127.0.0.1:{port}{get['path']}"
            client = HTTP_CLIENT[image_name]
            if client == "python":
                code = (
                    "import sys,urllib.request as u; "
                    f"sys.exit(0 if u.urlopen({url!r}, timeout={timeout}).status == 200 else 1)"
                )
                test = ["CMD", "python", "-c", code]
            elif client == "wget":
                test = ["CMD", "wget", "-q", "-O", "/dev/null", "-T", str(timeout), url]
            else:
                request = f"GET {get['path']} HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n"
                test = [
                    "CMD", "bash", "-c",
                    f"exec 3<>/dev/tcp/127.0.0.1/{port} && printf '{request}' >&3 && head -n1 <&3 | grep -q ' 200 '",
                ]  # fmt: skip
        else:
            port_ref = probe["tcpSocket"]["port"]
            port = port_ref if isinstance(port_ref, int) else ports[port_ref]
            test = ["CMD", "bash", "-c", f"exec 3<>/dev/tcp/127.0.0.1/{port}"]
        startup = container.get("startupProbe") or {}
        start = startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3) if startup else 30
        return {
            "test": test,
            "interval": f"{probe.get('periodSeconds', 10)}s",
            "timeout": f"{timeout}s",
            "retries": probe.get("failureThreshold", 3),
            "start_period": f"{start}s",
        }

    # ------------------------------------------------------------------ networks and order, from the flows

    def _matches(self, peer: ComponentPeer) -> list[str]:
        return [
            pod.name
            for pod in self.pods
            if pod.labels.get("app.kubernetes.io/component") == peer.component
            and all(pod.labels.get(k) == v for k, v in peer.pod_labels.items())
        ]

    def _sources(self, flow: Flow) -> list[str]:
        if isinstance(flow.source, ComponentPeer):
            return self._matches(flow.source)
        if flow.source.model_dump_json() == self.stack.edge.peer.model_dump_json():
            return [EDGE]
        return []  # Prometheus, the blackbox exporter: not on Compose

    def _wire(self, flows: list[Flow]) -> None:
        """Networks and start order from the declared flows: each server's own internal network holds it and
        its clients; a flow to the internet (or object storage) puts its source on ``egress``."""
        self.networks: dict[str, dict[str, Any]] = {}
        self.clients: dict[str, set[str]] = {}
        for flow in flows:
            sources = self._sources(flow)
            if isinstance(flow.destination, ComponentPeer):
                for server in self._matches(flow.destination):
                    self.clients.setdefault(server, set()).update(s for s in sources if s != server)
            elif flow.destination.kind in ("internet", "cidr"):
                for source in sources:
                    self._join(source, EGRESS)
        for pod in self.pods:  # restores reach the same object storage as the backups
            if pod.profile == "restore":
                self._join(pod.name, EGRESS)
        for sidecar, server in self.sidecars.items():  # 127.0.0.1 in the pod: the server's network here
            self.clients.setdefault(server, set()).add(sidecar)
        self._scrape_targets(flows)
        for server, clients in sorted(self.clients.items()):
            self.networks[server] = {"internal": True}
            self._join(server, server, [self._service_name_of(server)])
            for client in sorted(clients - {EDGE}):
                self._join(client, server)
                if "profiles" not in self.services[client] and "profiles" not in self.services[server]:
                    depends = self.services[client].setdefault("depends_on", {})
                    depends[server] = {"condition": "service_healthy", "restart": True}
        self.networks[PUBLIC] = {}

    def _scrape_targets(self, flows: list[Flow]) -> None:
        """The services Prometheus scrapes (flows from the monitoring stack's scraper) join ``metrics``: the
        service of the pod, or its sidecar's when the port is the sidecar's (the Redis exporter)."""
        monitoring = self.stack.monitoring
        if monitoring is None:
            return
        scraper = monitoring.props.scraper.model_dump_json()
        for flow in flows:
            if flow.source.model_dump_json() != scraper or not isinstance(flow.destination, ComponentPeer):
                continue
            ports = {str(p.port) for p in flow.ports}
            for pod in self._matches(flow.destination):
                candidates = [pod, *(s for s, owner in self.sidecars.items() if owner == pod)]
                for service in candidates:
                    if ports & set(self.services[service].get("expose", [])):
                        self._join(service, METRICS)
                        self.networks[METRICS] = {"internal": True}

    def _service_name_of(self, server: str) -> str:
        """The Kubernetes Service name the clients' URLs use (``kga-<env>-redis``)."""
        return f"{self.env.instance}-{server}"

    def _join(self, service: str, network: str, aliases: list[str] | None = None) -> None:
        if service == EDGE:
            return  # the edge's networks are its backends' (ComposeProject._edge)
        networks = self.services[service].setdefault("networks", {})
        networks[network] = {"aliases": aliases} if aliases else None
        if network == EGRESS:
            self.networks[EGRESS] = {}

    # ------------------------------------------------------------------ the edge

    def _edge(self) -> dict[str, Any]:
        env = self.env
        self.config_files["config/edge/nginx.conf"] = edge_nginx_conf(self)
        self.configs["edge-nginx-conf"] = "config/edge/nginx.conf"
        cert = self._secret(TLS_SECRET, "tls.crt")
        key = self._secret(TLS_SECRET, "tls.key")
        backends = sorted(s for s, clients in self.clients.items() if EDGE in clients)
        auth = env.edge.auth_resources.limits
        return {
            "image": env.images.nginx.reference,
            "user": "10001:10001",
            "read_only": True,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges:true"],
            "restart": "unless-stopped",
            "stop_grace_period": "30s",
            "logging": LOG_OPTIONS,
            "entrypoint": ["nginx", "-c", "/etc/kga-edge/nginx.conf", "-e", "stderr", "-g", "daemon off;"],
            "expose": [str(EDGE_HTTPS_PORT), str(EDGE_HTTP_PORT), str(EDGE_HEALTH_PORT)],
            "configs": [{"source": "edge-nginx-conf", "target": "/etc/kga-edge/nginx.conf"}],
            "secrets": [
                {"source": cert, "target": "/run/secrets/tls.crt"},
                {"source": key, "target": "/run/secrets/tls.key"},
            ],
            "tmpfs": [f"{p}:size={16 << 20},uid=10001,gid=10001,mode=0700" for p in ("/tmp", "/var/cache/nginx")],
            "ports": [
                {"target": EDGE_HTTPS_PORT, "published": "${KGA_HTTPS_PORT:-443}", "host_ip": "${KGA_BIND:-0.0.0.0}"},
                {"target": EDGE_HTTP_PORT, "published": "${KGA_HTTP_PORT:-80}", "host_ip": "${KGA_BIND:-0.0.0.0}"},
            ],
            "networks": {PUBLIC: None, **{b: None for b in backends}},
            "depends_on": {b: {"condition": "service_healthy"} for b in backends},
            "deploy": {
                "resources": {
                    "limits": {"cpus": "1", "memory": "256m", "pids": PIDS_LIMIT},
                    "reservations": {"cpus": _cpus(auth.cpu), "memory": _memory(auth.memory)},
                }
            },
            "healthcheck": {
                "test": [
                    "CMD",
                    "wget",
                    "-q",
                    "-O",
                    "/dev/null",
                    "-T",
                    "2",
                    f"http://127.0.0.1:{EDGE_HEALTH_PORT}/healthz",
                ],
                "interval": "10s",
                "timeout": "3s",
                "retries": 3,
                "start_period": "10s",
            },
        }

    def _volumes_init(self) -> None:
        """Named volumes start root-owned; one run hands them to the pods' user before anything mounts them."""
        mounts = [
            {"type": "volume", "source": v, "target": f"/volumes/{v}", "volume": {"nocopy": True}}
            for v in sorted(self.volumes)
        ]
        self.services[VOLUMES_INIT] = {
            "image": self.env.images.backup.reference,
            "user": "0:0",
            "read_only": True,
            "cap_drop": ["ALL"],
            "cap_add": ["CHOWN"],
            "security_opt": ["no-new-privileges:true"],
            "network_mode": "none",
            "restart": "no",
            "logging": LOG_OPTIONS,
            "entrypoint": ["chown", "10001:10001", *(m["target"] for m in mounts)],
            "volumes": mounts,
            "deploy": {"resources": {"limits": {"cpus": "0.5", "memory": "64m"}}},
        }
        for name, service in self.services.items():
            if name != VOLUMES_INIT and any(m.get("type") == "volume" for m in service.get("volumes", [])):
                service.setdefault("depends_on", {})[VOLUMES_INIT] = {"condition": "service_completed_successfully"}

    # ------------------------------------------------------------------ output

    def compose(self) -> dict[str, Any]:
        services = {}
        for name in sorted(self.services):
            service = {k: v if k == "ports" else _literal(v) for k, v in self.services[name].items()}
            if "depends_on" in service:
                service["depends_on"] = dict(sorted(service["depends_on"].items()))
            services[name] = service
        return {
            "name": self.env.instance,
            "services": services,
            "networks": {n: self.networks[n] or {} for n in sorted(self.networks)},
            "volumes": {v: self.volumes[v] for v in sorted(self.volumes)},
            "configs": {c: {"file": f"./{self.configs[c]}"} for c in sorted(self.configs)},
            "secrets": {s: {"file": self.secrets[s]} for s in sorted(self.secrets)},
        }

    def crontab(self) -> str:
        lines = [
            f"# {self.env.instance}: the scheduled jobs, run by the host's cron (docs/single-server.md).",
            "# Install: crontab -u root crontab (the schedule is UTC: run the server's clock in UTC).",
            f"# The project lives in /srv/kga/{self.env.name} (a copy of dist/{self.env.name}/compose/).",
        ]
        for pod in self.pods:
            if pod.schedule:
                lines.append(
                    f"{pod.schedule} docker compose --project-directory /srv/kga/{self.env.name} "
                    f"run --rm --no-deps {pod.name} >>/var/log/{self.env.instance}-{pod.name}.log 2>&1"
                )
        return "\n".join(lines) + "\n"

    def files(self) -> dict[str, str]:
        """File name (relative to ``dist/<env>/compose/``) to text."""
        # A plain copy: shared dicts (the log options) would otherwise be dumped as YAML aliases.
        out = {COMPOSE_FILE: to_yaml(json.loads(json.dumps(self.compose()))), CRONTAB_FILE: self.crontab()}
        out |= self.config_files
        return dict(sorted(out.items()))

    def runbook(self) -> str:
        """``docs/environments/<env>/compose.md``: the server's secret files, and the exact backup and restore
        commands of this environment (docs/single-server.md is the guide)."""
        env, name = self.env, self.env.name
        dc = f"docker compose --project-directory /srv/kga/{name}"
        stores = list(self.stack.backups.props.stores)
        lines = [
            f"# {name} on Docker Compose",
            "",
            f"Generated with `dist/{name}/compose/` by `make synth`; the guide is "
            "[single-server.md](../../single-server.md).",
            "",
            f"## Secret files (`$KGA_SECRETS`, default `/etc/kga/{name}/secrets`)",
            "",
            "Each is one file, owned by uid 10001 with mode 0400; the services read them as Docker secrets.",
            "",
            "| file | what |",
            "|---|---|",
        ]
        what = {
            "kga-agent": "the agent's API keys",
            "kga-redis": "Redis users' passwords; `url` is `redis://app:<app-password>@kga-" + name + "-redis:6379/0`",
            "kga-redis/exporter-password.json": "redis_exporter's JSON map of Redis address to `exporter-password` "
            "(single-server.md, step 4)",
            "kga-memgraph": "the graph store's password",
            "kga-edge-keys": "the API keys' map (docs/edge.md)",
            "kga-backup": "an AWS shared-credentials file for the backup target",
            TLS_SECRET: f"the certificate (full chain) and key of {env.domain}",
        }
        for path in self.secret_files:
            lines.append(f"| `{path}` | {what.get(path, what.get(path.split('/')[0], ''))} |")
        lines += [
            "",
            "## Backups",
            "",
            f"`crontab` runs {', '.join(f'`backup-{s}`' for s in stores)} on the Kubernetes schedule to "
            f"`{env.backup.target}`, keeping {env.backup.keep_daily} daily and {env.backup.keep_weekly} weekly copies. "
            "By hand:",
            "",
            "```sh",
            *(f"{dc} run --rm --no-deps backup-{s}" for s in stores),
            *(f"{dc} run --rm --no-deps restore-{s} list {s}   # the backups" for s in stores[:1]),
            "```",
            "",
            "## Restore",
            "",
            "A restore verifies the checksum, counts and content before it writes, and refuses a store that holds "
            "data unless `--force`. Comment the crontab's lines out first (a backup of a half-loaded store must not "
            "become the latest).",
            "",
        ]
        for store in stores:
            tracked = store in TRACKED_STORES
            lines += [
                f"### {store}",
                "",
                "```sh",
                f"{dc} stop indexer query",
                f"{dc} run --rm --no-deps restore-{store} restore {store} --latest --force | tee restore-{store}.log",
            ]
            if tracked:
                lines += [
                    "# hand the indexer the commit tracker recorded with the backup (commits since are re-indexed)",
                    f"python3 -c '{TRACKER_FROM_RESTORE_LOG}' < restore-{store}.log > indexed_commits.restored.json",
                    f"{dc} start indexer",
                    f"{dc} exec -T indexer python -c '{TRACKER_WRITE}' < indexed_commits.restored.json",
                    f"{dc} restart indexer && {dc} up -d --wait",
                    f"{dc} run --rm --no-deps reindex" if self.stack.reindex else "",
                ]
            else:
                lines.append(f"{dc} up -d --wait   # the cache refills on use")
            lines += ["```", ""]
        return "\n".join(line for line in lines if line is not None).rstrip() + "\n"

    @property
    def secret_files(self) -> list[str]:
        """``<secret>/<key>`` paths the server's ``$KGA_SECRETS`` folder must hold."""
        return sorted(path.split("}/", 1)[1] for path in self.secrets.values())


def nginx_quoted(value: str) -> str:
    """``value`` inside nginx's double quotes, where ``\\\\`` reads as one backslash."""
    return value.replace("\\", "\\\\").replace('"', '\\"')


def edge_nginx_conf(project: ComposeProject) -> str:
    """The edge: TLS, the routes of :mod:`kgstack.edge` (blocked, indexer, API, UI), the API-key check through
    the verifier, security headers, rate and connection limits, body limits and request IDs."""
    env = project.env
    s = env.edge
    auth = project.stack.edge.auth
    query, indexer, web = project.stack.query.endpoint, project.stack.indexer.endpoint, project.stack.web.endpoint
    name = project._short  # the Compose service names
    verifier = f"{name(auth.verifier.service)}:{AUTH_PORT}"
    deny = f"{name(auth.deny.service)}:{DENY_PORT}"
    headers_api = security_headers(s, API_CSP) if s.security_headers else {}
    headers_web = security_headers(s, content_security_policy()) if s.security_headers else {}

    def location(
        match: str, upstream: str, timeout: int, headers: Mapping[str, str], *, rps: int, body: str, zone: str = "api"
    ) -> str:
        check = zone == "api" or not s.public_ui
        burst = rps * s.rate_limit_burst_multiplier
        lines = [f"limit_req zone={zone} burst={burst} nodelay;", f"client_max_body_size {body};"]
        if check:
            lines += [
                "auth_request /_verify;",
                f"auth_request_set $kga_key_id $upstream_http_{KEY_ID_HEADER.lower().replace('-', '_')};",
                "auth_request_set $kga_challenge $upstream_http_www_authenticate;",
                "add_header WWW-Authenticate $kga_challenge always;",
                f"proxy_set_header {KEY_ID_HEADER} $kga_key_id;",
            ]
        else:
            lines.append(f'proxy_set_header {KEY_ID_HEADER} "";')
        lines += [f'proxy_set_header {h} "";' for h in CREDENTIAL_HEADERS]  # the credentials never reach the app
        # A location with proxy_set_header of its own inherits none from http {}: the common ones again.
        lines += [f"proxy_set_header {h};" for h in PROXY_HEADERS]
        lines += [
            f"set $kga_upstream {upstream};",
            "proxy_pass http://$kga_upstream;",
            f"proxy_read_timeout {timeout}s;",
            f"proxy_send_timeout {timeout}s;",
            *(f'add_header {k} "{v}" always;' for k, v in headers.items()),
            # add_header here hides the server's: the request ID again.
            "add_header X-Request-ID $kga_request_id always;",
        ]
        body_lines = "".join(f"            {line}\n" for line in lines)
        return f"        location {match} {{\n{body_lines}        }}\n"

    api_body = nginx_size(s.max_body_size)
    rps = s.rate_limit_rps
    indexer_at = f"{name(indexer.service)}:{indexer.port}"
    routes = "".join(
        location(path, indexer_at, s.indexer_timeout_seconds, headers_api, rps=rps, body=api_body)
        for path in INDEXER_PATHS
    )
    routes += location(
        API_PREFIX, f"{name(query.service)}:{query.port}", s.query_timeout_seconds, headers_api, rps=rps, body=api_body
    )
    routes += location(
        "/",
        f"{name(web.service)}:{web.port}",
        UI_TIMEOUT_SECONDS,
        headers_web,
        rps=s.ui_rate_limit_rps,
        body="64k",
        zone="web",
    )
    common_headers = "".join(f"    proxy_set_header {h};\n" for h in PROXY_HEADERS)
    blocked_headers = "".join(
        f"            add_header {k} {v} always;\n"
        for k, v in [*((k, f'"{v}"') for k, v in headers_api.items()), ("X-Request-ID", "$kga_request_id")]
    )
    return f"""# {env.instance}: the Compose edge (kgstack.compose_project). Same routes, headers, limits and
# API-key check as the Kubernetes edge (docs/edge.md); TLS from the Docker secret {TLS_SECRET}.
worker_processes auto;
pid /tmp/nginx.pid;
events {{
    worker_connections 4096;
}}
http {{
    client_body_temp_path /tmp/client_temp;
    proxy_temp_path /tmp/proxy_temp;
    fastcgi_temp_path /tmp/fastcgi_temp;
    uwsgi_temp_path /tmp/uwsgi_temp;
    scgi_temp_path /tmp/scgi_temp;
    server_tokens off;
    underscores_in_headers off;
    merge_slashes on;
    # Docker's DNS: upstreams are looked up again when a container comes back with a new address.
    resolver 127.0.0.11 valid=10s ipv6=off;
    log_format kga '$remote_addr "$request" $status $body_bytes_sent $request_time id=$kga_request_id key=$kga_key_id';
    access_log /dev/stdout kga;
    map $http_x_request_id $kga_request_id {{
        "" $request_id;
        default $http_x_request_id;
    }}
    limit_req_zone $binary_remote_addr zone=api:10m rate={s.rate_limit_rps}r/s;
    limit_req_zone $binary_remote_addr zone=web:10m rate={s.ui_rate_limit_rps}r/s;
    limit_conn_zone $binary_remote_addr zone=perip:10m;
    limit_req_status 429;
    limit_conn_status 429;
    proxy_http_version 1.1;
{common_headers}    proxy_connect_timeout 5s;

    server {{
        listen {EDGE_HTTP_PORT};
        server_name _;
        location / {{
            return 301 https://{env.domain}$request_uri;
        }}
    }}

    server {{
        listen 127.0.0.1:{EDGE_HEALTH_PORT};
        access_log off;
        location = /healthz {{
            return 200 "ok\\n";
        }}
    }}

    server {{
        # The listen flag, not `http2 on;` (nginx >= 1.25.1): this also runs on Debian's 1.22.
        listen {EDGE_HTTPS_PORT} ssl http2;
        server_name {env.domain};
        ssl_certificate /run/secrets/tls.crt;
        ssl_certificate_key /run/secrets/tls.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:tls:10m;
        ssl_session_tickets off;
        limit_conn perip {s.connection_limit};
        add_header X-Request-ID $kga_request_id always;

        location = /_verify {{
            internal;
            set $kga_verifier {verifier};
            proxy_pass http://$kga_verifier{VERIFY_PATH}$request_uri;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header Host $host;
            proxy_set_header X-Request-ID $kga_request_id;
            proxy_set_header X-Original-Method $request_method;
            proxy_set_header X-Original-URL https://$host$request_uri;
            proxy_read_timeout 2s;
        }}
        # Blocked (maintenance endpoints, raw Cypher), in any case and with backslashes: 403 from the deny port.
        location ~ "^{nginx_quoted(blocked_regex())}$" {{
            set $kga_upstream {deny};
            proxy_pass http://$kga_upstream;
{blocked_headers}        }}
{routes}    }}
}}
"""
