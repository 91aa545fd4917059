"""The cross-reference gate: every reference in the rendered objects resolves, and its traffic is allowed.

Schemas judge each object alone. This gate reads one environment's rendered
objects, exactly as they are written to ``dist/``, and checks what ties them
together, independently of the constructs that made them:

* every Secret, ConfigMap, PVC and ServiceAccount a pod, a monitoring object or
  a TLS setting references exists, is produced (ExternalSecret, cert-manager
  Certificate) with the keys that are read, or is a declared prerequisite;
* an ExternalSecret asks its store only for keys some consumer requires (ESO
  fails the whole sync on a missing remote key);
* every Service selects pods and targets a port a container declares; every
  PDB selects pods and every HPA targets a workload that exists;
* the traffic the objects imply (Probe and ServiceMonitor targets, edge
  backends, service URLs in the pods' environment) is allowed by the rendered
  NetworkPolicies, evaluated here with Kubernetes' semantics;
* no two ServiceAccounts share a cloud workload identity;
* every PersistentVolumeClaim is in the Argo CD sync wave of the first pod that mounts it (argo-cd #12840).

Each problem reads ``<file>: <field path>: <reason>``. :func:`check_chart` runs the gate on any
chart (a composition of a few constructs as well as ``AgentStack``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import cdk8s

from .publish import manifests

Obj = dict[str, Any]

WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob")
IDENTITY_ANNOTATIONS = (
    "eks.amazonaws.com/role-arn",
    "iam.gke.io/gcp-service-account",
    "azure.workload.identity/client-id",
)
NAMESPACE_LABEL = "kubernetes.io/metadata.name"
CERTIFICATE_KEYS = frozenset({"tls.crt", "tls.key", "ca.crt"})
AUTH_URL = "nginx.ingress.kubernetes.io/auth-url"
SYNC_WAVE = "argocd.argoproj.io/sync-wave"
RUN_AT_SYNC = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job")
"""Workloads whose pods exist once applied; a CronJob's pods only at its schedule."""
PULL_SECRET_KEY = ".dockerconfigjson"
PULL_SECRET_TYPE = "kubernetes.io/dockerconfigjson"
_HOST_PORT = re.compile(r"^(?P<host>[a-z0-9.-]+):(?P<port>\d+)$")
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://(?:[^@/]*@)?(?P<host>[a-z0-9.-]+):(?P<port>\d+)(?:/|$)")


@dataclass(frozen=True)
class Peer:
    """A traffic source outside our namespace: a namespace and, when known, its pods' labels."""

    namespace: str
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass
class _Pod:
    """A pod template of a workload, with where it came from."""

    file: str
    path: str
    labels: dict[str, str]
    spec: Obj

    def ports(self) -> dict[str | int, int]:
        """Container ports by name and by number, to the number."""
        out: dict[str | int, int] = {}
        for container in self.spec.get("containers", []):
            for port in container.get("ports", []) or []:
                out[port["containerPort"]] = port["containerPort"]
                if "name" in port:
                    out[port["name"]] = port["containerPort"]
        return out


@dataclass(frozen=True)
class _Flow:
    """Traffic a rendered object implies: ``source`` opens ``host:port``; reported at ``file``/``path``."""

    file: str
    path: str
    source: Peer | _Pod
    host: str
    port: int
    what: str


def _pods(files: Mapping[str, Obj]) -> list[_Pod]:
    pods = []
    for file, obj in files.items():
        kind = obj["kind"]
        if kind not in WORKLOADS:
            continue
        spec, path = obj["spec"], "spec.template"
        if kind == "CronJob":
            spec, path = spec["jobTemplate"]["spec"], "spec.jobTemplate.spec.template"
        template = spec["template"]
        pods.append(_Pod(file, path, dict(template["metadata"].get("labels", {})), template["spec"]))
    return pods


def _matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """Label selector semantics (matchLabels and matchExpressions); ``None`` matches nothing."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def _walk(node: Any, path: str) -> Iterator[tuple[str, Obj]]:
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from _walk(value, f"{path}.{key}" if path else key)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, f"{path}[{index}]")


class Gate:
    """One environment's objects (``{file name: object}``); :meth:`problems` runs every check.

    ``scraper`` is the Prometheus pods, ``prober`` the blackbox exporter's (default ``scraper``),
    ``edge`` the gateway's data plane (HTTPRoute backends), ``ingress_controller`` the legacy
    controller (Ingress backends; default ``edge``).
    """

    def __init__(
        self,
        files: Mapping[str, Obj],
        *,
        namespace: str,
        prerequisites: Mapping[str, frozenset[str] | None] | None = None,
        scraper: Peer | None = None,
        prober: Peer | None = None,
        edge: Peer | None = None,
        ingress_controller: Peer | None = None,
    ) -> None:
        self.files = {f: o for f, o in files.items() if f != "kustomization.yaml"}
        self.namespace = namespace
        self.prerequisites = dict(prerequisites or {})
        self.scraper = scraper
        self.prober = prober or scraper
        self.edge = edge
        self.ingress_controller = ingress_controller or edge
        self.pods = _pods(self.files)
        self.by_kind: dict[str, dict[str, tuple[str, Obj]]] = {}
        for file, obj in self.files.items():
            self.by_kind.setdefault(obj["kind"], {})[obj["metadata"]["name"]] = (file, obj)
        self.secrets = self._secret_producers()
        self.secret_types = {name: obj.get("type", "Opaque") for name, (_, obj) in self.kind("Secret").items()}
        for _, target, _, template in self._external_secrets():
            self.secret_types[target] = template.get("type", "Opaque")
        self.problems_found: list[str] = []

    # -- producers ------------------------------------------------------------------------------

    def _secret_producers(self) -> dict[str, tuple[str, frozenset[str] | None]]:
        """Secret name -> (who makes it, its keys; ``None``: keys unknown, e.g. a prerequisite without a list)."""
        out: dict[str, tuple[str, frozenset[str] | None]] = {}
        for name, (file, obj) in self.kind("Secret").items():
            out[name] = (file, frozenset({*(obj.get("data") or {}), *(obj.get("stringData") or {})}))
        for file, target, spec, template in self._external_secrets():
            keys = {d["secretKey"] for d in spec.get("data") or []}
            if template.get("data") is not None:
                keys = set(template["data"]) | (keys if template.get("mergePolicy") == "Merge" else set())
            out[target] = (file, frozenset(keys))
        for file, obj in self.kind("Certificate").values():
            out[obj["spec"]["secretName"]] = (file, CERTIFICATE_KEYS)
        for name, required in self.prerequisites.items():
            out.setdefault(name, ("a documented prerequisite", required))
        return out

    def _external_secrets(self) -> Iterator[tuple[str, str, Obj, Obj]]:
        """(file, target Secret, spec, template) of every ExternalSecret; the target defaults to its own name."""
        for name, (file, obj) in self.kind("ExternalSecret").items():
            target = obj["spec"].get("target") or {}
            yield file, target.get("name") or name, obj["spec"], target.get("template") or {}

    def kind(self, kind: str) -> dict[str, tuple[str, Obj]]:
        return self.by_kind.get(kind, {})

    # -- checks ---------------------------------------------------------------------------------

    def problems(self) -> list[str]:
        self.problems_found = []
        self._pod_references()
        self._pull_secret_types()
        self._external_secret_keys()
        self._custom_resource_secrets()
        self._services()
        self._budgets_and_autoscalers()
        self._attachments()
        self._traffic()
        self._identities()
        self._claim_waves()
        return self.problems_found

    def _report(self, file: str, path: str, reason: str) -> None:
        self.problems_found.append(f"{file}: {path}: {reason}")

    def _need_secret(self, file: str, path: str, name: str, key: str | None, optional: bool) -> None:
        if name not in self.secrets:
            if not optional:
                self._report(file, path, f"Secret {name} is neither rendered, produced nor a documented prerequisite")
            return
        producer, keys = self.secrets[name]
        if key is not None and keys is not None and key not in keys and not optional:
            self._report(file, path, f"Secret {name} ({producer}) has no key {key!r}; it has {sorted(keys)}")

    def _pod_references(self) -> None:
        configmaps = {name: obj for name, (_, obj) in self.kind("ConfigMap").items()}
        claims = set(self.kind("PersistentVolumeClaim"))
        accounts = set(self.kind("ServiceAccount"))
        for pod in self.pods:
            base = f"{pod.path}.spec"
            account = pod.spec.get("serviceAccountName")
            if account and account not in accounts:
                self._report(pod.file, f"{base}.serviceAccountName", f"ServiceAccount {account} does not exist")
            for i, volume in enumerate(pod.spec.get("volumes") or []):
                path = f"{base}.volumes[{i}]"
                if "configMap" in volume:
                    ref = volume["configMap"]
                    if ref["name"] not in configmaps and ref["name"] != "kube-root-ca.crt":
                        self._report(pod.file, f"{path}.configMap", f"ConfigMap {ref['name']} does not exist")
                    else:
                        data = configmaps.get(ref["name"], {}).get("data") or {}
                        for item in ref.get("items") or []:
                            if item["key"] not in data:
                                self._report(pod.file, f"{path}.configMap.items", f"no key {item['key']!r}")
                if "persistentVolumeClaim" in volume:
                    claim = volume["persistentVolumeClaim"]["claimName"]
                    if claim not in claims:
                        self._report(pod.file, f"{path}.persistentVolumeClaim", f"PVC {claim} does not exist")
            self._env_references(pod, base, configmaps)
        for file, path, name, key, optional in self._pod_secret_refs():
            self._need_secret(file, path, name, key, optional)

    def _pull_secret_types(self) -> None:
        for pod in self.pods:
            for i, pull in enumerate(pod.spec.get("imagePullSecrets") or []):
                kind = self.secret_types.get(pull["name"], PULL_SECRET_TYPE)  # a prerequisite's type is documented
                if kind != PULL_SECRET_TYPE:
                    self._report(
                        pod.file,
                        f"{pod.path}.spec.imagePullSecrets[{i}]",
                        f"Secret {pull['name']} has type {kind}; the kubelet reads pull credentials only from "
                        f"a {PULL_SECRET_TYPE} Secret",
                    )

    def _env_references(self, pod: _Pod, base: str, configmaps: Mapping[str, Obj]) -> None:
        for group in ("initContainers", "containers"):
            for c, container in enumerate(pod.spec.get(group) or []):
                cpath = f"{base}.{group}[{c}]"
                for e, env in enumerate(container.get("env") or []):
                    source = env.get("valueFrom") or {}
                    if "configMapKeyRef" in source:
                        ref = source["configMapKeyRef"]
                        data = configmaps.get(ref["name"], {}).get("data")
                        if (data is None or ref["key"] not in data) and not ref.get("optional"):
                            self._report(
                                pod.file,
                                f"{cpath}.env[{e}].valueFrom.configMapKeyRef",
                                f"ConfigMap {ref['name']} has no key {ref['key']!r}",
                            )
                for e, source in enumerate(container.get("envFrom") or []):
                    if "configMapRef" in source and source["configMapRef"]["name"] not in configmaps:
                        self._report(pod.file, f"{cpath}.envFrom[{e}]", "ConfigMap does not exist")

    def _pod_secret_refs(self) -> Iterator[tuple[str, str, str, str | None, bool]]:
        """(file, field path, Secret, key, optional) of every pod's Secret reference; key ``None``: all keys."""
        for pod in self.pods:
            base = f"{pod.path}.spec"
            for i, pull in enumerate(pod.spec.get("imagePullSecrets") or []):
                # The kubelet reads only a kubernetes.io/dockerconfigjson Secret's .dockerconfigjson.
                yield pod.file, f"{base}.imagePullSecrets[{i}]", pull["name"], PULL_SECRET_KEY, False
            for i, volume in enumerate(pod.spec.get("volumes") or []):
                ref = volume.get("secret")
                if ref:
                    for item in ref.get("items") or [{"key": None}]:
                        yield (
                            pod.file,
                            f"{base}.volumes[{i}].secret",
                            ref["secretName"],
                            item["key"],
                            bool(ref.get("optional")),
                        )
            for group in ("initContainers", "containers"):
                for c, container in enumerate(pod.spec.get(group) or []):
                    cpath = f"{base}.{group}[{c}]"
                    for e, env in enumerate(container.get("env") or []):
                        ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                        if ref:
                            path = f"{cpath}.env[{e}].valueFrom.secretKeyRef"
                            yield pod.file, path, ref["name"], ref["key"], bool(ref.get("optional"))
                    for e, source in enumerate(container.get("envFrom") or []):
                        ref = source.get("secretRef")
                        if ref:
                            yield pod.file, f"{cpath}.envFrom[{e}]", ref["name"], None, bool(ref.get("optional"))

    def _secret_reads(self) -> dict[str, dict[str, bool]]:
        """Secret -> key -> read non-optionally by someone; key ``*``: the whole Secret is mounted."""
        reads: dict[str, dict[str, bool]] = {}

        def read(name: str, key: str, optional: bool) -> None:
            keys = reads.setdefault(name, {})
            keys[key] = keys.get(key, False) or not optional

        for _, _, name, key, optional in self._pod_secret_refs():
            read(name, key or "*", optional)
        for _, _, name, key in self._custom_resource_refs():
            read(name, key, False)
        return reads

    def _external_secret_keys(self) -> None:
        reads = self._secret_reads()
        for file, target, spec, template in self._external_secrets():
            used_by_template = " ".join((template.get("data") or {}).values())
            read = reads.get(target, {})
            for i, item in enumerate(spec.get("data") or []):
                key = item["secretKey"]
                if read.get("*") or read.get(key) or key in used_by_template:
                    continue
                reason = "every consumer marks it optional" if key in read else "no pod or monitoring object reads it"
                self._report(
                    file,
                    f"spec.data[{i}]",
                    f"key {key!r} is required from the store (a missing remote key fails the whole sync), but {reason}",
                )

    def _custom_resource_refs(self) -> Iterator[tuple[str, str, str, str]]:
        """(file, path, Secret, key) of every SecretKeySelector in monitoring and TLS objects."""
        for file, obj in self.files.items():
            if obj["kind"] in ("AlertmanagerConfig", "ServiceMonitor", "PodMonitor", "Probe", "Prometheus"):
                for path, node in _walk(obj.get("spec"), "spec"):
                    selector = set(node) <= {"name", "key", "optional"} and {"name", "key"} <= set(node)
                    if selector and not node.get("optional"):
                        yield file, path, node["name"], node["key"]
            if obj["kind"] == "Ingress":
                for i, tls in enumerate(obj["spec"].get("tls") or []):
                    if tls.get("secretName"):
                        yield file, f"spec.tls[{i}].secretName", tls["secretName"], "tls.crt"
            if obj["kind"] == "Gateway":
                for i, listener in enumerate(obj["spec"].get("listeners") or []):
                    for j, ref in enumerate((listener.get("tls") or {}).get("certificateRefs") or []):
                        if ref.get("kind", "Secret") == "Secret":
                            yield file, f"spec.listeners[{i}].tls.certificateRefs[{j}]", ref["name"], "tls.crt"

    def _custom_resource_secrets(self) -> None:
        for file, path, name, key in self._custom_resource_refs():
            self._need_secret(file, path, name, key, False)

    def _services(self) -> None:
        for name, (file, svc) in self.kind("Service").items():
            selector = svc["spec"].get("selector")
            if not selector:
                continue
            pods = [p for p in self.pods if _matches({"matchLabels": selector}, p.labels)]
            if not pods:
                self._report(file, "spec.selector", f"Service {name} selects no pod template")
                continue
            for i, port in enumerate(svc["spec"].get("ports") or []):
                target = port.get("targetPort", port["port"])
                if not any(target in pod.ports() for pod in pods):
                    self._report(file, f"spec.ports[{i}].targetPort", f"no selected container declares port {target!r}")

    def _budgets_and_autoscalers(self) -> None:
        for name, (file, pdb) in self.kind("PodDisruptionBudget").items():
            if not any(_matches(pdb["spec"].get("selector"), p.labels) for p in self.pods):
                self._report(file, "spec.selector", f"PodDisruptionBudget {name} selects no pod template")
        for _name, (file, hpa) in self.kind("HorizontalPodAutoscaler").items():
            ref = hpa["spec"]["scaleTargetRef"]
            if ref["name"] not in self.kind(ref["kind"]):
                self._report(file, "spec.scaleTargetRef", f"{ref['kind']} {ref['name']} does not exist")

    def _attachments(self) -> None:
        """Policy ``targetRefs`` and route ``parentRefs`` in our namespace name a rendered object: the
        Gateway API ignores a policy or a route whose target is missing, silently."""
        for file, obj in self.files.items():
            spec = obj.get("spec") or {}
            for refs in ("targetRefs", "parentRefs"):
                for i, ref in enumerate(spec.get(refs) or []):
                    kind = ref.get("kind", "Gateway")  # the Gateway API's default for parentRefs
                    if ref.get("namespace", self.namespace) == self.namespace and ref["name"] not in self.kind(kind):
                        self._report(file, f"spec.{refs}[{i}]", f"{kind} {ref['name']} does not exist")

    def _identities(self) -> None:
        seen: dict[str, str] = {}
        for name, (file, account) in sorted(self.kind("ServiceAccount").items()):
            for key in IDENTITY_ANNOTATIONS:
                value = (account["metadata"].get("annotations") or {}).get(key)
                if value is None:
                    continue
                if value in seen:
                    self._report(
                        file,
                        f"metadata.annotations[{key}]",
                        f"ServiceAccount {name} shares workload identity {value} with {seen[value]}",
                    )
                seen[value] = name

    def _claim_waves(self) -> None:
        """Argo CD waits for each wave to be healthy and reports a Pending claim as Progressing; a claim under a
        WaitForFirstConsumer StorageClass is Pending until a pod mounts it. So a claim in a wave before its
        first consumer's never binds, and one after it leaves the consumer's pods Pending: either way the first
        sync stops."""

        def wave(obj: Obj) -> int:
            text = (obj["metadata"].get("annotations") or {}).get(SYNC_WAVE, "0")
            return int(text) if re.fullmatch(r"-?\d+", text) else 0

        consumers: dict[str, list[tuple[int, str]]] = {}
        for pod in self.pods:
            obj = self.files[pod.file]
            if obj["kind"] not in RUN_AT_SYNC:
                continue
            for volume in pod.spec.get("volumes") or []:
                claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
                if claim:
                    consumers.setdefault(claim, []).append((wave(obj), f"{obj['kind']} {obj['metadata']['name']}"))
        for name, (file, pvc) in self.kind("PersistentVolumeClaim").items():
            if name not in consumers:
                continue
            first, who = min(consumers[name])
            mine = wave(pvc)
            if mine != first:
                reason = (
                    "never binds under a WaitForFirstConsumer StorageClass before its consumer exists"
                    if mine < first
                    else "its consumer's pods stay Pending until the claim exists"
                )
                self._report(
                    file,
                    f"metadata.annotations[{SYNC_WAVE}]",
                    f"PVC {name} is in sync wave {mine}, its first consumer {who} in wave {first}: {reason}, "
                    "and Argo CD waits on that wave forever (argo-cd #12840); put it in wave "
                    f"{first}",
                )

    # -- traffic ----------------------------------------------------------------------------------

    def _service_target(self, host: str, port: int) -> tuple[list[_Pod], int] | None:
        """The pods and container port behind ``host:port`` when it names a Service of ours."""
        parts = host.split(".")
        if len(parts) > 1 and parts[1] != self.namespace:
            return None
        entry = self.kind("Service").get(parts[0])
        if entry is None:
            return None
        svc = entry[1]["spec"]
        for p in svc.get("ports") or []:
            if p["port"] == port:
                pods = [pod for pod in self.pods if _matches({"matchLabels": svc.get("selector") or {}}, pod.labels)]
                target = p.get("targetPort", port)
                numbers = {pod.ports().get(target) for pod in pods} - {None}
                if len(numbers) == 1:
                    return pods, numbers.pop()  # type: ignore[return-value]
        return None

    def _policies(self, pod: _Pod, direction: str) -> list[Obj]:
        return [
            obj["spec"]
            for _, obj in self.kind("NetworkPolicy").values()
            if direction in obj["spec"].get("policyTypes", ["Ingress"])
            and _matches(obj["spec"].get("podSelector"), pod.labels)
        ]

    def _port_allowed(self, rule: Obj, target: _Pod, port: int) -> bool:
        ports = rule.get("ports")
        if not ports:
            return True
        for p in ports:
            if p.get("protocol", "TCP") != "TCP":
                continue
            value = p.get("port")
            if value is None:
                return True
            number = target.ports().get(value) if isinstance(value, str) else value
            end = p.get("endPort", number)
            if number is not None and number <= port <= end:
                return True
        return False

    def _peer_allows(self, peers: list[Obj] | None, namespace: str, labels: Mapping[str, str]) -> bool:
        if peers is None:
            return True
        for peer in peers:
            if "ipBlock" in peer:
                continue  # pod-to-pod traffic is judged by selectors; ip blocks are the internet's
            ns_selector, pod_selector = peer.get("namespaceSelector"), peer.get("podSelector")
            if ns_selector is None:
                in_ns = namespace == self.namespace
            else:
                in_ns = _matches(ns_selector, {NAMESPACE_LABEL: namespace})
            if in_ns and (pod_selector is None or _matches(pod_selector, labels)):
                return True
        return False

    def _ingress_allowed(self, source: Peer, target: _Pod, port: int) -> bool:
        policies = self._policies(target, "Ingress")
        if not policies:
            return True
        return any(
            self._peer_allows(rule.get("from"), source.namespace, source.labels)
            and self._port_allowed(rule, target, port)
            for spec in policies
            for rule in spec.get("ingress") or []
        )

    def _egress_allowed(self, source: _Pod, target: _Pod, port: int) -> bool:
        policies = self._policies(source, "Egress")
        if not policies:
            return True
        return any(
            self._peer_allows(rule.get("to"), self.namespace, target.labels) and self._port_allowed(rule, target, port)
            for spec in policies
            for rule in spec.get("egress") or []
        )

    def reaches(self, source_file: str, host: str, port: int) -> bool:
        """Whether the NetworkPolicies let the pods of ``source_file`` open ``host:port`` (a Service of ours):
        for traffic the objects cannot show, e.g. a URL in a Secret made outside the chart."""
        sources = [pod for pod in self.pods if pod.file == source_file]
        resolved = self._service_target(host, port)
        if not sources or resolved is None:
            return False
        targets, container_port = resolved
        return all(
            self._egress_allowed(source, target, container_port)
            and self._ingress_allowed(Peer(self.namespace, source.labels), target, container_port)
            for source in sources
            for target in targets
        )

    def _expect(self, file: str, path: str, source: Peer | _Pod, *, host: str, port: int, what: str) -> None:
        resolved = self._service_target(host, port)
        if resolved is None:
            self._report(file, path, f"{what}: {host}:{port} is not a port of a Service in {self.namespace}")
            return
        pods, container_port = resolved
        for target in pods:
            if isinstance(source, _Pod):
                ok = self._egress_allowed(source, target, container_port) and self._ingress_allowed(
                    Peer(self.namespace, source.labels), target, container_port
                )
                who = source.file
            else:
                ok = self._ingress_allowed(source, target, container_port)
                who = f"namespace {source.namespace}"
            if not ok:
                self._report(
                    file,
                    path,
                    f"{what}: the NetworkPolicies deny {who} -> {target.file} on port {container_port}",
                )

    def _traffic(self) -> None:
        for flow in (
            *self._probe_flows(),
            *self._scrape_flows(),
            *self._ingress_flows(),
            *self._route_flows(),
            *self._ext_auth_flows(),
            *self._auth_url_flows(),
            *self._env_flows(),
            *self._secret_url_flows(),
        ):
            self._expect(flow.file, flow.path, flow.source, host=flow.host, port=flow.port, what=flow.what)

    def _probe_flows(self) -> Iterator[_Flow]:
        if self.prober is None:
            return
        for file, probe in self.kind("Probe").values():
            static = probe["spec"].get("targets", {}).get("staticConfig", {}).get("static", [])
            for i, target in enumerate(static):
                match = _URL.match(target) or _HOST_PORT.match(target)
                if match:
                    path = f"spec.targets.staticConfig.static[{i}]"
                    yield _Flow(file, path, self.prober, match["host"], int(match["port"]), "blackbox probe")

    def _scrape_flows(self) -> Iterator[_Flow]:
        if self.scraper is None:
            return
        for file, monitor in self.kind("ServiceMonitor").values():
            for svc_name, (_, svc) in self.kind("Service").items():
                if not _matches(monitor["spec"].get("selector"), svc["metadata"].get("labels") or {}):
                    continue
                for i, endpoint in enumerate(monitor["spec"].get("endpoints") or []):
                    port = self._named_service_port(svc_name, endpoint.get("port"))
                    if port is not None:
                        yield _Flow(file, f"spec.endpoints[{i}]", self.scraper, svc_name, port, "scrape")

    def _ingress_flows(self) -> Iterator[_Flow]:
        if self.ingress_controller is None:
            return
        for file, ingress in self.kind("Ingress").values():
            for r, rule in enumerate(ingress["spec"].get("rules") or []):
                for i, path in enumerate((rule.get("http") or {}).get("paths") or []):
                    svc = path["backend"]["service"]
                    port = svc["port"].get("number") or self._named_service_port(svc["name"], svc["port"]["name"])
                    if port is not None:
                        where = f"spec.rules[{r}].http.paths[{i}].backend"
                        yield _Flow(file, where, self.ingress_controller, svc["name"], port, "edge route")

    def _route_flows(self) -> Iterator[_Flow]:
        if self.edge is None:
            return
        for file, route in self.kind("HTTPRoute").values():
            for r, rule in enumerate(route["spec"].get("rules") or []):
                for b, ref in enumerate(rule.get("backendRefs") or []):
                    if ref.get("kind", "Service") == "Service" and "port" in ref:
                        where = f"spec.rules[{r}].backendRefs[{b}]"
                        yield _Flow(file, where, self.edge, ref["name"], int(ref["port"]), "edge route")

    def _ext_auth_flows(self) -> Iterator[_Flow]:
        """The data plane calling the verifier before the API (Envoy Gateway ``SecurityPolicy``)."""
        if self.edge is None:
            return
        for file, policy in self.kind("SecurityPolicy").values():
            http = (policy["spec"].get("extAuth") or {}).get("http") or {}
            for i, ref in enumerate(http.get("backendRefs") or []):
                if ref.get("kind", "Service") == "Service" and "port" in ref:
                    where = f"spec.extAuth.http.backendRefs[{i}]"
                    yield _Flow(file, where, self.edge, ref["name"], int(ref["port"]), "external auth")

    def _auth_url_flows(self) -> Iterator[_Flow]:
        """The legacy controller calling the verifier (ingress-nginx ``auth-url``)."""
        if self.ingress_controller is None:
            return
        for file, ingress in self.kind("Ingress").values():
            match = _URL.match((ingress["metadata"].get("annotations") or {}).get(AUTH_URL, ""))
            if match:
                where = f"metadata.annotations[{AUTH_URL}]"
                yield _Flow(file, where, self.ingress_controller, match["host"], int(match["port"]), "external auth")

    def _env_flows(self) -> Iterator[_Flow]:
        configmaps = {name: obj.get("data") or {} for name, (_, obj) in self.kind("ConfigMap").items()}
        services = self.kind("Service")
        for pod in self.pods:
            for c, container in enumerate(pod.spec.get("containers") or []):
                # What the process sees: envFrom ConfigMaps, then plain values.
                env: dict[str, str] = {}
                for source in container.get("envFrom") or []:
                    env |= configmaps.get((source.get("configMapRef") or {}).get("name", ""), {})
                env |= {e["name"]: e["value"] for e in container.get("env") or [] if "value" in e}
                for name, value in env.items():
                    path = f"{pod.path}.spec.containers[{c}].env[{name}]"
                    match = _URL.match(value)
                    if match and match["host"].split(".")[0] in services:
                        yield _Flow(pod.file, path, pod, match["host"], int(match["port"]), name)
                    port = env.get(name.removesuffix("_HOST") + "_PORT", "")
                    if name.endswith("_HOST") and value in services and port.isdigit():
                        yield _Flow(pod.file, path, pod, value, int(port), name)

    def _secret_url_flows(self) -> Iterator[_Flow]:
        """URLs that External Secrets templates into a Secret (``REDIS_URL``), as the pods reading them see them."""
        services = self.kind("Service")
        urls: dict[tuple[str, str], str] = {}
        for _, target, _, template in self._external_secrets():
            for key, value in (template.get("data") or {}).items():
                urls[target, key] = value
        for pod in self.pods:
            for c, container in enumerate(pod.spec.get("containers") or []):
                for e, env in enumerate(container.get("env") or []):
                    ref = (env.get("valueFrom") or {}).get("secretKeyRef") or {}
                    match = _URL.match(urls.get((ref.get("name", ""), ref.get("key", "")), ""))
                    if match and match["host"].split(".")[0] in services:
                        path = f"{pod.path}.spec.containers[{c}].env[{e}].valueFrom.secretKeyRef"
                        what = f"{env['name']} (templated into Secret {ref['name']} key {ref['key']!r})"
                        yield _Flow(pod.file, path, pod, match["host"], int(match["port"]), what)

    def _named_service_port(self, service: str, name: str | None) -> int | None:
        entry = self.kind("Service").get(service)
        for p in (entry[1]["spec"].get("ports") or []) if entry else []:
            if p.get("name") == name:
                return int(p["port"])
        return None


# ================================================================ across namespaces: the platform layer

_CLUSTER_DOMAIN = ".cluster.local"


def helm_fullname(release: str, chart: str, values: Mapping[str, Any]) -> str:
    """The ``<chart>.fullname`` helper every ``helm create`` chart (and the charts below) uses."""
    if values.get("fullnameOverride"):
        return str(values["fullnameOverride"])[:63].rstrip("-")
    name = str(values.get("nameOverride") or chart)
    return (release if name in release else f"{release}-{name}")[:63].rstrip("-")


@dataclass(frozen=True)
class PlatformPods:
    """Pods the platform runs: a namespace and their labels, and what they are."""

    namespace: str
    labels: Mapping[str, str]
    what: str


@dataclass
class Platform:
    """What one cluster's platform layer provides, read from its rendered objects, plus its prerequisites.

    The charts' Applications are read with what each upstream chart makes of its values
    (:data:`_CHARTS`); the cluster objects (StorageClass, GatewayClass, ClusterIssuer,
    PodMonitor) as rendered.
    """

    services: dict[str, str] = field(default_factory=dict)
    """``name.namespace.svc:port`` -> who makes it."""
    storage_classes: dict[str, str] = field(default_factory=dict)
    gateway_classes: dict[str, str] = field(default_factory=dict)
    cluster_issuers: dict[str, str] = field(default_factory=dict)
    secret_stores: dict[str, str] = field(default_factory=dict)
    namespaces: dict[str, str] = field(default_factory=dict)
    pods: list[PlatformPods] = field(default_factory=list)
    monitor_selectors: list[Mapping[str, str]] = field(default_factory=list)
    """Label sets a Prometheus selects ServiceMonitors, PodMonitors, Probes and rules by."""
    custom_metrics: dict[str, str] = field(default_factory=dict)
    pod_monitors: list[tuple[str, Obj]] = field(default_factory=list)

    @classmethod
    def read(cls, files: Mapping[str, Obj], prerequisites: Iterable[Mapping[str, Any]] = ()) -> Platform:
        out = cls()
        for file, obj in files.items():
            kind, meta = obj["kind"], obj["metadata"]
            if kind == "Application" and (obj["spec"]["source"].get("chart")):
                out._chart(file, obj)
            elif kind == "StorageClass":
                out.storage_classes[meta["name"]] = file
            elif kind == "GatewayClass":
                out.gateway_classes[meta["name"]] = file
            elif kind == "ClusterIssuer":
                out.cluster_issuers[meta["name"]] = file
            elif kind == "ClusterSecretStore":
                out.secret_stores[meta["name"]] = file
            elif kind == "PodMonitor":
                out.pod_monitors.append((file, obj))
        out._prerequisites(prerequisites)
        for pods in out.pods:
            out.namespaces.setdefault(pods.namespace, pods.what)
        return out

    def _prerequisites(self, prerequisites: Iterable[Mapping[str, Any]]) -> None:
        out = self
        for pre in prerequisites:
            where = "an external prerequisite"
            kind, name = pre["kind"], pre["name"]
            if kind == "StorageClass":
                out.storage_classes.setdefault(name, where)
            elif kind == "ClusterSecretStore":
                out.secret_stores.setdefault(name, where)
            elif kind == "Namespace":
                out.namespaces.setdefault(name, where)
            elif kind == "Pods":
                out.pods.append(PlatformPods(pre["namespace"], dict(pre.get("pod_labels") or {}), where))

    def _chart(self, file: str, app: Obj) -> None:
        source, namespace = app["spec"]["source"], app["spec"]["destination"]["namespace"]
        helm = source.get("helm") or {}
        release, values = helm.get("releaseName") or app["metadata"]["name"], helm.get("valuesObject") or {}
        self.namespaces.setdefault(namespace, file)
        read = _CHARTS.get(source["chart"])
        if read is not None:
            read(self, _Release(file, namespace, release, source["chart"], values))


@dataclass(frozen=True)
class _Release:
    """A chart's Application as Helm sees it."""

    file: str
    ns: str
    release: str
    chart: str
    values: Obj


def _blackbox(p: Platform, r: _Release) -> None:
    file, ns, release, chart, values = r.file, r.ns, r.release, r.chart, r.values
    port = (values.get("service") or {}).get("port", 9115)
    p.services[f"{helm_fullname(release, chart, values)}.{ns}.svc:{port}"] = file
    name = values.get("nameOverride") or chart
    p.pods.append(PlatformPods(ns, {"app.kubernetes.io/name": name}, f"the blackbox exporter ({file})"))


def _kube_prometheus_stack(p: Platform, r: _Release) -> None:
    file, ns, release, chart, values = r.file, r.ns, r.release, r.chart, r.values
    spec = (values.get("prometheus") or {}).get("prometheusSpec") or {}
    full = helm_fullname(release, chart, values)
    p.services[f"{full}-prometheus.{ns}.svc:9090"] = file
    # The operator labels every Prometheus pod app.kubernetes.io/name: prometheus.
    p.pods.append(PlatformPods(ns, {"app.kubernetes.io/name": "prometheus"}, f"Prometheus ({file})"))
    # With *SelectorNilUsesHelmValues (default true) the chart selects release: <release name>.
    if all(spec.get(f"{k}SelectorNilUsesHelmValues", True) for k in ("serviceMonitor", "podMonitor", "probe", "rule")):
        p.monitor_selectors.append({"release": release})
    else:
        p.monitor_selectors.append({})


def _envoy_gateway(p: Platform, r: _Release) -> None:
    file, ns = r.file, r.ns
    # Envoy Gateway runs every proxy in its own namespace, labelled as below (its default deploy mode).
    labels = {"app.kubernetes.io/name": "envoy", "app.kubernetes.io/component": "proxy"}
    p.pods.append(PlatformPods(ns, labels, f"the Envoy proxies ({file})"))


def _prometheus_adapter(p: Platform, r: _Release) -> None:
    file, values = r.file, r.values
    for rule in (values.get("rules") or {}).get("custom") or []:
        name = (rule.get("name") or {}).get("as")
        resources = (rule.get("resources") or {}).get("overrides") or {}
        if name and "pod" in resources:
            p.custom_metrics[name] = file


_CHARTS = {
    "prometheus-blackbox-exporter": _blackbox,
    "kube-prometheus-stack": _kube_prometheus_stack,
    "gateway-helm": _envoy_gateway,
    "prometheus-adapter": _prometheus_adapter,
}
"""Chart -> what it makes of its values, in names the stack can reference."""

MONITOR_KINDS = ("ServiceMonitor", "PodMonitor", "Probe", "PrometheusRule")


class ClusterGate:
    """Every name one environment uses outside its namespace is produced by its cluster's platform."""

    def __init__(self, files: Mapping[str, Obj], *, namespace: str, platform: Platform) -> None:
        self.files = {f: o for f, o in files.items() if f != "kustomization.yaml"}
        self.namespace = namespace
        self.platform = platform
        self.problems_found: list[str] = []

    def _report(self, file: str, path: str, reason: str) -> None:
        self.problems_found.append(f"{file}: {path}: {reason}")

    def problems(self) -> list[str]:
        self.problems_found = []
        p = self.platform
        for file, obj in sorted(self.files.items()):
            kind, spec = obj["kind"], obj.get("spec") or {}
            if kind == "PersistentVolumeClaim":
                self._storage(file, "spec.storageClassName", spec)
            elif kind == "StatefulSet":
                for i, claim in enumerate(spec.get("volumeClaimTemplates") or []):
                    self._storage(file, f"spec.volumeClaimTemplates[{i}].spec.storageClassName", claim["spec"])
            elif kind == "Gateway":
                self._named(file, "spec.gatewayClassName", "GatewayClass", spec["gatewayClassName"], p.gateway_classes)
                self._proxies_scraped(file)
            elif kind == "Certificate" and spec["issuerRef"].get("kind") == "ClusterIssuer":
                self._named(file, "spec.issuerRef.name", "ClusterIssuer", spec["issuerRef"]["name"], p.cluster_issuers)
            elif kind == "ExternalSecret" and spec["secretStoreRef"].get("kind") == "ClusterSecretStore":
                name = spec["secretStoreRef"]["name"]
                self._named(file, "spec.secretStoreRef.name", "ClusterSecretStore", name, p.secret_stores)
            elif kind == "NetworkPolicy":
                self._policy_peers(file, spec)
            elif kind == "HorizontalPodAutoscaler":
                self._custom_metrics(file, spec)
            self._monitor(file, obj)
        return self.problems_found

    def _custom_metrics(self, file: str, spec: Obj) -> None:
        for i, metric in enumerate(spec.get("metrics") or []):
            if metric["type"] == "Pods":
                name = metric["pods"]["metric"]["name"]
                if name not in self.platform.custom_metrics:
                    self._report(
                        file,
                        f"spec.metrics[{i}].pods.metric.name",
                        f"custom metric {name} is served per pod by no prometheus-adapter rule of the platform",
                    )

    def _monitor(self, file: str, obj: Obj) -> None:
        if obj["kind"] == "Probe":
            self._prober(file, obj["spec"])
        if obj["kind"] in MONITOR_KINDS:
            self._selected(file, obj)

    def _named(self, file: str, path: str, kind: str, name: str, provided: Mapping[str, str]) -> None:
        if name not in provided:
            known = ", ".join(sorted(provided)) or "none"
            self._report(
                file,
                path,
                f"{kind} {name} is neither created by the platform layer nor an external prerequisite "
                f"(it has: {known})",
            )

    def _storage(self, file: str, path: str, spec: Obj) -> None:
        from .cluster_platform import DEFAULT_STORAGE_CLASS

        self._named(
            file,
            path,
            "StorageClass",
            spec.get("storageClassName") or DEFAULT_STORAGE_CLASS,
            self.platform.storage_classes,
        )

    def _prober(self, file: str, spec: Obj) -> None:
        url = (spec.get("prober") or {}).get("url", "")
        match = _HOST_PORT.match(url)
        if match is None:
            self._report(file, "spec.prober.url", f"{url!r} is not host:port")
            return
        parts = match["host"].removesuffix(_CLUSTER_DOMAIN).split(".")
        host = ".".join([*parts[:2], "svc"]) if len(parts) >= 2 else match["host"]
        key = f"{host}:{match['port']}"
        if key not in self.platform.services:
            known = ", ".join(sorted(self.platform.services)) or "none"
            self._report(file, "spec.prober.url", f"{url} is no Service of the platform layer (it has: {known})")

    def _selected(self, file: str, obj: Obj) -> None:
        labels = obj["metadata"].get("labels") or {}
        if not any(all(labels.get(k) == v for k, v in sel.items()) for sel in self.platform.monitor_selectors):
            wanted = " or ".join(str(dict(s)) for s in self.platform.monitor_selectors) or "no Prometheus"
            self._report(file, "metadata.labels", f"no Prometheus of the platform selects it (it selects {wanted})")

    def _proxies_scraped(self, file: str) -> None:
        """The edge SLIs read the proxies' metrics: a PodMonitor of the platform must select them."""
        proxies = [pods for pods in self.platform.pods if "Envoy proxies" in pods.what]
        for _, monitor in self.platform.pod_monitors:
            spec, labels = monitor["spec"], monitor["metadata"].get("labels") or {}
            names = (spec.get("namespaceSelector") or {}).get("matchNames") or [monitor["metadata"]["namespace"]]
            selected = any(pods.namespace in names and _matches(spec["selector"], pods.labels) for pods in proxies)
            scraped = any(all(labels.get(k) == v for k, v in s.items()) for s in self.platform.monitor_selectors)
            if selected and scraped:
                return
        self._report(file, "spec.gatewayClassName", "no PodMonitor of the platform scrapes the Envoy proxies it runs")

    def _policy_peers(self, file: str, spec: Obj) -> None:
        for direction, key in (("ingress", "from"), ("egress", "to")):
            for r, rule in enumerate(spec.get(direction) or []):
                for i, peer in enumerate(rule.get(key) or []):
                    ns_selector = peer.get("namespaceSelector")
                    if ns_selector is None:
                        continue
                    namespace = (ns_selector.get("matchLabels") or {}).get(NAMESPACE_LABEL)
                    if namespace is None or namespace == self.namespace:
                        continue
                    path = f"spec.{direction}[{r}].{key}[{i}]"
                    pod_selector = peer.get("podSelector")
                    if namespace not in self.platform.namespaces:
                        self._report(file, path, f"namespace {namespace} is neither the platform's nor a prerequisite")
                    elif pod_selector and not any(
                        pods.namespace == namespace and _matches(pod_selector, pods.labels)
                        for pods in self.platform.pods
                    ):
                        self._report(
                            file,
                            f"{path}.podSelector",
                            f"selects no pods the platform runs in {namespace} "
                            f"({_pods_text(self.platform.pods, namespace)})",
                        )


def _pods_text(pods: Iterable[PlatformPods], namespace: str) -> str:
    there = [f"{p.what}: {dict(p.labels)}" for p in pods if p.namespace == namespace]
    return "; ".join(there) or "none"


def check_chart(
    chart: cdk8s.Chart,
    *,
    prerequisites: Mapping[str, Iterable[str] | None] | None = None,
    scraper: Peer | None = None,
    prober: Peer | None = None,
    edge: Peer | None = None,
    ingress_controller: Peer | None = None,
) -> list[str]:
    """The gate over any chart, one namespace at a time: ``<chart>/<file>: <field path>: <reason>`` lines.

    The chart is rendered first (its constructs' validations run; a failure raises ``SynthError``).
    ``prerequisites`` are the Secrets made outside the chart (by hand, by another tool), each with the
    keys it holds, or ``None`` when they are not known; the peers are as in :class:`Gate`.
    """
    objects = manifests(chart)
    known = {name: frozenset(keys) if keys is not None else None for name, keys in (prerequisites or {}).items()}
    cluster_scoped = {f: o for f, o in objects.items() if not o["metadata"].get("namespace")}
    namespaces = sorted({o["metadata"]["namespace"] for o in objects.values() if o["metadata"].get("namespace")})
    problems = []
    for namespace in namespaces:
        files = {f: o for f, o in objects.items() if o["metadata"].get("namespace") == namespace} | cluster_scoped
        gate = Gate(
            files,
            namespace=namespace,
            prerequisites=known,
            scraper=scraper,
            prober=prober,
            edge=edge,
            ingress_controller=ingress_controller,
        )
        problems += [f"{chart.node.id}/{problem}" for problem in gate.problems()]
    return problems
