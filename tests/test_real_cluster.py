"""dist/staging and dist/prod on several real nodes (tests/real_node.py), issue 24: their first Argo CD sync
completes wave by wave under Argo CD's health rules, on kubelets that admit every pod.

Their pods request more CPU than this host has (its cores are what each kubelet reports), so one node cannot
hold them: the cluster has as many nodes as :func:`real_node.nodes_needed` finds (each a kubelet with its own
containerd, bridge, pod CIDR and zone, in the host's one network stack). Their spread constraints and
anti-affinity are preferences (``ScheduleAnyway``, ``preferred...``) and their PodDisruptionBudgets only limit
evictions, so capacity alone sets the count (``nodes_needed`` fails on a hard rule). The environments sync one
after the other in one cluster, each in a cluster like its own (staging-eks, prod-eks): staging's namespace
is deleted before prod's first sync.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from argo_sync import SyncStuckError, table
from control_plane import ZONE, wait_all_ready
from real_node import (
    DistSync,
    Node,
    apply_dist,
    dist_pods,
    first_sync_problems,
    namespace_of,
    nodes_needed,
    pod_requests,
    quantity,
    real_node,
    remove_dist,
    require_node,
    workload_images,
)

pytestmark = [pytest.mark.slow, pytest.mark.go_build("control-plane", "node")]
ENVS = ["staging", "prod"]
RULES = {
    # The gitops-engine function (pkg/health) each kind's health is read by, as tests/argo_sync.py cites it.
    "Deployment": "pkg/health/health_deployment.go getAppsv1DeploymentHealth",
    "StatefulSet": "pkg/health/health_statefulset.go getAppsv1StatefulSetHealth",
    "PersistentVolumeClaim": "pkg/health/health_pvc.go getCorev1PVCHealth",
}


@dataclass
class Synced:
    """One environment's first sync on the cluster, and where its pods ran once every workload was Ready."""

    sync: DistSync
    problems: list[str]
    placement: dict[str, list[tuple[str, float]]]
    """``{node: [(pod, CPU cores it requests)]}``."""
    seconds: float


@pytest.fixture(scope="module")
def cluster() -> Iterator[Node]:
    require_node()
    images = set().union(*(workload_images(env) for env in ENVS))
    with real_node(images, nodes=nodes_needed(ENVS)) as started:
        timings = ", ".join(f"{k} {v:.0f}s" for k, v in started.timings.items())
        print(f"\n[real cluster] {len(started.machines)} nodes; {timings}")
        yield started


def _pod_report(node: Node) -> str:
    out = node.cp.kubectl.run("get", "pods", "-A", "-o", "wide")
    return out.stdout + out.stderr


@pytest.fixture(scope="module")
def synced(cluster: Node) -> dict[str, Synced]:
    """Each environment's first sync, every workload then Ready, and its namespace deleted before the next."""
    out = {}
    for env in ENVS:
        start = time.monotonic()
        namespace = namespace_of(env)
        try:
            result = apply_dist(cluster, env)
            wait_all_ready(cluster.cp, namespace, timeout=600)
        except (SyncStuckError, AssertionError) as err:
            raise AssertionError(f"dist/{env}: {err}\npods:\n{_pod_report(cluster)}") from None
        seconds = time.monotonic() - start
        placement: dict[str, list[tuple[str, float]]] = {}
        for pod in cluster.cp.items(f"/api/v1/namespaces/{namespace}/pods"):
            if pod["status"].get("phase") == "Running":
                placement.setdefault(pod["spec"]["nodeName"], []).append(
                    (pod["metadata"]["name"], pod_requests(pod["spec"])["cpu"])
                )
        out[env] = Synced(result, first_sync_problems(cluster, env, result, RULES), placement, seconds)
        print(f"\n[real cluster] dist/{env} synced, every pod Ready, in {seconds:.0f}s:\n{table(result.waves)}")
        for name, pods in sorted(placement.items()):
            print(f"[real cluster]   {name}: {sum(c for _, c in pods):.2f} CPU requested by {len(pods)} pods")
        if env != ENVS[-1]:
            print(f"[real cluster] dist/{env} removed in {remove_dist(cluster, env):.0f}s")
    return out


@pytest.mark.parametrize("env", ENVS)
def test_first_sync_completes_wave_by_wave_on_real_nodes(synced: dict[str, Synced], env: str) -> None:
    """Every wave in order, none skipped, each healthy by Argo CD's rules before the next, with no warning;
    the indexer's claim Bound under a WaitForFirstConsumer class in its Deployment's wave; every workload
    gated by its kind's rule."""
    assert synced[env].problems == []
    assert synced[env].sync.waves


@pytest.mark.parametrize("env", ENVS)
def test_every_pod_is_admitted_by_a_kubelet_and_needed_more_than_one(
    cluster: Node, synced: dict[str, Synced], env: str
) -> None:
    """The environment's pods (the HPA's minimum of the query tier included) request more CPU than one node
    has; they ran on several kubelets, none holding more than it can allocate."""
    nodes = {n["metadata"]["name"]: n for n in cluster.cp.nodes()}
    allocatable = {name: quantity(n["status"]["allocatable"]["cpu"]) for name, n in nodes.items()}
    placement = synced[env].placement
    requested = {name: sum(cpu for _, cpu in pods) for name, pods in placement.items()}
    assert sum(requested.values()) > max(allocatable.values()), (requested, allocatable)
    assert len(placement) > 1
    assert all(requested[name] <= allocatable[name] for name in requested), (requested, allocatable)
    # Every pod the sync starts ran (dist_pods counts them from dist/), spread over the zones.
    assert sum(len(pods) for pods in placement.values()) == len(dist_pods(env))
    assert len({nodes[name]["metadata"]["labels"][ZONE] for name in placement}) > 1


def test_the_cluster_has_the_nodes_nodes_needed_counted_each_with_this_hosts_cores(cluster: Node) -> None:
    """What :func:`nodes_needed` assumed of a node (this host's cores) is what the kubelets report."""
    import os

    nodes = cluster.cp.nodes()
    assert sorted(n["metadata"]["name"] for n in nodes) == sorted(cluster.names)
    assert {quantity(n["status"]["allocatable"]["cpu"]) for n in nodes} == {float(os.cpu_count() or 1)}
    assert len({n["spec"]["podCIDR"] for n in nodes}) == len(nodes)
