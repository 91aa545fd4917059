"""dist/dev on a real Kubernetes node (tests/real_node.py), issue 18: containers under a kubelet, with the
rendered security contexts, mounts, volumes, probes, Services, cluster DNS and NetworkPolicies.

The expected network flows are the ones the constructs declare (kgstack.connections), read from the chart;
the cluster enforces the policies rendered from them, and real pods try every pair.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from argo_sync import SyncStuckError, read_folder, table
from conftest import ROOT, build
from control_plane import wait_all_ready
from real_node import (
    NODE_IP,
    DistSync,
    FakeS3,
    HostState,
    Node,
    apply_dist,
    apply_one_off,
    dist_hosts,
    fake_openai,
    fake_s3,
    first_sync_problems,
    local,
    node_lock,
    real_node,
    require_node,
    s3_target,
    workload_images,
)
from tools import missing

from kgstack import Environment
from kgstack.connections import Connections
from kgstack.network_policies import ComponentPeer, Flow, NamespacePeer

pytestmark = [pytest.mark.slow, pytest.mark.go_build("control-plane", "node")]
ENV = "dev"
PROBE = "kga-probe"
OUTSIDER = "kga-node-outsider"
"""A namespace no flow names."""


def _objects(kind: str) -> list[dict[str, Any]]:
    prefix = kind.lower()
    return [yaml.safe_load(p.read_text()) for p in sorted((ROOT / "dist" / ENV).glob(f"{prefix}-*.yaml"))]


NAMESPACE = _objects("Namespace")[0]["metadata"]["name"]


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    """The node with the local build of every image dist/dev runs; cluster DNS answers its model provider's
    and its backups' S3 endpoint's names with the host's servers."""
    require_node()
    with real_node(workload_images(ENV), dist_hosts(ENV)) as started:
        print(f"\n[real node] {', '.join(f'{k} {v:.0f}s' for k, v in started.timings.items())}")
        yield started


@pytest.fixture(scope="module")
def synced(node: Node) -> DistSync:
    """dist/dev deployed through the image overlay as Argo CD's first sync: wave by wave, each gated on
    Argo CD's health rules (tests/argo_sync.py)."""
    start = time.monotonic()
    try:
        result = apply_dist(node, ENV)
    except SyncStuckError as err:
        raise AssertionError(f"{err}\npods:\n{_pod_report(node)}") from None
    node.timings["first sync"] = time.monotonic() - start
    print(f"\n[real node] first sync of dist/{ENV} in {node.timings['first sync']:.0f}s:\n{table(result.waves)}")
    return result


@pytest.fixture(scope="module")
def ready(node: Node, synced: DistSync) -> Node:
    """dist/dev synced with no warning or rejection, every workload Ready."""
    assert synced.problems == []
    start = time.monotonic()
    try:
        wait_all_ready(node.cp, NAMESPACE, timeout=600)
    except AssertionError as err:
        raise AssertionError(f"{err}\npods:\n{_pod_report(node)}") from None
    node.timings["dist ready"] = time.monotonic() - start
    print(f"\n[real node] dist/{ENV} Ready in {node.timings['dist ready']:.0f}s")
    return node


def _pod_report(node: Node) -> str:
    out = node.cp.kubectl.run("get", "pods", "-A", "-o", "wide")
    return out.stdout + out.stderr


# -- the host ----------------------------------------------------------------------------------------------


def test_host_state_puts_back_what_a_node_changes(tmp_path: Path) -> None:
    """What the node's teardown relies on, on the kinds of change a node makes: a link, an address, an
    iptables chain in a table of its own, an ipset, a sysctl the kubelet sets, a mount, a cgroup."""
    require_node()
    with node_lock():
        before = HostState.now(tmp_path)
        sysctl = Path("/proc/sys/vm/overcommit_memory")
        try:
            subprocess.run(["ip", "link", "add", "kga-test0", "type", "bridge"], check=True)
            subprocess.run(["ip", "addr", "add", f"{NODE_IP}/32", "dev", "lo"], check=True)
            subprocess.run(["iptables", "-t", "mangle", "-N", "KGA-TEST"], check=True)
            subprocess.run(["iptables", "-t", "mangle", "-A", "PREROUTING", "-j", "KGA-TEST"], check=True)
            subprocess.run(["ipset", "create", "kga-test", "hash:ip"], check=True)
            sysctl.write_text("1" if sysctl.read_text().strip() != "1" else "0")
            (tmp_path / "mnt").mkdir()
            subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(tmp_path / "mnt")], check=True)
            Path("/sys/fs/cgroup/memory/kga-host-state-test").mkdir()
            changed = before.differences()
            assert len(changed) == 7, changed
        finally:
            before.restore()
        assert before.differences() == []


# -- dist/dev runs -------------------------------------------------------------------------------------------


def test_every_workload_reaches_ready_under_restricted_pod_security_quota_and_limitrange(ready: Node) -> None:
    cp = ready.cp
    labels = cp.get(f"/api/v1/namespaces/{NAMESPACE}")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    (quota,) = cp.items(f"/api/v1/namespaces/{NAMESPACE}/resourcequotas")
    assert quota["status"]["used"]["pods"] != "0"
    (limits,) = cp.items(f"/api/v1/namespaces/{NAMESPACE}/limitranges")
    assert limits["metadata"]["name"] == _objects("LimitRange")[0]["metadata"]["name"]
    # Every container of every pod runs as the rendered user, on a volume bound by the node's class.
    for pod in cp.items(f"/api/v1/namespaces/{NAMESPACE}/pods"):
        if pod["status"].get("phase") != "Running":
            continue
        statuses = pod["status"]["containerStatuses"]
        assert all(s["ready"] for s in statuses), (pod["metadata"]["name"], statuses)
    claims = cp.items(f"/api/v1/namespaces/{NAMESPACE}/persistentvolumeclaims")
    assert claims and all(c["status"]["phase"] == "Bound" for c in claims), claims
    assert ready.provisioner_errors == []


RULES = {
    # The gitops-engine function (pkg/health) each kind's health is read by, as tests/argo_sync.py cites it.
    "Deployment": "pkg/health/health_deployment.go getAppsv1DeploymentHealth",
    "StatefulSet": "pkg/health/health_statefulset.go getAppsv1StatefulSetHealth",
    "PersistentVolumeClaim": "pkg/health/health_pvc.go getCorev1PVCHealth",
}


def test_dist_dev_first_sync_completed_wave_by_wave_under_argo_health_rules(ready: Node, synced: DistSync) -> None:
    """Issue 24: the first sync of dist/dev completes on a real node, wave by wave, none skipped, each wave
    healthy by Argo CD's rules before the next; the indexer's claim, under the node's WaitForFirstConsumer
    class, binds (Healthy) in the wave of the Deployment that mounts it; every workload is gated by its kind's
    rule, not passed as a kind without a check. dist/staging and dist/prod: tests/test_real_cluster.py."""
    assert first_sync_problems(ready, ENV, synced, RULES) == []
    assert [o for o in read_folder(ROOT / "dist" / ENV) if o["kind"] == "PersistentVolumeClaim"]


PYTHON_REACHES_STORES = """
import json, os, urllib.parse, urllib.request
import redis
chroma = f"http://{os.environ['CHROMA_HOST']}:{os.environ['CHROMA_PORT']}/api/v2/heartbeat"
with urllib.request.urlopen(chroma, timeout=10) as response:
    beat = json.load(response)
client = redis.Redis.from_url(os.environ["REDIS_URL"], socket_timeout=10)
host = urllib.parse.urlsplit(os.environ["REDIS_URL"]).hostname
print(json.dumps({"chroma": beat, "redis": client.ping(), "redis_host": host}))
"""


@pytest.mark.parametrize("component", ["query", "indexer"])
def test_the_agent_reaches_chroma_and_redis_by_their_service_names(ready: Node, component: str) -> None:
    """With its own settings (ConfigMap and Secret as rendered): cluster DNS, Services, kube-proxy, the
    NetworkPolicies and Redis's ACL user together."""
    pod = _running_pod(ready, NAMESPACE, {"app.kubernetes.io/component": component})
    out = ready.cp.kubectl.ok("exec", "-n", NAMESPACE, pod, "-c", "agent", "--", "python", "-c", PYTHON_REACHES_STORES)
    seen = json.loads(out)
    assert "nanosecond heartbeat" in seen["chroma"] and seen["redis"] is True
    assert "." not in seen["redis_host"]  # a Service name, resolved through the pod's search path


# -- NetworkPolicy, from real pods ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def flows(environments: dict[str, Environment]) -> list[Flow]:
    """The connections dist/dev's chart declares (the policies are rendered from them)."""
    _, stack = build(environments[ENV])
    return [f for f in Connections.of(stack).flows if all(p.protocol == "TCP" for p in f.ports)]


def _services() -> dict[str, list[tuple[str, int]]]:
    """``{component: [(service, port)]}`` of every Service of dist/dev."""
    out: dict[str, list[tuple[str, int]]] = {}
    for svc in _objects("Service"):
        component = svc["spec"]["selector"]["app.kubernetes.io/component"]
        out.setdefault(component, []).extend((svc["metadata"]["name"], p["port"]) for p in svc["spec"]["ports"])
    return out


def _running_pod(node: Node, namespace: str, labels: dict[str, str]) -> str:
    selector = ",".join(f"{k}={v}" for k, v in labels.items())
    pods = [
        p
        for p in node.cp.items(f"/api/v1/namespaces/{namespace}/pods", labelSelector=selector)
        if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
    ]
    assert pods, f"no running pod with {selector} in {namespace}"
    return str(pods[0]["metadata"]["name"])


PROBE_SCRIPT = """
import concurrent.futures, json, socket, sys
def one(target):
    host, port = target.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=3):
            return target, "open"
    except socket.timeout:
        return target, "timeout"
    except OSError as err:
        return target, f"{type(err).__name__}: {err}"
with concurrent.futures.ThreadPoolExecutor(32) as pool:
    print(json.dumps(dict(pool.map(one, sys.argv[1:]))))
"""


class Prober:
    """Opens TCP connections from inside real pods: an ephemeral container (kubectl debug, restricted
    profile) in a workload's pod, so it has the pod's address and labels; or a pod of its own elsewhere."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.ready: set[tuple[str, str]] = set()

    def _attach(self, namespace: str, pod: str) -> None:
        if (namespace, pod) in self.ready:
            return
        kubectl = self.node.cp.kubectl
        kubectl.ok(
            "debug", "-n", namespace, pod, f"--image={local('probe')}", "--image-pull-policy=Never",
            "--profile=restricted", "-c", PROBE, "--attach=false", "--quiet",
        )  # fmt: skip

        def running() -> bool:
            obj = self.node.cp.get(f"/api/v1/namespaces/{namespace}/pods/{pod}")
            states = {s["name"]: s["state"] for s in obj["status"].get("ephemeralContainerStatuses", [])}
            return "running" in states.get(PROBE, {})

        self.node.wait(f"the probe container in {namespace}/{pod}", running, 60)
        self.ready.add((namespace, pod))

    def pod_elsewhere(self, namespace: str, labels: dict[str, str]) -> str:
        """A probe pod of its own in ``namespace`` (created when missing) with ``labels``."""
        cp = self.node.cp
        if cp.api.get(f"/api/v1/namespaces/{namespace}").status_code == 404:
            cp.api.post("/api/v1/namespaces", json={"metadata": {"name": namespace}}).raise_for_status()
        name = f"{PROBE}-{abs(hash(tuple(sorted(labels.items())))) % 10**8}"
        if cp.api.get(f"/api/v1/namespaces/{namespace}/pods/{name}").status_code == 404:
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": namespace, "labels": labels},
                "spec": {
                    "automountServiceAccountToken": False,
                    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [
                        {
                            "name": PROBE,
                            "image": local("probe"),
                            "imagePullPolicy": "Never",
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "capabilities": {"drop": ["ALL"]},
                                "readOnlyRootFilesystem": True,
                            },
                        }
                    ],
                },
            }
            cp.api.post(f"/api/v1/namespaces/{namespace}/pods", json=pod).raise_for_status()

        def running() -> bool:
            obj = cp.get(f"/api/v1/namespaces/{namespace}/pods/{name}")
            return bool(obj["status"].get("phase") == "Running")

        self.node.wait(f"probe pod {namespace}/{name}", running, 60)
        self.ready.add((namespace, name))
        return name

    def connect(self, namespace: str, pod: str, targets: list[str]) -> dict[str, str]:
        """``{"host:port": "open" | why not}`` from ``pod``; ``host`` resolves through the pod's DNS."""
        self._attach(namespace, pod)
        out = self.node.cp.kubectl.ok(
            "exec", "-n", namespace, pod, "-c", PROBE, "--", "python3", "-c", PROBE_SCRIPT, *targets
        )
        return dict(json.loads(out))


@pytest.fixture(scope="module")
def prober(ready: Node) -> Prober:
    return Prober(ready)


def _source_pod(prober: Prober, flow_source: ComponentPeer | NamespacePeer) -> tuple[str, str] | None:
    """(namespace, pod) standing for a flow's source: a running pod of the component, or a probe pod in
    the other namespace with the peer's labels; ``None`` when none runs here (a CronJob's)."""
    if isinstance(flow_source, NamespacePeer):
        return flow_source.namespace, prober.pod_elsewhere(flow_source.namespace, dict(flow_source.pod_labels))
    labels = {"app.kubernetes.io/component": flow_source.component, **flow_source.pod_labels}
    selector = ",".join(f"{k}={v}" for k, v in labels.items())
    pods = prober.node.cp.items(f"/api/v1/namespaces/{NAMESPACE}/pods", labelSelector=selector)
    running = [p["metadata"]["name"] for p in pods if p["status"].get("phase") == "Running"]
    return (NAMESPACE, running[0]) if running else None


def test_every_declared_flow_connects_from_a_real_pod(prober: Prober, flows: list[Flow]) -> None:
    services = _services()
    tried, skipped, failed = [], [], []
    for flow in flows:
        if not isinstance(flow.destination, ComponentPeer) or not isinstance(
            flow.source, ComponentPeer | NamespacePeer
        ):
            skipped.append(flow.purpose)
            continue
        source = _source_pod(prober, flow.source)
        ports = {p.port for p in flow.ports}
        targets = [
            f"{svc}.{NAMESPACE}:{port}" for svc, port in services.get(flow.destination.component, []) if port in ports
        ]
        if source is None or not targets:
            skipped.append(flow.purpose)
            continue
        seen = prober.connect(*source, targets)
        tried.append(flow.purpose)
        failed += [f"{flow.purpose}: {source[1]} -> {t}: {r}" for t, r in seen.items() if r != "open"]
    print(f"\n[real node] declared flows tried: {len(tried)}; not from a running pod: {skipped}")
    assert tried and failed == []


def _allowed(flows: list[Flow], source: ComponentPeer | NamespacePeer, component: str, port: int) -> bool:
    return any(
        f.source == source and isinstance(f.destination, ComponentPeer) and f.destination.component == component
        and any(p.port == port for p in f.ports)
        for f in flows
    )  # fmt: skip


def test_every_undeclared_flow_between_running_components_is_refused(prober: Prober, flows: list[Flow]) -> None:
    """Each running component against every Service port of the namespace: open exactly where a flow is
    declared (the web pod reaching Chroma, say, is refused)."""
    services = _services()
    wrong, opened, refused = [], 0, 0
    for component in services:
        source = ComponentPeer(component=component)
        pod = _source_pod(prober, source)
        if pod is None:
            continue
        targets = {
            f"{svc}.{NAMESPACE}:{port}": _allowed(flows, source, dest, port)
            for dest, ports in services.items()
            for svc, port in ports
            if dest != component
        }
        for target, result in prober.connect(*pod, sorted(targets)).items():
            opened, refused = opened + (result == "open"), refused + (result != "open")
            if (result == "open") != targets[target]:
                wrong.append(f"{component} -> {target}: {result}, declared: {targets[target]}")
    print(f"\n[real node] pod to Service port: {opened} open (declared), {refused} refused (undeclared)")
    assert wrong == []
    assert opened and refused
    web_to_chroma = [
        t for t in _services()["chroma"] if not _allowed(flows, ComponentPeer(component="web"), "chroma", t[1])
    ]
    assert web_to_chroma, "the web UI must not be declared to reach Chroma"


def test_a_pod_of_another_namespace_reaches_no_service_port(prober: Prober) -> None:
    pod = prober.pod_elsewhere(OUTSIDER, {"app.kubernetes.io/name": "outsider"})
    targets = [f"{svc}.{NAMESPACE}:{port}" for ports in _services().values() for svc, port in ports]
    seen = prober.connect(OUTSIDER, pod, targets)
    print(f"\n[real node] from {OUTSIDER}: {len(seen)} Service ports, {sorted(set(seen.values()))}")
    assert [t for t, r in seen.items() if r == "open"] == []
    # Refused by policy, not unresolvable: the names resolve from there too.
    assert not any("gaierror" in r for r in seen.values()), seen


# -- a query through the Service ---------------------------------------------------------------------------

QUERY = """
import json, sys, urllib.request
answers = []
for _ in range(2):
    request = urllib.request.Request(
        sys.argv[1], data=json.dumps({"query": "What does the indexer do?"}).encode(),
        headers={"Content-Type": "application/json"}, method="POST",
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        answers.append(json.load(response))
print(json.dumps(answers))
"""


@pytest.fixture(scope="module")
def provider(ready: Node) -> Iterator[Any]:
    with fake_openai(ready.workdir) as fake:
        yield fake


def _from_the_edge_to_the_query_tier(prober: Prober, flows: list[Flow]) -> tuple[str, str, str, int]:
    """Namespace and name of a pod with the labels of the declared edge → query flow, and the query
    Service and port it calls."""
    (edge,) = [
        f.source
        for f in flows
        if isinstance(f.source, NamespacePeer)
        and f.source.pod_labels.get("app.kubernetes.io/name") == "envoy"
        and f.destination == ComponentPeer(component="query")
    ]
    pod = prober.pod_elsewhere(edge.namespace, dict(edge.pod_labels))
    ((service, port),) = [(s, p) for s, p in _services()["query"] if p == 8000]
    return edge.namespace, pod, service, port


def test_the_agent_answers_a_query_through_its_service(prober: Prober, flows: list[Flow], provider: Any) -> None:
    """From the edge's proxy (as the flows name it) to the query Service: the stand-in app embeds the
    question, searches Chroma, asks the model (a fake provider at its public name) and caches the answer
    in Redis, so the same question again is answered without the model, by whichever replica."""
    (config,) = [c for c in _objects("ConfigMap") if c["metadata"]["labels"]["app.kubernetes.io/component"] == "agent"]
    assert "LLM_API_BASE_URL" not in config["data"], "dist/dev names its own provider: point the fake there"
    namespace, pod, service, port = _from_the_edge_to_the_query_tier(prober, flows)
    url = f"http://{service}.{NAMESPACE}:{port}/api/v1/query"
    out = prober.node.cp.kubectl.ok("exec", "-n", namespace, pod, "-c", PROBE, "--", "python3", "-c", QUERY, url)
    first, second = json.loads(out)
    assert first["response"].startswith("fake answer") and second["response"] == first["response"]
    assert provider.calls["chat"] == 1, provider.calls  # the second answer came from Redis
    assert provider.calls["embeddings"] >= 1


# -- disruption ------------------------------------------------------------------------------------------------

STEADY = """
import json, sys, threading, time, urllib.request
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
ok, failed = 0, []
while not stop.is_set():
    try:
        with urllib.request.urlopen(sys.argv[1], timeout=10) as response:
            ok += response.status == 200
    except Exception as err:
        failed.append(f"{time.strftime('%X')} {type(err).__name__}: {err}")
    time.sleep(0.05)
print(json.dumps({"ok": ok, "failed": failed}))
"""


def test_a_rolling_update_of_the_query_tier_under_steady_requests_loses_none(prober: Prober, flows: list[Flow]) -> None:
    namespace, pod, service, port = _from_the_edge_to_the_query_tier(prober, flows)
    kubectl = prober.node.cp.kubectl
    stream = subprocess.Popen(
        [*_kubectl_argv(prober.node), "exec", "-i", "-n", namespace, pod, "-c", PROBE, "--",
         "python3", "-c", STEADY, f"http://{service}.{NAMESPACE}:{port}/api/v1/health"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        time.sleep(3)
        (deployment,) = [
            d["metadata"]["name"]
            for d in _objects("Deployment")
            if d["metadata"]["labels"]["app.kubernetes.io/component"] == "query"
        ]
        kubectl.ok("rollout", "restart", "-n", NAMESPACE, f"deployment/{deployment}")
        kubectl.ok("rollout", "status", "-n", NAMESPACE, f"deployment/{deployment}", "--timeout=300s", timeout=320)
        time.sleep(3)
    finally:
        out, err = stream.communicate("", timeout=60)
    seen = json.loads(out)
    print(f"\n[real node] rolling update of {deployment}: {seen['ok']} requests answered, {len(seen['failed'])} lost")
    assert seen["ok"] > 20 and seen["failed"] == [], err


def _kubectl_argv(node: Node) -> list[str]:
    from control_plane import BIN

    return [str(BIN / "kubectl"), "--kubeconfig", str(node.cp.kubectl.kubeconfig)]


def test_a_killed_pod_of_every_workload_is_replaced(ready: Node) -> None:
    cp = ready.cp
    killed = {}
    for key, workload in cp.workloads(NAMESPACE).items():
        (victim, *_) = cp.pods_of(NAMESPACE, workload)
        killed[key] = victim["metadata"]["uid"]
        cp.kubectl.ok("delete", "pod", "-n", NAMESPACE, victim["metadata"]["name"], "--grace-period=0", "--force")
    start = time.monotonic()

    def replaced() -> bool:
        uids = {p["metadata"]["uid"] for p in cp.items(f"/api/v1/namespaces/{NAMESPACE}/pods")}
        return not uids & set(killed.values())

    ready.wait("the killed pods to be gone", replaced, 120)
    wait_all_ready(cp, NAMESPACE, timeout=300)
    took = time.monotonic() - start
    print(f"\n[real node] every workload Ready again {took:.0f}s after a pod of each was killed")


# -- scheduled jobs: re-index, backups to S3, restores ----------------------------------------------------------


@pytest.fixture(scope="module")
def suspended(ready: Node) -> list[str]:
    """Every CronJob of dist/dev suspended, as the restore procedure's step 4 does: no scheduled run joins
    the tests' own Jobs (created from the CronJobs' templates, which a suspended CronJob still has)."""
    names = [c["metadata"]["name"] for c in _objects("CronJob")]
    for name in names:
        ready.cp.kubectl.ok(
            "patch", "cronjob", "-n", NAMESPACE, name, "--type=merge", "-p", '{"spec":{"suspend":true}}'
        )
    return names


def _wait_job(node: Node, name: str, timeout: float) -> tuple[str, str]:
    """``("Complete" | "Failed", its pods' logs)`` once the Job ``name`` has finished."""
    path = f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs/{name}"

    def finished() -> str | None:
        conditions = node.cp.get(path).get("status", {}).get("conditions", [])
        done = [c["type"] for c in conditions if c["type"] in ("Complete", "Failed") and c["status"] == "True"]
        return done[0] if done else None

    node.wait(f"Job {name} to finish", lambda: finished() is not None, timeout)
    # Every pod the Job ran, oldest first: `kubectl logs job/<name>` shows one pod, which after a retry
    # may be the failed attempt rather than the one that completed.
    pods = node.cp.items(f"/api/v1/namespaces/{NAMESPACE}/pods", labelSelector=f"batch.kubernetes.io/job-name={name}")
    logs = []
    for pod in sorted(pods, key=lambda p: p["metadata"]["creationTimestamp"]):
        pod_name = pod["metadata"]["name"]
        out = node.cp.kubectl.run("logs", "-n", NAMESPACE, pod_name, "--all-containers", "--tail=-1")
        logs.append(f"--- pod {pod_name} ({pod['status'].get('phase')}) ---\n{out.stdout}{out.stderr}")
    if len(logs) > 1:  # a retried attempt is allowed (backoffLimit) but worth seeing in the test's output
        print(f"\n[real node] Job {name} ran {len(logs)} pods:\n" + "\n".join(logs))
    return str(finished()), "\n".join(logs)


def _job_from_cronjob(node: Node, cronjob: str, timeout: float = 300) -> tuple[float, list[dict[str, Any]]]:
    """``kubectl create job --from=cronjob/<cronjob>`` (docs/backup-restore.md, "Run a backup now"), run to
    its end: the seconds it took and its JSON log lines. Fails unless the Job completes."""
    name = f"{cronjob}-node-test"
    start = time.monotonic()
    node.cp.kubectl.ok("create", "job", "-n", NAMESPACE, f"--from=cronjob/{cronjob}", name)
    state, logs = _wait_job(node, name, timeout)
    assert state == "Complete", f"{name}: {state}\n{logs}\npods:\n{_pod_report(node)}"
    return time.monotonic() - start, _events(logs)


def _events(logs: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in logs.splitlines() if line.startswith("{")]


CHROMA_RECORDS = """
import json, os
import chromadb
settings = chromadb.Settings(anonymized_telemetry=False)
client = chromadb.HttpClient(host=os.environ["CHROMA_HOST"], port=int(os.environ["CHROMA_PORT"]), settings=settings)
records = {}
for collection in client.list_collections():
    got = collection.get(include=["documents", "metadatas"])
    records[collection.name] = sorted(
        [i, d, json.dumps(m, sort_keys=True)] for i, d, m in zip(got["ids"], got["documents"], got["metadatas"])
    )
print(json.dumps(records))
"""


def _chroma_records(node: Node) -> dict[str, list[list[str]]]:
    """``{collection: sorted [id, document, metadata]}`` of every collection, read by a query pod with its own
    settings (the indexer may be scaled down)."""
    pod = _running_pod(node, NAMESPACE, {"app.kubernetes.io/component": "query"})
    out = node.cp.kubectl.ok("exec", "-n", NAMESPACE, pod, "-c", "agent", "--", "python", "-c", CHROMA_RECORDS)
    return dict(json.loads(out.strip().splitlines()[-1]))


@pytest.fixture(scope="module")
def reindexed(ready: Node, suspended: list[str], provider: Any) -> dict[str, Any]:
    """dist/dev's scheduled re-index, run once as a Job from its CronJob against the running indexer (which
    embeds through the fake provider and writes to Chroma): what it logged, and Chroma before and after."""
    (cronjob,) = [c for c in suspended if c.endswith("-reindex")]
    before = _chroma_records(ready)
    took, events = _job_from_cronjob(ready, cronjob)
    print(f"\n[real node] {cronjob} as a Job: Complete in {took:.0f}s")
    return {"events": events, "before": before, "after": _chroma_records(ready)}


def test_the_scheduled_reindex_job_runs_against_the_indexer_and_completes(reindexed: dict[str, Any]) -> None:
    """Every repository of the agent's appSettings.json goes through the indexer's incremental route to a
    completed workflow, and the indexer's documents land in Chroma."""
    config = _of_component("ConfigMap", "agent")
    repositories = [r["url"] for r in json.loads(config["data"]["appSettings.json"])["repositories"]]
    events = reindexed["events"]
    assert [e["repository"] for e in events if e["event"] == "reindex.queued"] == repositories, events
    assert [e["repository"] for e in events if e["event"] == "reindex.completed"] == repositories, events
    assert events[-1] == {"event": "reindex.done", "failed": 0}
    added = sum(len(v) for v in reindexed["after"].values()) - sum(len(v) for v in reindexed["before"].values())
    print(f"\n[real node] re-index: {len(repositories)} repositories, {added} records added to Chroma")
    assert added > 0


@pytest.fixture(scope="module")
def s3(ready: Node) -> Iterator[FakeS3]:
    """moto on the host at the S3 endpoint dist/dev's backups name (cluster DNS answers it), over TLS."""
    target = s3_target(ENV)
    assert target is not None, f"dist/{ENV} backs up to no S3 target"
    try:
        with fake_s3(ready.workdir, target) as server:
            yield server
    except FileNotFoundError as err:
        missing(str(err))


REDIS_KEYS = """
import json, os, sys
import redis
client = redis.Redis.from_url(os.environ["REDIS_URL"], socket_timeout=10, decode_responses=True)
if sys.argv[1] == "write":
    client.mset({f"node-test:restore:{i}": f"value {i}" for i in range(100)})
    client.set("node-test:restore:ttl", "expires later", ex=3600)
keys = sorted(client.scan_iter("node-test:restore:*"))
print(json.dumps({k: [client.get(k), client.ttl(k)] for k in keys}))
"""


def _redis_keys(node: Node, mode: str) -> dict[str, list[Any]]:
    """``{key: [value, ttl]}`` of the test's keys, written first when ``mode`` is ``write``, by a query pod
    through the app's ACL user (its Secret's URL)."""
    pod = _running_pod(node, NAMESPACE, {"app.kubernetes.io/component": "query"})
    out = node.cp.kubectl.ok("exec", "-n", NAMESPACE, pod, "-c", "agent", "--", "python", "-c", REDIS_KEYS, mode)
    return dict(json.loads(out.strip().splitlines()[-1]))


def _of_component(kind: str, component: str) -> dict[str, Any]:
    """The one object of ``kind`` in dist/dev with the component label ``component``."""
    (obj,) = [o for o in _objects(kind) if o["metadata"]["labels"]["app.kubernetes.io/component"] == component]
    return obj


def _scale(node: Node, kind: str, name: str, replicas: int) -> None:
    node.cp.kubectl.ok("scale", "-n", NAMESPACE, f"{kind}/{name}", f"--replicas={replicas}")
    workload = node.cp.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/{kind.lower()}s/{name}")
    selector = ",".join(f"{k}={v}" for k, v in workload["spec"]["selector"]["matchLabels"].items())

    def scaled() -> bool:
        pods = node.cp.items(f"/api/v1/namespaces/{NAMESPACE}/pods", labelSelector=selector)
        ready = [
            p
            for p in pods
            if any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
        ]
        return len(pods) == replicas == len(ready)

    node.wait(f"{kind}/{name} at {replicas} Ready replicas", scaled, 300)


def _delete_volume(node: Node, store: str) -> str:
    """The store's data lost: its StatefulSet scaled to zero, its pod's claim deleted (and the volume with
    it, reclaim policy Delete), then scaled back up on a new, empty claim. The new claim's uid."""
    sts = _of_component("StatefulSet", store)
    name = sts["metadata"]["name"]
    claim = f"{sts['spec']['volumeClaimTemplates'][0]['metadata']['name']}-{name}-0"
    path = f"/api/v1/namespaces/{NAMESPACE}/persistentvolumeclaims/{claim}"
    old = node.cp.get(path)["metadata"]["uid"]
    _scale(node, "StatefulSet", name, 0)
    node.cp.kubectl.ok("delete", "pvc", "-n", NAMESPACE, claim, "--wait=true", timeout=180)
    node.wait(f"the volume of {claim} to be deleted", lambda: not any(
        (v["spec"].get("claimRef") or {}).get("uid") == old for v in node.cp.items("/api/v1/persistentvolumes")
    ), 120)  # fmt: skip
    _scale(node, "StatefulSet", name, 1)
    new = str(node.cp.get(path)["metadata"]["uid"])
    assert new != old
    return new


def _restore_job(store: str) -> dict[str, Any]:
    """The Job ``make restore ENV=dev STORE=<store>`` prints."""
    out = subprocess.run(
        [sys.executable, "-O", str(ROOT / "app.py"), "restore", ENV, store],
        capture_output=True, text=True, cwd=ROOT, timeout=300, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT / "constructs")},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return dict(yaml.safe_load(out.stdout))


@pytest.mark.parametrize("store", ["redis", "chroma"])
def test_a_backup_job_writes_to_s3_and_the_restore_job_brings_the_data_back_after_the_volume_is_lost(
    request: pytest.FixtureRequest, ready: Node, suspended: list[str], s3: FakeS3, store: str
) -> None:
    """The store's backup CronJob, run as a Job, writes its dump and manifest to the S3 endpoint dist/dev names
    (moto on the host, through cluster DNS, the backup's NetworkPolicy and TLS). The store then loses its
    volume and comes back empty; the restore Job that ``make restore`` prints, run as the procedure says
    (docs/backup-restore.md: writers stopped for Chroma), brings back every record: Redis's keys with their
    values and TTLs, Chroma's records (written by the re-index) with their documents and metadata."""
    if store == "redis":
        before = _redis_keys(ready, "write")
        assert len(before) == 101
    else:
        before = request.getfixturevalue("reindexed")["after"]
        assert sum(len(v) for v in before.values()) > 0
    took, events = _job_from_cronjob(ready, f"{NAMESPACE}-backup-{store}")
    (done,) = [e for e in events if e["event"] == "backup.done"]
    assert done["store"] == store and not done["held"], done
    objects = s3.keys(f"{store}/{done['backup_id']}")
    assert len(objects) >= 2, objects  # the dump and its manifest
    print(f"\n[real node] backup of {store} as a Job: Complete in {took:.0f}s; in s3://{s3.target.bucket}: {objects}")

    start = time.monotonic()
    _delete_volume(ready, store)
    empty = _redis_keys(ready, "read") if store == "redis" else _chroma_records(ready)
    assert not any(empty.values()), empty
    lost = time.monotonic() - start

    indexer = _of_component("Deployment", "indexer")
    if store == "chroma":
        _scale(ready, "Deployment", indexer["metadata"]["name"], 0)  # the procedure's step 6: stop the writers
    start = time.monotonic()
    name = apply_one_off(ready, ENV, _restore_job(store))
    state, logs = _wait_job(ready, name, 300)
    assert state == "Complete", f"{name}: {state}\n{logs}"
    restored = time.monotonic() - start
    restores = [e for e in _events(logs) if e["event"] == "restore.done"]
    assert len(restores) == 1, f"{name}: one restore.done expected\n{logs}"
    (done_restore,) = restores
    assert done_restore["backup_id"] == done["backup_id"]
    if store == "chroma":
        _scale(ready, "Deployment", indexer["metadata"]["name"], 1)

    after = _redis_keys(ready, "read") if store == "redis" else _chroma_records(ready)
    print(f"\n[real node] {store}: volume lost and back empty in {lost:.0f}s; restore Job Complete in {restored:.0f}s")
    if store == "redis":
        assert {k: v for k, (v, _) in after.items()} == {k: v for k, (v, _) in before.items()}
        ttl = after["node-test:restore:ttl"][1]
        assert 0 < ttl <= 3600, ttl
        assert all(t == -1 for k, (_, t) in after.items() if k != "node-test:restore:ttl")
    else:
        assert after == before
