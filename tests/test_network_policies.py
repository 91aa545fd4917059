"""Network policies, proven with network-config-analyzer (nca) against the declared connectivity matrix.

nca computes the connectivity the NetworkPolicies actually allow between the
workloads of a set of manifests. The test then checks that

* every flow of :func:`kgstack.network_policies.stack_flows` is permitted;
* nothing else touching our namespace is permitted (completeness), and a listed
  set of pairs is forbidden outright (web -> stores, store -> store, store ->
  internet, other namespaces -> anything);
* every Service port is backed by a declared flow that nca confirms, so a port
  added without a policy fails.

It runs on a chart built here (the real Edge/WebUi/NetworkPolicies plus stand-in
workloads for the tiers and stores) and on every synthesized ``dist/<env>/``.
nca lives in its own venv (``.venvs/nca``, it pins an older networkx than checkov):
``python3 -m venv .venvs/nca && .venvs/nca/bin/pip install network-config-analyzer==2.1.0``.
"""

from __future__ import annotations

import ipaddress
import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cdk8s
import pytest
import yaml
from conftest import ENV_DIRS, ROOT
from tools import missing

from kgstack._plus import int_or_string, k8s
from kgstack.edge import Edge, EdgeProps, EdgeSettings, edge_peer
from kgstack.model import ImageRef, Stage
from kgstack.naming import Identity, object_meta
from kgstack.network_policies import (
    ComponentPeer,
    Flow,
    InternetPeer,
    NamespacePeer,
    NetworkPolicies,
    NetworkPoliciesProps,
    NetworkSettings,
    StackComponents,
    stack_flows,
)
from kgstack.publish import manifests
from kgstack.web_ui import WebUi, WebUiProps

NCA = ROOT / ".venvs" / "nca" / "bin" / "nca"
NS = "kga-test"
RELEASE = Identity(name="kga", instance=NS, version="0.0.0")
SETTINGS = NetworkSettings()
EDGE = edge_peer(EdgeSettings())
"""The gateway's data-plane pods: the only source of public traffic."""
OTHER_NS = "other"
PUBLIC_IP = ipaddress.IPv4Address("8.8.8.8")
PRIVATE_IPS = [
    ipaddress.IPv4Address(a) for a in ("10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1")
]
STORES = {"redis": 6379, "chroma": 8000, "memgraph": 7687}
COMPONENT = "app.kubernetes.io/component"
Manifest = dict[str, Any]


def require_nca() -> Path:
    if not NCA.exists():
        missing(f"{NCA} is missing (scripts/setup.sh test creates .venvs/nca)")
    return NCA


# --- the workloads around the policies ----------------------------------------------------------


def _neighbours() -> list[Manifest]:
    """Namespaces and pods outside our namespace: the controller, Prometheus, DNS and a stranger."""
    out: list[Manifest] = []
    for ns, labels in (
        (EDGE.namespace, dict(EDGE.pod_labels)),
        (SETTINGS.monitoring_namespace, {"app": "prometheus"}),
        (SETTINGS.dns_namespace, dict(SETTINGS.dns_pod_labels)),
        (OTHER_NS, {"app": "stranger"}),
    ):
        out.append(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}},
            }
        )
        out.append(_deployment(ns, labels.get("app", "coredns"), labels, {"p": 53}))
    return out


def _deployment(ns: str, name: str, labels: dict[str, str], ports: dict[str, int]) -> Manifest:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "c",
                            "image": "x",
                            "ports": [{"name": n, "containerPort": p, "protocol": "TCP"} for n, p in ports.items()],
                        }
                    ]
                },
            },
        },
    }


def standin_chart(components: StackComponents) -> list[Manifest]:
    """The real edge, web UI and policies, plus minimal Deployments/Services/CronJob for the rest."""
    app = cdk8s.App()
    chart = cdk8s.Chart(app, "test", disable_resource_name_hashes=True)
    image = ImageRef(repository="nginxinc/nginx-unprivileged", tag="1.30.5-alpine")
    WebUi(
        chart,
        "Web",
        props=WebUiProps(
            identity=RELEASE.of("web"), namespace=NS, image=image, api_base_url="https://kga.test.example.com/api/v1"
        ),
    )
    Edge(
        chart,
        "Edge",
        props=EdgeProps(
            identity=RELEASE,
            namespace=NS,
            stage=Stage.PROD,
            domain="kga.test.example.com",
            auth_image=image,
            web_service=f"{NS}-web",
            query_service=f"{NS}-query",
            indexer_service=f"{NS}-indexer",
        ),
    )
    standins = {
        "query": {"http": 8000},
        "indexer": {"http": 8000},
        "redis": {"redis": 6379, "metrics": 9121},
        "chroma": {"http": 8000},
        "memgraph": {"bolt": 7687},
    }
    for component, ports in standins.items():
        if not getattr(components, component):
            continue
        identity = RELEASE.of(component)
        k8s.KubeDeployment(
            chart,
            f"D-{component}",
            metadata=object_meta(identity, NS),
            spec=k8s.DeploymentSpec(
                selector=k8s.LabelSelector(match_labels=identity.selector),
                template=k8s.PodTemplateSpec(
                    metadata=k8s.ObjectMeta(labels=identity.labels),
                    spec=k8s.PodSpec(
                        containers=[
                            k8s.Container(
                                name="c",
                                image="x",
                                ports=[
                                    k8s.ContainerPort(name=n, container_port=p, protocol="TCP")
                                    for n, p in ports.items()
                                ],
                            )
                        ]
                    ),
                ),
            ),
        )
        k8s.KubeService(
            chart,
            f"S-{component}",
            metadata=object_meta(identity, NS),
            spec=k8s.ServiceSpec(
                selector=identity.selector,
                ports=[k8s.ServicePort(name=n, port=p, target_port=int_or_string(n)) for n, p in ports.items()],
            ),
        )
    if components.backup:
        identity = RELEASE.of("backup")
        k8s.KubeCronJob(
            chart,
            "Backup",
            metadata=object_meta(identity, NS),
            spec=k8s.CronJobSpec(
                schedule="0 3 * * *",
                job_template=k8s.JobTemplateSpec(
                    spec=k8s.JobSpec(
                        template=k8s.PodTemplateSpec(
                            metadata=k8s.ObjectMeta(labels=identity.labels),
                            spec=k8s.PodSpec(restart_policy="Never", containers=[k8s.Container(name="c", image="x")]),
                        )
                    )
                ),
            ),
        )
    NetworkPolicies(
        chart,
        "Net",
        props=NetworkPoliciesProps(
            identity=RELEASE, namespace=NS, settings=SETTINGS, flows=stack_flows(components, SETTINGS, edge=[EDGE])
        ),
    )
    ns = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": NS, "labels": {"kubernetes.io/metadata.name": NS}},
    }
    return [ns, *manifests(chart).values()]


# --- running nca and reading its answer -----------------------------------------------------------


@dataclass(frozen=True)
class Conn:
    src: str
    """``ns/name[Kind]`` or an address range ``a.b.c.d-e.f.g.h``."""
    dst: str
    ports: frozenset[tuple[str, int]] | None
    """(protocol, port) pairs; ``None`` means all connections."""

    def allows(self, protocol: str, port: int) -> bool:
        return self.ports is None or (protocol, port) in self.ports


def _ports(text: str) -> frozenset[tuple[str, int]] | None:
    if "All connections" in text:
        return None
    pairs: set[tuple[str, int]] = set()
    for protocols, ports in re.findall(r"protocols:([A-Z, ]+?),dst_ports:([\d,\-]+)", text):
        for protocol in (x.strip() for x in protocols.split(",")):
            for part in ports.split(","):
                low, _, high = part.partition("-")
                pairs.update((protocol, p) for p in range(int(low), int(high or low) + 1))
    for protocols in re.findall(r"\{protocols:([A-Z, ]+)\}", text):
        pairs.update((protocol.strip(), p) for protocol in protocols.split(",") for p in range(1, 65536))
    assert pairs, f"cannot read nca connection {text!r}"
    return frozenset(pairs)


def connectivity(objects: Iterable[Manifest], tmp: Path) -> list[Conn]:
    nca = require_nca()
    path = tmp / "resources.yaml"
    path.write_text(yaml.safe_dump_all(list(objects), sort_keys=False))
    result = subprocess.run(
        [str(nca), "--connectivity", "-r", str(path), "-o", "txt_no_fw_rules", "--output_endpoints", "deployments"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    conns = []
    for line in result.stdout.splitlines():
        m = re.match(r"^(\S+) => (\S+) : (.+)$", line.strip())
        if m:
            conns.append(Conn(m[1], m[2], _ports(m[3])))
    assert conns, result.stdout + result.stderr
    return conns


def _workload(name: str) -> tuple[str, str] | None:
    m = re.match(r"^([^/\s]+)/([^\[]+)\[\w+\]$", name)
    return (m[1], m[2]) if m else None


def _in_range(name: str, ip: ipaddress.IPv4Address) -> bool:
    if _workload(name) is not None:
        return False
    low, _, high = name.partition("-")
    try:
        return ipaddress.IPv4Address(low) <= ip <= ipaddress.IPv4Address(high or low)
    except ValueError:
        return False


@dataclass
class Cluster:
    """nca's answer plus how to name each peer of the matrix in it."""

    conns: list[Conn]
    namespace: str
    workloads: dict[str, list[str]]
    """component -> ``ns/name[Kind]`` of our workloads (several backup CronJobs share one component)."""
    neighbours: dict[str, str]
    """namespace -> its stand-in workload."""

    def endpoints(self, peer: Any) -> list[str] | None:
        """nca names for a peer; ``None`` for the internet (an address range)."""
        if isinstance(peer, ComponentPeer):
            return self.workloads.get(peer.component, [])
        if isinstance(peer, NamespacePeer):
            return [self.neighbours[peer.namespace]]
        return None

    def permitted(
        self, src: str | ipaddress.IPv4Address, dst: str | ipaddress.IPv4Address, protocol: str, port: int
    ) -> bool:
        def match(name: str, want: str | ipaddress.IPv4Address) -> bool:
            return name == want if isinstance(want, str) else _in_range(name, want)

        return any(match(c.src, src) and match(c.dst, dst) and c.allows(protocol, port) for c in self.conns)

    def any_connection(self, src: str | ipaddress.IPv4Address, dst: str | ipaddress.IPv4Address) -> bool:
        def match(name: str, want: str | ipaddress.IPv4Address) -> bool:
            return name == want if isinstance(want, str) else _in_range(name, want)

        return any(match(c.src, src) and match(c.dst, dst) for c in self.conns)


def analyse(objects: list[Manifest], tmp: Path) -> Cluster:
    ours = [
        o
        for o in objects
        if o["metadata"].get("namespace") and o["kind"] in {"Deployment", "StatefulSet", "CronJob", "DaemonSet", "Job"}
    ]
    namespace = ours[0]["metadata"]["namespace"]
    workloads: dict[str, list[str]] = {}
    for o in ours:
        component = o["metadata"].get("labels", {}).get(COMPONENT)
        if component and o["metadata"]["namespace"] == namespace:
            workloads.setdefault(component, []).append(f"{namespace}/{o['metadata']['name']}[{o['kind']}]")
    neighbours = {
        o["metadata"]["namespace"]: f"{o['metadata']['namespace']}/{o['metadata']['name']}[Deployment]"
        for o in objects
        if o["kind"] == "Deployment" and o["metadata"]["namespace"] != namespace
    }
    return Cluster(connectivity(objects, tmp), namespace, workloads, neighbours)


# --- the checks ------------------------------------------------------------------------------------


def missing_flows(cluster: Cluster, flows: list[Flow]) -> list[str]:
    problems = []
    for flow in flows:
        named_sources, named_destinations = cluster.endpoints(flow.source), cluster.endpoints(flow.destination)
        sources: list[str | ipaddress.IPv4Address] = [*named_sources] if named_sources is not None else [PUBLIC_IP]
        destinations: list[str | ipaddress.IPv4Address] = (
            [*named_destinations] if named_destinations is not None else [PUBLIC_IP]
        )
        for src in sources:
            for dst in destinations:
                for p in flow.ports:
                    if not cluster.permitted(src, dst, p.protocol, p.port):
                        problems.append(f"{flow.purpose}: {src} -> {dst} {p.protocol}/{p.port} is not permitted")
    return problems


def unexpected_connections(cluster: Cluster, flows: list[Flow]) -> list[str]:
    """Every connection touching our namespace must be a declared flow (or DNS)."""
    ours = f"{cluster.namespace}/"
    dns = cluster.neighbours[SETTINGS.dns_namespace]
    problems = []
    for c in cluster.conns:
        if not (c.src.startswith(ours) or c.dst.startswith(ours)):
            continue
        if c.dst == dns and c.ports is not None and c.ports <= {("UDP", 53), ("TCP", 53)}:
            continue
        ports = c.ports if c.ports is not None else frozenset({("ANY", 0)})
        for pair in ports:
            if not any(_covers(cluster, f, c, pair) for f in flows):
                problems.append(f"{c.src} -> {c.dst} {pair[0]}/{pair[1]} is permitted but not declared")
                break
    return problems


def _covers(cluster: Cluster, flow: Flow, c: Conn, pair: tuple[str, int]) -> bool:
    if pair not in {(p.protocol, p.port) for p in flow.ports}:
        return False

    def side(peer: Any, name: str) -> bool:
        names = cluster.endpoints(peer)
        if names is None:  # the internet: a range that is public
            return _workload(name) is None and not any(_in_range(name, ip) for ip in PRIVATE_IPS)
        return name in names

    return side(flow.source, c.src) and side(flow.destination, c.dst)


def forbidden_connections(cluster: Cluster) -> list[str]:
    """Pairs that must have no connection at all, whatever the matrix says."""
    problems = []
    w = cluster.workloads
    stores = [x for s in STORES for x in w.get(s, [])]
    everything = [x for names in w.values() for x in names]
    pairs: list[tuple[str | ipaddress.IPv4Address, str | ipaddress.IPv4Address, str]] = []
    for web in w.get("web", []):
        pairs += [(web, s, "web -> store") for s in stores]
        pairs.append((web, PUBLIC_IP, "web -> internet"))
    pairs += [(a, b, "store -> store") for a in stores for b in stores if a != b]
    pairs += [(s, PUBLIC_IP, "store -> internet") for s in stores]
    stranger = cluster.neighbours[OTHER_NS]
    pairs += [(stranger, x, "other namespace -> us") for x in everything]
    pairs += [(PUBLIC_IP, x, "internet -> us (only via the gateway's data plane)") for x in everything]
    pairs += [(s, ip, "store -> private network") for s in stores for ip in PRIVATE_IPS]
    for src, dst, why in pairs:
        if cluster.any_connection(src, dst):
            problems.append(f"{why}: {src} -> {dst} is permitted")
    return problems


def unguarded_service_ports(objects: list[Manifest], cluster: Cluster, flows: list[Flow]) -> list[str]:
    """Each Service port must reach its pods through a declared flow that nca confirms."""
    problems = []
    pods = {
        o["metadata"]["labels"].get(COMPONENT): o
        for o in objects
        if o["kind"] in {"Deployment", "StatefulSet"} and o["metadata"].get("namespace") == cluster.namespace
    }
    for svc in (o for o in objects if o["kind"] == "Service" and o["metadata"].get("namespace") == cluster.namespace):
        component = svc["spec"].get("selector", {}).get(COMPONENT)
        workload = pods.get(component)
        if workload is None:
            problems.append(f"Service/{svc['metadata']['name']} selects no workload of the matrix")
            continue
        container_ports = {p.get("name"): p["containerPort"] for c in _containers(workload) for p in c.get("ports", [])}
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            number = container_ports.get(target) if isinstance(target, str) else target
            protocol = port.get("protocol", "TCP")
            where = f"Service/{svc['metadata']['name']} port {port.get('name', port['port'])} ({protocol}/{number})"
            if number is None:
                problems.append(f"{where}: targetPort {target} is not a container port")
                continue
            declared = [
                f
                for f in flows
                if f.destination == ComponentPeer(component=component)
                and any(p.port == number and p.protocol == protocol for p in f.ports)
            ]
            if not declared:
                problems.append(f"{where}: no declared flow reaches it")
            elif not any(
                c.dst in cluster.workloads[component] and c.allows(protocol, number) and c.src != c.dst
                for c in cluster.conns
            ):
                problems.append(f"{where}: no NetworkPolicy lets anyone reach it")
    return problems


def _containers(workload: Manifest) -> list[Manifest]:
    spec = workload["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def all_problems(objects: list[Manifest], tmp: Path, flows: list[Flow]) -> list[str]:
    cluster = analyse(objects, tmp)
    return [
        *missing_flows(cluster, flows),
        *unexpected_connections(cluster, flows),
        *forbidden_connections(cluster),
        *unguarded_service_ports(objects, cluster, flows),
    ]


# --- tests -----------------------------------------------------------------------------------------

FULL = StackComponents(memgraph=True)


def test_matrix_holds_on_the_standin_stack(tmp_path: Path) -> None:
    objects = [*standin_chart(FULL), *_neighbours()]
    assert all_problems(objects, tmp_path, stack_flows(FULL, SETTINGS, edge=[EDGE])) == []


def test_matrix_without_optional_stores(tmp_path: Path) -> None:
    present = StackComponents(chroma=False, memgraph=False)
    objects = [*standin_chart(present), *_neighbours()]
    flows = stack_flows(present, SETTINGS, edge=[EDGE])
    assert all_problems(objects, tmp_path, flows) == []
    assert not any(f.destination == ComponentPeer(component="chroma") for f in flows)


def test_a_service_port_without_a_policy_fails(tmp_path: Path) -> None:
    objects = [*standin_chart(FULL), *_neighbours()]
    for o in objects:
        if o["kind"] == "Service" and o["metadata"]["name"] == f"{NS}-redis":
            o["spec"]["ports"].append({"name": "admin", "port": 16379, "targetPort": "admin", "protocol": "TCP"})
        if o["kind"] == "Deployment" and o["metadata"]["name"] == f"{NS}-redis":
            o["spec"]["template"]["spec"]["containers"][0]["ports"].append(
                {"name": "admin", "containerPort": 16379, "protocol": "TCP"}
            )
    problems = all_problems(objects, tmp_path, stack_flows(FULL, SETTINGS, edge=[EDGE]))
    assert any("kga-test-redis port admin" in p and "no declared flow" in p for p in problems), problems


def test_a_too_broad_policy_fails(tmp_path: Path) -> None:
    """The checks can fail: an allow-all on redis is reported as undeclared and forbidden."""
    objects = [*standin_chart(FULL), *_neighbours()]
    objects.append(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "oops", "namespace": NS},
            "spec": {
                "podSelector": {"matchLabels": {COMPONENT: "redis"}},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [{}],
                "egress": [{}],
            },
        }
    )
    problems = all_problems(objects, tmp_path, stack_flows(FULL, SETTINGS, edge=[EDGE]))
    assert any("other namespace -> us" in p for p in problems), problems
    assert any("store -> internet" in p for p in problems), problems
    assert any("not declared" in p for p in problems), problems


def test_flows_need_our_namespace_on_one_side() -> None:
    with pytest.raises(ValueError, match="one side must be a component"):
        Flow(source=NamespacePeer(namespace="a"), destination=InternetPeer(), ports=[{"port": 1}], purpose="x")


def test_internet_excludes_private_and_cluster_ranges() -> None:
    settings = NetworkSettings(cluster_cidrs=["240.0.0.0/4"])
    app = cdk8s.App()
    chart = cdk8s.Chart(app, "t", disable_resource_name_hashes=True)
    NetworkPolicies(
        chart,
        "N",
        props=NetworkPoliciesProps(
            identity=RELEASE, namespace=NS, settings=settings, flows=stack_flows(FULL, settings)
        ),
    )
    policy = manifests(chart)[f"networkpolicy-{NS}-query.yaml"]
    blocks = [to["ipBlock"] for rule in policy["spec"]["egress"] for to in rule["to"] if "ipBlock" in to]
    assert blocks == [
        {
            "cidr": "0.0.0.0/0",
            "except": [
                "10.0.0.0/8",
                "172.16.0.0/12",
                "192.168.0.0/16",
                "100.64.0.0/10",
                "169.254.0.0/16",
                "127.0.0.0/8",
                "240.0.0.0/4",
            ],
        }
    ]
    with pytest.raises(ValueError):
        NetworkSettings(cluster_cidrs=["10.0.0.1/8"])


# --- every synthesized environment --------------------------------------------------------------

DIST_ENVS = ENV_DIRS


def _dist_objects(env: str) -> list[Manifest]:
    return [
        yaml.safe_load(p.read_text())
        for p in sorted((ROOT / "dist" / env).glob("*.yaml"))
        if p.name != "kustomization.yaml"
    ]


@pytest.mark.parametrize("env", DIST_ENVS)
def test_matrix_holds_in_dist(env: str, tmp_path: Path) -> None:
    objects = _dist_objects(env)
    components = {
        o["metadata"].get("labels", {}).get(COMPONENT)
        for o in objects
        if o["kind"] in {"Deployment", "StatefulSet", "CronJob"}
    }
    present = StackComponents(
        **{
            name: name in components
            for name in ("web", "auth", "query", "indexer", "redis", "chroma", "memgraph", "backup")
        }
    )
    assert any(o["kind"] == "NetworkPolicy" for o in objects), f"dist/{env} has no NetworkPolicy yet"
    # Our namespace label as the API server sets it, for nca.
    for o in objects:
        if o["kind"] == "Namespace":
            o["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = o["metadata"]["name"]
    assert all_problems([*objects, *_neighbours()], tmp_path, stack_flows(present, SETTINGS, edge=[EDGE])) == []


def test_edge_traffic_only_from_the_gateway_data_plane(tmp_path: Path) -> None:
    """Another pod of the gateway's namespace (its controller) reaches none of our workloads."""
    controller = _deployment(EDGE.namespace, "envoy-gateway", {"control-plane": "envoy-gateway"}, {"p": 18000})
    objects = [*standin_chart(FULL), controller, *_neighbours()]
    cluster = analyse(objects, tmp_path)
    proxy = cluster.neighbours[EDGE.namespace]
    ours = [x for names in cluster.workloads.values() for x in names]
    stranger = f"{EDGE.namespace}/envoy-gateway[Deployment]"
    assert proxy != stranger
    assert cluster.permitted(proxy, f"{NS}/{NS}-web[Deployment]", "TCP", 8080)
    assert cluster.permitted(proxy, f"{NS}/{NS}-query[Deployment]", "TCP", 8000)
    assert [x for x in ours if cluster.any_connection(stranger, x)] == []
