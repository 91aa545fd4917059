"""The workloads of one environment as target-neutral facts, read from its rendered Kubernetes objects.

The cloud targets (``kgstack.ecs_stack``, ``kgstack.aci_template``) never restate a port, a
path, a limit, an image or a secret name: they translate what this module reads from the
objects ``make synth`` renders for the environment (after its patches), the way AWS's
``ecs-cli local`` and Kompose translate between formats. A container's image, command,
environment (ConfigMap ``envFrom`` resolved), Secret references, files mounted from
ConfigMaps and Secrets, writable volumes, probes, resources and user all come from the pod
spec; a component's ports and name from its Service; its scale from its HPA.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .cloud_edge import CONFIG_FILE, EDGE_HEALTH_PATH, EDGE_PORT
from .model import Resources
from .quantity import parse_quantity
from .secret_ref import SecretRef

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
Obj = dict[str, Any]


@dataclass(frozen=True)
class Probe:
    """An HTTP probe (``path`` on ``port``) or a command (``command``)."""

    port: int | None
    path: str | None
    command: tuple[str, ...] | None
    period: int
    timeout: int
    failures: int
    scheme: str = "http"
    """``https`` for a port that speaks TLS (the probe then does not check the certificate)."""


@dataclass(frozen=True)
class Writable:
    """A writable path: scratch (``persistent`` False) or state that must survive the task."""

    path: str
    size: str
    persistent: bool


@dataclass(frozen=True)
class Container:
    name: str
    image: str
    command: tuple[str, ...] | None
    """``command`` of the pod spec: replaces the image's entrypoint."""
    args: tuple[str, ...] | None
    """``args``: replaces the image's CMD."""
    env: dict[str, str]
    secret_env: dict[str, SecretRef]
    files: dict[str, str]
    """Path -> content, from ConfigMap mounts."""
    secret_files: dict[str, SecretRef]
    """Path -> Secret key, from Secret mounts."""
    writable: tuple[Writable, ...]
    ports: dict[str, int]
    """Port name -> number."""
    liveness: Probe | None
    readiness: Probe | None
    startup: Probe | None
    resources: Resources
    user: int
    group: int
    working_dir: str | None
    pre_stop_seconds: int
    image_key: str | None = None
    """Which of ``images:`` it runs (``agent``, ``nginx``...), when it is one of them."""


@dataclass(frozen=True)
class Component:
    """One Deployment or StatefulSet (or a CronJob's pod): the unit a target runs as a service or task."""

    component: str
    """``app.kubernetes.io/component``: the name flows use (``kgstack.connections``)."""
    name: str
    kind: str
    containers: tuple[Container, ...]
    replicas: int
    max_replicas: int
    autoscaling: Obj | None
    grace_seconds: int
    service: str | None
    service_ports: dict[str, int] = field(default_factory=dict)
    schedule: str | None = None
    """Cron schedule of a CronJob."""
    labels: dict[str, str] = field(default_factory=dict)


def _probe(spec: Obj | None, ports: dict[str, int]) -> Probe | None:
    if not spec:
        return None
    http = spec.get("httpGet")
    port = None
    if http:
        raw = http["port"]
        port = ports[raw] if isinstance(raw, str) else int(raw)
    command = tuple(spec["exec"]["command"]) if "exec" in spec else None
    return Probe(
        port=port,
        path=http["path"] if http else None,
        command=command,
        period=int(spec.get("periodSeconds", 10)),
        timeout=int(spec.get("timeoutSeconds", 1)),
        failures=int(spec.get("failureThreshold", 3)),
        scheme=str(http.get("scheme", "HTTP")).lower() if http else "http",
    )


class CloudComponents:
    """Every workload of one environment's rendered objects (``{file name: object}``)."""

    def __init__(self, objects: dict[str, Obj], images: dict[str, str] | None = None) -> None:
        """``images``: image reference -> its field of ``images:`` (``Images.all``)."""
        self.objects = objects
        self.images = images or {}
        self._by_kind: dict[tuple[str, str], Obj] = {
            (o["kind"], o["metadata"]["name"]): o for o in objects.values() if "metadata" in o
        }
        self.components: dict[str, Component] = {}
        for obj in sorted(objects.values(), key=lambda o: (o["kind"], o["metadata"]["name"])):
            if obj["kind"] in ("Deployment", "StatefulSet", "CronJob"):
                component = self._component(obj)
                key = component.component if obj["kind"] != "CronJob" else component.name
                self.components[key] = component

    def get(self, kind: str, name: str) -> Obj | None:
        return self._by_kind.get((kind, name))

    def _component(self, obj: Obj) -> Component:
        meta, spec = obj["metadata"], obj["spec"]
        schedule = None
        if obj["kind"] == "CronJob":
            schedule = spec["schedule"]
            spec = spec["jobTemplate"]["spec"]
        template = spec["template"]
        pod = template["spec"]
        labels = template["metadata"].get("labels", {})
        component = labels.get("app.kubernetes.io/component", meta["name"])
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        claims = {c["metadata"]["name"]: c for c in spec.get("volumeClaimTemplates", [])}
        pod_security = pod.get("securityContext", {})
        containers = tuple(self._container(c, volumes, claims, pod_security, meta["name"]) for c in pod["containers"])
        hpa = next(
            (
                o
                for o in self.objects.values()
                if o["kind"] == "HorizontalPodAutoscaler" and o["spec"]["scaleTargetRef"]["name"] == meta["name"]
            ),
            None,
        )
        replicas = int(spec.get("replicas") or (hpa["spec"]["minReplicas"] if hpa else 1))
        service = self.get("Service", meta["name"])
        return Component(
            component=component,
            name=meta["name"],
            kind=obj["kind"],
            containers=containers,
            replicas=replicas,
            max_replicas=int(hpa["spec"]["maxReplicas"]) if hpa else replicas,
            autoscaling=hpa["spec"] if hpa else None,
            grace_seconds=int(pod.get("terminationGracePeriodSeconds", 30)),
            service=meta["name"] if service else None,
            service_ports={p["name"]: int(p["port"]) for p in service["spec"]["ports"]} if service else {},
            schedule=schedule,
            labels=labels,
        )

    def _container(self, c: Obj, volumes: Obj, claims: Obj, pod_security: Obj, owner: str) -> Container:
        ports = {p["name"]: int(p["containerPort"]) for p in c.get("ports", []) if "name" in p}
        env: dict[str, str] = {}
        for source in c.get("envFrom", []):
            if "configMapRef" in source:
                data = self.get("ConfigMap", source["configMapRef"]["name"])
                env |= {k: v for k, v in (data or {}).get("data", {}).items() if _ENV_NAME.match(k)}
        secret_env: dict[str, SecretRef] = {}
        for var in c.get("env", []):
            if "value" in var:
                env[var["name"]] = str(var["value"])
            elif "secretKeyRef" in var.get("valueFrom", {}):
                ref = var["valueFrom"]["secretKeyRef"]
                secret_env[var["name"]] = SecretRef(
                    name=ref["name"], key=ref["key"], optional=bool(ref.get("optional", False))
                )
        files, secret_files, writable = self._mounts(c, volumes, claims)
        security = {**pod_security, **c.get("securityContext", {})}
        pre_stop = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
        return Container(
            name=c["name"],
            image=c["image"],
            command=tuple(c["command"]) if "command" in c else None,
            args=tuple(c["args"]) if "args" in c else None,
            env=dict(sorted(env.items())),
            secret_env=secret_env,
            files=files,
            secret_files=secret_files,
            writable=tuple(writable),
            ports=ports,
            liveness=_probe(c.get("livenessProbe"), ports),
            readiness=_probe(c.get("readinessProbe"), ports),
            startup=_probe(c.get("startupProbe"), ports),
            resources=Resources.model_validate(c["resources"]),
            user=int(security["runAsUser"]),
            group=int(security.get("runAsGroup", security["runAsUser"])),
            working_dir=c.get("workingDir"),
            pre_stop_seconds=int(pre_stop[1]) if pre_stop[:1] == ["sleep"] else 0,
            image_key=self.images.get(c["image"]),
        )

    def _mounts(self, c: Obj, volumes: Obj, claims: Obj) -> tuple[dict[str, str], dict[str, SecretRef], list[Writable]]:
        """Files from ConfigMaps, files from Secrets, and writable paths of one container's mounts."""
        files: dict[str, str] = {}
        secret_files: dict[str, SecretRef] = {}
        writable: list[Writable] = []
        for mount in c.get("volumeMounts", []):
            path, sub = mount["mountPath"], mount.get("subPath")
            volume = volumes.get(mount["name"])
            if volume is None and mount["name"] in claims:
                size = claims[mount["name"]]["spec"]["resources"]["requests"]["storage"]
                writable.append(Writable(path=path, size=size, persistent=True))
            elif volume is None:
                continue
            elif "configMap" in volume:
                data = (self.get("ConfigMap", volume["configMap"]["name"]) or {}).get("data", {})
                items = {i["path"]: i["key"] for i in volume["configMap"].get("items", [])} or {k: k for k in data}
                if sub:
                    files[path] = data[items.get(sub, sub)]
                else:
                    files |= {f"{path}/{p}": data[k] for p, k in items.items()}
            elif "secret" in volume:
                secret = volume["secret"]["secretName"]
                items = {i["path"]: i["key"] for i in volume["secret"].get("items", [])}
                if sub:
                    secret_files[path] = SecretRef(name=secret, key=items.get(sub, sub))
                else:
                    secret_files |= {f"{path}/{p}": SecretRef(name=secret, key=k) for p, k in items.items()}
            elif "emptyDir" in volume:
                writable.append(Writable(path=path, size=volume["emptyDir"].get("sizeLimit", "1Gi"), persistent=False))
            elif "ephemeral" in volume:  # a claim made and deleted with the pod: scratch, however it is stored
                claim = volume["ephemeral"]["volumeClaimTemplate"]["spec"]
                writable.append(Writable(path=path, size=claim["resources"]["requests"]["storage"], persistent=False))
            elif "persistentVolumeClaim" in volume:
                pvc = self.get("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]) or {}
                size = pvc.get("spec", {}).get("resources", {}).get("requests", {}).get("storage", "1Gi")
                writable.append(Writable(path=path, size=size, persistent=True))
        return files, secret_files, writable


EDGE = "edge"
"""The cloud edge's component and container name: its proxy and the verifier (component ``auth``) share one
task or container group."""


def edge_component(
    auth: Component, conf: str, *, name: str, replicas: int, tls_files: dict[str, SecretRef] | None = None
) -> Component:
    """The cloud edge (:mod:`kgstack.cloud_edge`) as one unit of two containers: the proxy with ``conf`` (and
    ``tls_files`` where it ends TLS itself) in front of the API-key verifier of ``auth``, on the verifier's image,
    user, resources and scratch ``/tmp``; checked on :data:`EDGE_HEALTH_PATH`, over TLS where it ends TLS."""
    verifier = auth.containers[0]
    proxy = Container(
        name=EDGE,
        image=verifier.image,  # the same unprivileged nginx as the verifier (images.nginx)
        command=("nginx", "-c", CONFIG_FILE, "-e", "stderr", "-g", "daemon off;"),
        args=None,
        env={},
        secret_env={},
        files={CONFIG_FILE: conf},
        secret_files=dict(tls_files or {}),
        writable=tuple(w for w in verifier.writable if w.path == "/tmp"),
        ports={"edge": EDGE_PORT},
        liveness=Probe(
            port=EDGE_PORT,
            path=EDGE_HEALTH_PATH,
            command=None,
            period=20,
            timeout=2,
            failures=3,
            scheme="https" if tls_files else "http",
        ),
        readiness=None,
        startup=None,
        resources=verifier.resources,
        user=verifier.user,
        group=verifier.group,
        working_dir=None,
        pre_stop_seconds=verifier.pre_stop_seconds,
        image_key=verifier.image_key,
    )
    return Component(
        component=EDGE,
        name=name,
        kind="Deployment",
        containers=(proxy, verifier),
        replicas=replicas,
        max_replicas=replicas,
        autoscaling=None,
        grace_seconds=auth.grace_seconds,
        service=None,
    )


IMAGE_ENTRYPOINTS: dict[str, tuple[str, ...]] = {
    "agent": ("/usr/bin/tini", "--"),
    "chroma": ("dumb-init", "--", "chroma"),
    "backup": ("python", "-m", "kgbackup"),
    "web": ("nginx", "-e", "stderr", "-g", "daemon off;"),
    "redis": ("redis-server",),
}
"""Each image's ENTRYPOINT (docker/*/Dockerfile for ours, the upstream image's for Chroma): a target whose
container command replaces the entrypoint (ACI's ``command``, a start script) runs it in front of the args.
tests/test_cloud_components.py reads ours from the Dockerfiles."""

FILES_ENV = "KGA_FILE_"
"""Prefix of the variables a container's start script writes to its files (no ConfigMaps in the clouds)."""
SECRET_FILES_ENV = "KGA_SECRET_FILE_"


def start_script(
    files: dict[str, str], secret_files: dict[str, SecretRef]
) -> tuple[list[str], dict[str, str], dict[str, SecretRef]]:
    """``sh -c`` that writes each file from a variable (removed before the command runs), then execs the
    command given after it; with the variables holding plain files and the ones holding secret files."""
    script = ["set -e", "umask 077"]
    folders = sorted({path.rsplit("/", 1)[0] for path in [*files, *secret_files]} - {""})
    if folders:
        script.append(f"mkdir -p {' '.join(folders)}")
    plain: dict[str, str] = {}
    secret: dict[str, SecretRef] = {}
    for i, path in enumerate(sorted(files)):
        plain[f"{FILES_ENV}{i}"] = files[path]
        script.append(f'printf "%s" "${FILES_ENV}{i}" > {path}; unset {FILES_ENV}{i}')
    for i, (path, ref) in enumerate(sorted(secret_files.items())):
        secret[f"{SECRET_FILES_ENV}{i}"] = ref
        script.append(f'printf "%s" "${SECRET_FILES_ENV}{i}" > {path}; unset {SECRET_FILES_ENV}{i}')
    return ["sh", "-c", "; ".join([*script, 'exec "$@"']), "sh"], plain, secret


def full_command(c: Container) -> list[str]:
    """What the container runs, entrypoint included: the pod's ``command`` or the image's, then ``args``."""
    entry = list(c.command) if c.command is not None else list(IMAGE_ENTRYPOINTS.get(c.image_key or "", ()))
    return entry + list(c.args or [])


def cpu_units(quantity: str) -> int:
    """A CPU quantity in ECS units (1024 per core)."""
    return int(parse_quantity(quantity) * 1024)


def mebibytes(quantity: str) -> int:
    """A memory or storage quantity in MiB, rounded up."""
    value = parse_quantity(quantity)
    return int(-(-value // (1024 * 1024)))


def gibibytes(quantity: str) -> int:
    """A storage quantity in GiB, rounded up (at least 1)."""
    return max(1, -(-mebibytes(quantity) // 1024))


@dataclass(frozen=True)
class KubernetesView:
    """What the cloud targets read of an environment: its rendered objects, declared flows and remote secrets."""

    objects: dict[str, Obj]
    flows: tuple[Any, ...]
    remote_secrets: dict[str, str]


def kubernetes_view(env: Any) -> KubernetesView:
    """The environment rendered as Kubernetes objects in memory (never written), for a cloud target.

    An environment without the ``kubernetes`` target has no namespace, cluster or quota: the view gives
    it placeholders that change no workload (the namespace is the instance, the quota unbounded)."""
    import cdk8s

    from .agent_stack import AgentStack
    from .cluster_platform import Cluster
    from .environment import SUPPORTED_KUBERNETES, Quota
    from .model import ComputeAmounts
    from .publish import manifests

    shadow = env
    if not env.on_kubernetes:
        unbounded = ComputeAmounts(cpu="100000", memory="100000Ti")
        shadow = env.model_copy(
            update={
                "namespace": env.instance,
                "kubernetes_version": SUPPORTED_KUBERNETES[-1],
                "cluster": Cluster(name="view", server="https://kubernetes.default.svc"),
                "quota": Quota(
                    requests=unbounded,
                    limits=unbounded,
                    pods=100000,
                    storage="100000Ti",
                    persistent_volume_claims=100000,
                ),
                # The cloud targets read the remote key layout, not an External Secrets store.
                "secrets": env.secrets.model_copy(update={"store_name": env.secrets.store_name or "view"}),
            }
        )
    stack = AgentStack(cdk8s.App(), shadow)
    return KubernetesView(
        objects=manifests(stack),
        flows=tuple(stack.network.props.flows),
        remote_secrets=dict(stack.secrets.remote),
    )
