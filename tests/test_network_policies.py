"""Network policies, proven with network-config-analyzer (nca) against a matrix written out here.

The constructs declare their connections (kgstack.connections) and the policies
are rendered from those declarations; comparing the policies with the same
declarations would prove nothing. So the expected matrix is written out by hand
below (:func:`expected_flows`), and nca computes the connectivity the rendered
NetworkPolicies of ``dist/<env>/`` actually allow. The test checks that

* every expected flow is permitted;
* nothing else touching our namespace is permitted (completeness), and a listed
  set of pairs is forbidden outright (web -> stores, store -> store, store ->
  internet, other namespaces -> anything);
* every Service port is backed by a declared flow that nca confirms, so a port
  added without a policy fails.

It runs on every synthesized ``dist/<env>/``, and on mutated copies to show it can fail.
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

from kgstack.edge import EdgeSettings, edge_peer
from kgstack.naming import Identity
from kgstack.network_policies import (
    ComponentPeer,
    Flow,
    InternetPeer,
    NamespacePeer,
    NetworkPolicies,
    NetworkPoliciesProps,
    NetworkSettings,
    PodsPeer,
    PortSpec,
)
from kgstack.publish import manifests

NCA = ROOT / ".venvs" / "nca" / "bin" / "nca"
NS = "kga-test"
RELEASE = Identity(name="kga", instance=NS, version="0.0.0")
SETTINGS = NetworkSettings()
EDGE = edge_peer(EdgeSettings())
"""The gateway's data-plane pods: the only source of public traffic."""
MONITORING = "monitoring"
PROMETHEUS = {"app.kubernetes.io/name": "prometheus"}
"""prometheus-operator's label on the Prometheus pods: the only scraper."""
BLACKBOX = {"app.kubernetes.io/name": "prometheus-blackbox-exporter"}
"""The blackbox exporter chart's label: the only prober."""
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
    pods = (
        (EDGE.namespace, "envoy", dict(EDGE.pod_labels)),
        (MONITORING, "prometheus", PROMETHEUS),
        (MONITORING, "blackbox", BLACKBOX),
        (MONITORING, "grafana", {"app.kubernetes.io/name": "grafana"}),  # a neighbour that must reach nothing
        (SETTINGS.dns_namespace, "coredns", dict(SETTINGS.dns_pod_labels)),
        (OTHER_NS, "stranger", {"app": "stranger"}),
    )
    for ns in dict.fromkeys(ns for ns, _, _ in pods):
        out.append(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}},
            }
        )
    out += [_deployment(ns, name, labels, {"p": 53}) for ns, name, labels in pods]
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
    """namespace -> its first stand-in workload."""
    neighbour_pods: list[tuple[str, str, dict[str, str]]]
    """(namespace, ``ns/name[Kind]``, pod labels) of every stand-in outside our namespace."""

    def endpoints(self, peer: Any) -> list[str] | None:
        """nca names for a peer; ``None`` for the internet (an address range)."""
        if isinstance(peer, ComponentPeer):
            return self.workloads.get(peer.key, [])
        if isinstance(peer, PodsPeer):
            return []  # created at run time by another controller; the analyzer sees no such workload
        if isinstance(peer, NamespacePeer):
            return [
                name
                for ns, name, labels in self.neighbour_pods
                if ns == peer.namespace and labels.items() >= peer.pod_labels.items()
            ]
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


def _pod_labels(workload: Manifest) -> dict[str, str]:
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return dict(spec["template"]["metadata"].get("labels", {}))


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
        pod = _pod_labels(o)
        if STORE_LABEL in pod:  # one backup CronJob per store, each with its own policy
            component = f"{component}-{pod[STORE_LABEL]}"
        if component and o["metadata"]["namespace"] == namespace:
            workloads.setdefault(component, []).append(f"{namespace}/{o['metadata']['name']}[{o['kind']}]")
    outside = [
        (
            o["metadata"]["namespace"],
            f"{o['metadata']['namespace']}/{o['metadata']['name']}[Deployment]",
            _pod_labels(o),
        )
        for o in objects
        if o["kind"] == "Deployment" and o["metadata"]["namespace"] != namespace
    ]
    neighbours: dict[str, str] = {}
    for ns, name, _ in outside:
        neighbours.setdefault(ns, name)
    return Cluster(connectivity(objects, tmp), namespace, workloads, neighbours, outside)


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
    grafana = f"{MONITORING}/grafana[Deployment]"
    pairs += [(grafana, x, "a monitoring pod that is neither Prometheus nor the prober -> us") for x in everything]
    pairs += [(PUBLIC_IP, x, "internet -> us (only via the ingress controller)") for x in everything]
    pairs += [(s, ip, "store -> private network") for s in stores for ip in PRIVATE_IPS]
    for store in STORES:  # a backup run reaches its own store only
        for run in w.get(f"backup-{store}", []):
            pairs += [
                (run, x, "backup -> another store") for other in STORES if other != store for x in w.get(other, [])
            ]
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
                if isinstance(f.destination, ComponentPeer)
                and f.destination.key == component
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


# --- the expected matrix, written out (not imported from the constructs) ----------------------------

STORE_LABEL = "kga.dev/store"


def expected_flows(components: set[str]) -> list[Flow]:
    """Every connection the stack needs, given the workloads present; nothing else is allowed."""
    edge = EDGE
    prometheus = NamespacePeer(namespace=MONITORING, pod_labels=PROMETHEUS)
    blackbox = NamespacePeer(namespace=MONITORING, pod_labels=BLACKBOX)
    internet = InternetPeer()

    def c(component: str, **labels: str) -> ComponentPeer:
        return ComponentPeer(component=component, pod_labels=labels)

    def flow(source: Any, destination: Any, *ports: int) -> Flow:
        return Flow(source=source, destination=destination, ports=[PortSpec(port=p) for p in ports], purpose="x")

    stores = {"redis": 6379, "chroma": 8000, "memgraph": 7687}
    present = {s: p for s, p in stores.items() if s in components}
    solver = PodsPeer(name="acme-solver", pod_labels={"acme.cert-manager.io/http01-solver": "true"})
    flows = [
        flow(edge, c("web"), 8080),
        flow(edge, solver, 8089),  # cert-manager's HTTP-01 solver pod, started in our namespace on demand
        flow(edge, c("auth"), 8080, 8081),  # the verifier and the deny backend of blocked paths
        flow(prometheus, c("redis"), 9121),  # redis_exporter
        # blackbox probes of the UI's and the verifier's /healthz: a dead verifier fails every request
        flow(blackbox, c("web"), 8080),
        flow(blackbox, c("auth"), 8080),
    ]
    for tier in ("query", "indexer"):
        flows += [flow(edge, c(tier), 8000), flow(blackbox, c(tier), 8000), flow(c(tier), internet, 443)]
        flows.append(flow(prometheus, c(tier), 8001))  # the runtime layer's /metrics on its side port
        flows += [flow(c(tier), c(store), port) for store, port in present.items()]
    if "reindex" in components:  # the scheduled re-index job calls the indexer's API, nothing else
        flows.append(flow(c("reindex"), c("indexer"), 8000))
    for store, port in present.items():
        flows += [flow(c("backup", **{STORE_LABEL: store}), c(store), port)]
        flows += [flow(c("backup", **{STORE_LABEL: store}), internet, 443)]
        if store != "redis":  # blackbox: Chroma's heartbeat over HTTP, Memgraph's bolt port over TCP
            flows.append(flow(blackbox, c(store), port))
            # The indexer writes these two: their backups read its commit tracker and workflows.
            flows.append(flow(c("backup", **{STORE_LABEL: store}), c("indexer"), 8000))
    return flows


def _dist_objects(env: str) -> list[Manifest]:
    objects = [
        yaml.safe_load(p.read_text())
        for p in sorted((ROOT / "dist" / env).glob("*.yaml"))
        if p.name != "kustomization.yaml"
    ]
    # Our namespace label as the API server sets it, for nca.
    for o in objects:
        if o["kind"] == "Namespace":
            o["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = o["metadata"]["name"]
    return objects


def _dicts(node: Any) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        out.append(("", node))
        for value in node.values():
            out += _dicts(value)
    elif isinstance(node, list):
        for value in node:
            out += _dicts(value)
    return out


def _components(objects: list[Manifest]) -> set[str]:
    return {
        o["metadata"].get("labels", {}).get(COMPONENT)
        for o in objects
        if o["kind"] in {"Deployment", "StatefulSet", "CronJob"}
    }


# --- tests -----------------------------------------------------------------------------------------

DIST_ENVS = ENV_DIRS


@pytest.mark.parametrize("env", DIST_ENVS)
def test_matrix_holds_in_dist(env: str, tmp_path: Path) -> None:
    objects = _dist_objects(env)
    assert any(o["kind"] == "NetworkPolicy" for o in objects), f"dist/{env} has no NetworkPolicy yet"
    assert all_problems([*objects, *_neighbours()], tmp_path, expected_flows(_components(objects))) == []


def test_a_service_port_without_a_policy_fails(tmp_path: Path) -> None:
    objects = _dist_objects("staging")
    for o in objects:
        if o["kind"] == "Service" and o["metadata"]["name"] == "kga-staging-redis":
            o["spec"]["ports"].append({"name": "admin", "port": 16379, "targetPort": "admin", "protocol": "TCP"})
        if o["kind"] == "StatefulSet" and o["metadata"]["name"] == "kga-staging-redis":
            o["spec"]["template"]["spec"]["containers"][0]["ports"].append(
                {"name": "admin", "containerPort": 16379, "protocol": "TCP"}
            )
    problems = all_problems([*objects, *_neighbours()], tmp_path, expected_flows(_components(objects)))
    assert any("kga-staging-redis port admin" in p and "no declared flow" in p for p in problems), problems


def test_a_too_broad_policy_fails(tmp_path: Path) -> None:
    """The checks can fail: an allow-all on redis is reported as undeclared and forbidden."""
    objects = _dist_objects("staging")
    objects.append(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "oops", "namespace": "kga-staging"},
            "spec": {
                "podSelector": {"matchLabels": {COMPONENT: "redis"}},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [{}],
                "egress": [{}],
            },
        }
    )
    problems = all_problems([*objects, *_neighbours()], tmp_path, expected_flows(_components(objects)))
    assert any("other namespace -> us" in p for p in problems), problems
    assert any("store -> internet" in p for p in problems), problems
    assert any("not declared" in p for p in problems), problems


def test_edge_traffic_only_from_the_gateway_data_plane(tmp_path: Path) -> None:
    """Another pod of the gateway's namespace (its controller) reaches none of our workloads."""
    controller = _deployment(EDGE.namespace, "envoy-gateway", {"control-plane": "envoy-gateway"}, {"p": 18000})
    cluster = analyse([*_dist_objects("staging"), controller, *_neighbours()], tmp_path)
    (proxy,) = cluster.endpoints(EDGE) or [""]
    ours = [x for names in cluster.workloads.values() for x in names]
    stranger = f"{EDGE.namespace}/envoy-gateway[Deployment]"
    assert proxy != stranger
    assert cluster.permitted(proxy, "kga-staging/kga-staging-web[Deployment]", "TCP", 8080)
    assert cluster.permitted(proxy, "kga-staging/kga-staging-query[Deployment]", "TCP", 8000)
    assert [x for x in ours if cluster.any_connection(stranger, x)] == []


def test_a_backup_run_reaching_another_store_fails(tmp_path: Path) -> None:
    """Issue 9 defect 11: the old shared backup policy let every run reach every store."""
    objects = _dist_objects("staging")
    for o in objects:  # the old rendering: one selector for every backup run, in policies and peers
        if o["kind"] == "NetworkPolicy":
            for _, node in _dicts(o["spec"]):
                node.get("matchLabels", {}).pop(STORE_LABEL, None)
    problems = forbidden_connections(analyse([*objects, *_neighbours()], tmp_path))
    assert any("backup -> another store" in p for p in problems), problems


def test_a_missing_probe_flow_fails(tmp_path: Path) -> None:
    """Issue 9 defect 4: the Memgraph probe's flow was missing and nothing noticed."""
    objects = _dist_objects("staging")
    for o in objects:
        if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == "kga-staging-memgraph":
            o["spec"]["ingress"] = [
                r
                for r in o["spec"]["ingress"]
                if r["ports"][0]["port"] != 7687 or "namespaceSelector" not in r["from"][0]
            ]
    problems = all_problems([*objects, *_neighbours()], tmp_path, expected_flows(_components(objects)))
    assert any("monitoring" in p and "7687 is not permitted" in p for p in problems), problems


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
            identity=RELEASE,
            namespace=NS,
            settings=settings,
            flows=[
                Flow(
                    source=ComponentPeer(component="query"),
                    destination=InternetPeer(),
                    ports=[PortSpec(port=443)],
                    purpose="x",
                )
            ],
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


def test_the_acme_solver_is_reachable_from_the_edge_only(tmp_path: Path) -> None:
    """Second review, finding 2: default-deny failed every HTTP-01 issuance; the solver pod now gets one flow."""
    solver = _deployment(
        "kga-staging", "cm-acme-http-solver", {"acme.cert-manager.io/http01-solver": "true"}, {"http": 8089}
    )
    cluster = analyse([*_dist_objects("staging"), solver, *_neighbours()], tmp_path)
    (proxy,) = cluster.endpoints(EDGE) or [""]
    target = "kga-staging/cm-acme-http-solver[Deployment]"
    assert cluster.permitted(proxy, target, "TCP", 8089)
    assert not cluster.any_connection(cluster.neighbours[OTHER_NS], target)
    assert not cluster.any_connection(f"{MONITORING}/grafana[Deployment]", target)
