"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, and kwok for simulated nodes (no kubelet can run here).

Built by ``scripts/setup.sh test`` into ``.tools/control-plane/`` from the Go modules in
``scripts/control-plane/``. Nodes: 3 zones x 2 nodes shaped like the cloud profile's. Each cloud
profile's StorageClasses exist; the harness plays the CSI provisioner, so a volume is created in
the zone the scheduler picked (WaitForFirstConsumer) and is pinned to it, or to every zone for a
regional / zone-redundant class, as on the real cloud.

    python tests/control_plane.py drill prod     # `make drill ENV=prod`: the zone-loss table
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".tools" / "control-plane"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kwok")
FILES = (*BINARIES, "kwok-stages.yaml")
ZONES = ("zone-a", "zone-b", "zone-c")
NODES_PER_ZONE = 2
ZONE = "topology.kubernetes.io/zone"
POD_CIDR = "10.244.0.0/16"
"""Pod addresses of a real node (tests/real_node.py): the controller-manager gives it the first /24."""


@dataclass(frozen=True)
class NodeShape:
    """Allocatable resources of one worker node."""

    instance_type: str
    cpu: str
    memory: str
    pods: int

    @property
    def resources(self) -> dict[str, str]:
        return {"cpu": self.cpu, "memory": self.memory, "pods": str(self.pods)}


# A typical general-purpose 8 vCPU / 32 GiB worker per cloud, at its allocatable size.
NODE_SHAPES = {
    "eks": NodeShape("m6i.2xlarge", "7910m", "29Gi", 58),
    "gke": NodeShape("e2-standard-8", "7910m", "28Gi", 110),
    "aks": NodeShape("Standard_D8s_v5", "7820m", "27Gi", 110),
    "generic": NodeShape("8cpu-32gi", "7900m", "29Gi", 110),
}


@dataclass(frozen=True)
class StorageClass:
    name: str
    provisioner: str
    parameters: dict[str, str]
    default: bool = False

    @property
    def regional(self) -> bool:
        """Whether a volume survives the loss of its zone (GCE regional PD, Azure ZRS)."""
        return self.parameters.get("replication-type") == "regional-pd" or self.parameters.get("skuName", "").endswith(
            "_ZRS"
        )


# The classes each cloud creates by itself, plus its zone-redundant one where it has one. EKS creates only
# gp2: the gp3 class the stack uses comes from the platform layer in dist/ (platform_storage_classes).
STORAGE_CLASSES = (
    StorageClass("standard", "csi.example.com", {}, default=True),  # generic: the cluster default
    StorageClass("gp2", "ebs.csi.aws.com", {"type": "gp2"}),  # EBS is zonal; AWS has no regional block volume
    StorageClass("standard-rwo", "pd.csi.storage.gke.io", {"type": "pd-balanced"}),
    StorageClass(
        "standard-rwo-regional", "pd.csi.storage.gke.io", {"type": "pd-balanced", "replication-type": "regional-pd"}
    ),
    StorageClass("managed-csi", "disk.csi.azure.com", {"skuName": "StandardSSD_LRS"}),
    StorageClass("managed-csi-zrs", "disk.csi.azure.com", {"skuName": "StandardSSD_ZRS"}),
)


def platform_storage_classes() -> dict[str, dict[str, Any]]:
    """The StorageClasses the platform layer of dist/ creates, by name, as its Argo CD bundle holds them."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted((ROOT / "dist" / "argocd").glob("*/platform/storageclass-*.yaml")):
        obj = yaml.safe_load(path.read_text())
        found.setdefault(obj["metadata"]["name"], obj)
    return found


def storage_classes() -> dict[str, StorageClass]:
    """Every class a PVC of dist/ may name: the clouds' own and the platform layer's."""
    classes = {sc.name: sc for sc in STORAGE_CLASSES}
    for name, obj in platform_storage_classes().items():
        classes[name] = StorageClass(name, obj["provisioner"], dict(obj.get("parameters") or {}))
    return classes


def binaries_missing() -> list[str]:
    return [name for name in FILES if not (BIN / name).exists()]


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Kubectl:
    kubeconfig: Path

    def run(self, *args: str, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def ok(self, *args: str, stdin: str | None = None, timeout: float = 120) -> str:
        out = self.run(*args, stdin=stdin, timeout=timeout)
        if out.returncode:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{out.stderr}{out.stdout}")
        return out.stdout


@dataclass
class ControlPlane:
    """A started control plane; ``api`` is an HTTP client with cluster-admin rights."""

    workdir: Path
    api: httpx.Client
    kubectl: Kubectl
    shape: NodeShape
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    provisioner_errors: list[str] = field(default_factory=list)

    # -- reading the cluster -------------------------------------------------------------------
    def get(self, path: str, **params: str) -> dict[str, Any]:
        response = self.api.get(path, params=params)
        response.raise_for_status()
        return response.json()  # type: ignore[no-any-return]

    def items(self, path: str, **params: str) -> list[dict[str, Any]]:
        return self.get(path, **params)["items"]  # type: ignore[no-any-return]

    def nodes(self) -> list[dict[str, Any]]:
        return self.items("/api/v1/nodes")

    def node_zones(self) -> dict[str, str]:
        return {n["metadata"]["name"]: n["metadata"]["labels"][ZONE] for n in self.nodes()}

    def workloads(self, namespace: str) -> dict[str, dict[str, Any]]:
        """``{"Deployment/name": object}`` of the namespace's Deployments and StatefulSets."""
        out = {}
        for kind, plural in (("Deployment", "deployments"), ("StatefulSet", "statefulsets")):
            for obj in self.items(f"/apis/apps/v1/namespaces/{namespace}/{plural}"):
                out[f"{kind}/{obj['metadata']['name']}"] = obj
        return out

    def pods_of(self, namespace: str, workload: dict[str, Any]) -> list[dict[str, Any]]:
        labels = workload["spec"]["selector"]["matchLabels"]
        selector = ",".join(f"{k}={v}" for k, v in labels.items())
        return self.items(f"/api/v1/namespaces/{namespace}/pods", labelSelector=selector)

    def events(self, namespace: str) -> list[str]:
        return [
            f"{e['involvedObject']['kind']}/{e['involvedObject']['name']}: {e['reason']}: {e.get('message', '')}"
            for e in self.items(f"/api/v1/namespaces/{namespace}/events")
            if e.get("type") == "Warning"
        ]

    def wait(self, what: str, done: Callable[[], bool], timeout: float = 90, explain: Callable[[], str] = str) -> float:
        """Poll ``done`` until true; the seconds it took. Fails with ``explain()`` on timeout."""
        start = time.monotonic()
        while not done():
            if time.monotonic() - start > timeout:
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{explain()}")
            time.sleep(0.25)
        return time.monotonic() - start

    # -- nodes and volumes -----------------------------------------------------------------------
    def add_nodes(self) -> None:
        for zone in ZONES:
            for i in range(NODES_PER_ZONE):
                name = f"{zone}-node-{i}"
                node = {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {
                        "name": name,
                        "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                        "labels": {
                            "kubernetes.io/hostname": name,
                            "kubernetes.io/os": "linux",
                            "kubernetes.io/arch": "amd64",
                            "node.kubernetes.io/instance-type": self.shape.instance_type,
                            ZONE: zone,
                            "topology.kubernetes.io/region": "region-1",
                            "type": "kwok",
                        },
                    },
                    "spec": {},
                    "status": {
                        "allocatable": self.shape.resources,
                        "capacity": self.shape.resources,
                        "nodeInfo": {"kubeletVersion": "fake", "operatingSystem": "linux", "architecture": "amd64"},
                    },
                }
                self.api.post("/api/v1/nodes", json=node).raise_for_status()

        def ready() -> bool:
            nodes = self.nodes()
            return len(nodes) == len(ZONES) * NODES_PER_ZONE and all(
                any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions", []))
                for n in nodes
            )

        self.wait("kwok to make the nodes Ready", ready)

    def add_storage_classes(self) -> None:
        for sc in STORAGE_CLASSES:
            body = {
                "apiVersion": "storage.k8s.io/v1",
                "kind": "StorageClass",
                "metadata": {
                    "name": sc.name,
                    "annotations": {"storageclass.kubernetes.io/is-default-class": "true"} if sc.default else {},
                },
                "provisioner": sc.provisioner,
                "parameters": sc.parameters,
                "volumeBindingMode": "WaitForFirstConsumer",
                "allowVolumeExpansion": True,
                "reclaimPolicy": "Delete",
            }
            self.api.post("/apis/storage.k8s.io/v1/storageclasses", json=body).raise_for_status()
            driver = {
                "apiVersion": "storage.k8s.io/v1",
                "kind": "CSIDriver",
                "metadata": {"name": sc.provisioner},
                "spec": {"attachRequired": False, "podInfoOnMount": False},
            }
            self.api.post("/apis/storage.k8s.io/v1/csidrivers", json=driver)  # 409 for a shared driver
        # The platform layer's classes exactly as dist/ renders them, so applying its bundle changes nothing.
        for obj in platform_storage_classes().values():
            self.api.post("/apis/storage.k8s.io/v1/storageclasses", json=obj).raise_for_status()
            driver = {
                "apiVersion": "storage.k8s.io/v1",
                "kind": "CSIDriver",
                "metadata": {"name": obj["provisioner"]},
                "spec": {"attachRequired": False, "podInfoOnMount": False},
            }
            self.api.post("/apis/storage.k8s.io/v1/csidrivers", json=driver)  # 409 for a shared driver

    def provision_once(self) -> None:
        """Create a PV for each claim the scheduler has placed (``selected-node``), in that zone."""
        classes = storage_classes()
        zones = self.node_zones()
        for pvc in self.items("/api/v1/persistentvolumeclaims"):
            meta, spec = pvc["metadata"], pvc["spec"]
            node = meta.get("annotations", {}).get("volume.kubernetes.io/selected-node")
            if spec.get("volumeName") or not node or meta.get("deletionTimestamp") or node not in zones:
                continue
            sc = classes[spec["storageClassName"]]
            name = f"pv-{meta['uid']}"
            pv = {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": name, "labels": {ZONE: zones[node]} if not sc.regional else {}},
                "spec": {
                    "capacity": {"storage": spec["resources"]["requests"]["storage"]},
                    "accessModes": spec["accessModes"],
                    "storageClassName": sc.name,
                    "persistentVolumeReclaimPolicy": "Delete",
                    "claimRef": {"namespace": meta["namespace"], "name": meta["name"], "uid": meta["uid"]},
                    "csi": {"driver": sc.provisioner, "volumeHandle": name},
                    "nodeAffinity": {
                        "required": {
                            "nodeSelectorTerms": [
                                {
                                    "matchExpressions": [
                                        {
                                            "key": ZONE,
                                            "operator": "In",
                                            "values": list(ZONES) if sc.regional else [zones[node]],
                                        }
                                    ]
                                }
                            ]
                        }
                    },
                },
            }
            response = self.api.post("/api/v1/persistentvolumes", json=pv)
            if response.status_code not in (201, 409):
                self.provisioner_errors.append(response.text)

    def volume_zone(self, namespace: str, claim: str) -> str | None:
        """The zone a bound claim's volume is pinned to (``None`` when regional or unbound)."""
        pvc = self.get(f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/{claim}")
        volume = pvc["spec"].get("volumeName")
        if not volume:
            return None
        return self.get(f"/api/v1/persistentvolumes/{volume}")["metadata"].get("labels", {}).get(ZONE)

    # -- applying -----------------------------------------------------------------------------------
    def install_crds(self) -> None:
        self.kubectl.ok("apply", "--server-side", "-f", str(ROOT / "constructs" / "kgstack" / "crds"))

        # Polled here: `kubectl wait` fails on a CRD that has no conditions yet.
        def established() -> bool:
            crds = self.items("/apis/apiextensions.k8s.io/v1/customresourcedefinitions")
            conditions = [crd.get("status", {}).get("conditions") or [] for crd in crds]
            return all(any(c["type"] == "Established" and c["status"] == "True" for c in cs) for cs in conditions)

        self.wait("the CRDs to be established", established, timeout=60)

    def apply(self, folder: Path, *, dry_run: bool = False) -> subprocess.CompletedProcess[str]:
        """Server-side apply of a dist/ folder through its kustomization, as Argo CD would."""
        args = ["apply", "--server-side", "--field-manager=kgstack-test", "-k", str(folder)]
        return self.kubectl.run(*args, *(["--dry-run=server"] if dry_run else []))

    def stop(self) -> None:
        for proc in reversed(list(self.processes.values())):
            if proc.poll() is None:
                proc.terminate()
        for proc in self.processes.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.api.close()


def _rsa_key(path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
    )


def _start(cp: ControlPlane, name: str, *args: str) -> None:
    log = (cp.workdir / f"{name}.log").open("wb")
    cp.processes[name] = subprocess.Popen(
        [str(BIN / name), *args], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def _healthy(cp: ControlPlane, name: str, probe: Callable[[], bool]) -> None:
    def done() -> bool:
        if cp.processes[name].poll() is not None:
            log = (cp.workdir / f"{name}.log").read_text()[-3000:]
            raise AssertionError(f"{name} exited with {cp.processes[name].returncode}:\n{log}")
        with contextlib.suppress(httpx.HTTPError):
            return probe()
        return False

    cp.wait(f"{name} to become healthy", done, timeout=120)


@contextlib.contextmanager
def control_plane(
    provider: str = "eks", *, address: str = "127.0.0.1", simulated_nodes: bool = True
) -> Iterator[ControlPlane]:
    """Start everything on loopback; stop everything (and remove its files) at the end.

    ``simulated_nodes=False`` is for a real node (tests/real_node.py): no kwok, no simulated nodes,
    StorageClasses or provisioner; the API server listens on ``address``, a host address the
    node's pods reach, and the controller-manager hands pods its certificate as their cluster CA
    and gives the node a pod CIDR."""
    missing = binaries_missing()
    if missing:
        raise FileNotFoundError(f"{', '.join(missing)} not in {BIN} (scripts/setup.sh test builds them)")
    workdir = Path(tempfile.mkdtemp(prefix="kgstack-cp-"))
    token = base64.b32encode(os.urandom(20)).decode().lower()  # per run, never stored
    (workdir / "tokens.csv").write_text(f'{token},admin,admin,"system:masters"\n')
    _rsa_key(workdir / "sa.key")
    etcd_port, etcd_peer, api_port = _free_port(), _free_port(), _free_port()
    server = f"https://{address}:{api_port}"
    kubeconfig = workdir / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "local", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
                "users": [{"name": "admin", "user": {"token": token}}],
                "contexts": [{"name": "local", "context": {"cluster": "local", "user": "admin"}}],
                "current-context": "local",
            }
        )
    )
    api = httpx.Client(base_url=server, verify=False, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    cp = ControlPlane(workdir, api, Kubectl(kubeconfig), NODE_SHAPES[provider])
    stop_provisioner = threading.Event()
    try:
        _start(
            cp,
            "etcd",
            f"--data-dir={workdir / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
            f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
            f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
            f"--initial-cluster=default=http://127.0.0.1:{etcd_peer}",
            "--unsafe-no-fsync",  # a throw-away store; fsync only slows the tests
            "--log-level=warn",
        )
        _healthy(cp, "etcd", lambda: httpx.get(f"http://127.0.0.1:{etcd_port}/health", timeout=2).status_code == 200)
        _start(
            cp,
            "kube-apiserver",
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            f"--bind-address={address}",
            f"--secure-port={api_port}",
            f"--cert-dir={workdir / 'pki'}",
            f"--token-auth-file={workdir / 'tokens.csv'}",
            "--authorization-mode=Node,RBAC",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={workdir / 'sa.key'}",
            f"--service-account-signing-key-file={workdir / 'sa.key'}",
            "--service-cluster-ip-range=10.96.0.0/16",
            "--enable-priority-and-fairness=false",
            # Logs and exec reach the kubelet at the node's address (a real node has no resolvable name).
            *([] if simulated_nodes else ["--kubelet-preferred-address-types=InternalIP"]),
        )
        _healthy(cp, "kube-apiserver", lambda: api.get("/readyz").status_code == 200)
        _start(
            cp,
            "kube-controller-manager",
            f"--kubeconfig={kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={_free_port()}",
            f"--service-account-private-key-file={workdir / 'sa.key'}",
            # A lost node's pods are marked for deletion after this long (default 5 min).
            "--node-monitor-grace-period=20s",
            "--horizontal-pod-autoscaler-sync-period=2s",  # default 15 s: only waiting time here
            *(
                []
                if simulated_nodes
                else [
                    # The API server's self-signed certificate (it names the Service IP): the CA that
                    # pods' service account volumes carry, so in-cluster clients verify the server.
                    f"--root-ca-file={workdir / 'pki' / 'apiserver.crt'}",
                    "--allocate-node-cidrs",
                    f"--cluster-cidr={POD_CIDR}",
                    "--node-cidr-mask-size=24",
                ]
            ),
        )
        _start(
            cp,
            "kube-scheduler",
            f"--kubeconfig={kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={_free_port()}",
        )
        if simulated_nodes:
            _start(
                cp,
                "kwok",
                f"--kubeconfig={kubeconfig}",
                f"--config={BIN / 'kwok-stages.yaml'}",
                "--node-lease-duration-seconds=40",  # renews node Leases: the nodes' heartbeat
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                f"--server-address=127.0.0.1:{_free_port()}",
                "--cidr=10.0.0.1/16",
                "--node-ip=10.0.0.1",
            )
            cp.add_storage_classes()
            cp.add_nodes()

            def provisioner() -> None:
                while not stop_provisioner.is_set():
                    with contextlib.suppress(httpx.HTTPError):
                        cp.provision_once()
                    stop_provisioner.wait(0.25)

            threading.Thread(target=provisioner, daemon=True).start()
        cp.install_crds()
        # Where Argo CD runs (it creates the namespace itself), and Envoy Gateway's, which its chart creates
        # before the platform layer's EnvoyProxy and PodMonitor land there.
        for ns in ("argocd", "envoy-gateway-system"):
            cp.api.post("/api/v1/namespaces", json={"metadata": {"name": ns}}).raise_for_status()
        yield cp
    finally:
        stop_provisioner.set()
        cp.stop()
        shutil.rmtree(workdir, ignore_errors=True)


# -- the checks the tests and `make drill` share ------------------------------------------------------


def apply_environment(cp: ControlPlane, folder: Path) -> list[str]:
    """Namespace first, then dry run, then for real; returns every warning and rejection."""
    problems = []
    namespace = next(folder.glob("namespace-*.yaml"), None)
    if namespace is not None:
        cp.kubectl.ok("apply", "--server-side", "--field-manager=kgstack-test", "-f", str(namespace))
    for dry in (True, False):
        out = cp.apply(folder, dry_run=dry)
        stage = "dry run" if dry else "apply"
        problems += [f"{folder.name} {stage}: {line}" for line in out.stderr.splitlines() if line.strip()]
        if out.returncode:
            problems.append(f"{folder.name} {stage}: exit {out.returncode}")
    return problems


def ready_counts(cp: ControlPlane, namespace: str) -> dict[str, tuple[int, int]]:
    """``{"Deployment/x": (ready, desired)}``; an HPA's target wants at least the HPA's floor."""
    floors = {
        f"{h['spec']['scaleTargetRef']['kind']}/{h['spec']['scaleTargetRef']['name']}": h["spec"].get("minReplicas", 1)
        for h in cp.items(f"/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers")
    }
    return {
        key: (
            int(w.get("status", {}).get("readyReplicas", 0)),
            max(int(w["spec"].get("replicas", 1)), floors.get(key, 0)),
        )
        for key, w in cp.workloads(namespace).items()
    }


def wait_all_ready(cp: ControlPlane, namespace: str, timeout: float = 90) -> float:
    def done() -> bool:
        counts = ready_counts(cp, namespace)
        return bool(counts) and all(r == d for r, d in counts.values())

    def explain() -> str:
        pending = {k: v for k, v in ready_counts(cp, namespace).items() if v[0] != v[1]}
        return f"not ready (ready, desired): {pending}\nwarning events:\n" + "\n".join(cp.events(namespace)[-20:])

    return cp.wait(f"every workload in {namespace} to be Ready", done, timeout, explain)


def scale_to_hpa_max(cp: ControlPlane, namespace: str) -> None:
    """Pin every HPA at its ceiling and wait for Ready. Without a metrics server here an HPA only
    enforces its bounds, so raising the floor to the ceiling is how to get there."""
    path = f"/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers"
    for hpa in cp.items(path):
        top, target = hpa["spec"]["maxReplicas"], hpa["spec"]["scaleTargetRef"]["name"]
        cp.api.patch(
            f"{path}/{hpa['metadata']['name']}",
            json={"spec": {"minReplicas": top}},
            headers={"Content-Type": "application/merge-patch+json"},
        ).raise_for_status()
        deployment = f"/apis/apps/v1/namespaces/{namespace}/deployments/{target}"
        cp.wait(f"{target} at its HPA maximum of {top}", lambda d=deployment, n=top: cp.get(d)["spec"]["replicas"] == n)
    wait_all_ready(cp, namespace)


def pods_per_zone(cp: ControlPlane, namespace: str, workload: dict[str, Any]) -> Counter[str]:
    zones = cp.node_zones()
    return Counter(
        zones.get(p["spec"].get("nodeName", ""), "?")
        for p in cp.pods_of(namespace, workload)
        if not p["metadata"].get("deletionTimestamp") and p["spec"].get("nodeName")
    )


@dataclass
class DrillRow:
    component: str
    replicas: int
    spread_before: str
    fewest_ready: int
    blocked_evictions: int
    recovery_seconds: float | None
    note: str = ""


class ReadyWatch:
    """Samples readyReplicas of every workload in the background; keeps the minimum."""

    def __init__(self, cp: ControlPlane, namespace: str) -> None:
        self.cp, self.namespace = cp, namespace
        self.fewest: dict[str, int] = {}
        self.recovered_at: dict[str, float] = {}
        self.desired: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ReadyWatch:
        self.start = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()  # the state the caller waited for, even if it came between two samples

    def _sample(self) -> None:
        with contextlib.suppress(httpx.HTTPError):
            for key, (ready, desired) in ready_counts(self.cp, self.namespace).items():
                self.desired[key] = desired
                self.fewest[key] = min(self.fewest.get(key, ready), ready)
                if ready < desired:
                    self.recovered_at.pop(key, None)
                elif key not in self.recovered_at:
                    self.recovered_at[key] = time.monotonic()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(0.2)


def drain(cp: ControlPlane, selector: list[str], timeout: str = "120s") -> subprocess.CompletedProcess[str]:
    """``kubectl drain``: cordon, then evict through the Eviction API, retrying while a PDB blocks."""
    return cp.kubectl.run(
        "drain", *selector, "--ignore-daemonsets", "--delete-emptydir-data", f"--timeout={timeout}", timeout=300
    )


def blocked_evictions(output: str, pod_component: dict[str, str]) -> Counter[str]:
    """Evictions refused by a PodDisruptionBudget (429), per component, from kubectl drain's log."""
    blocked: Counter[str] = Counter()
    for line in output.splitlines():
        if "disruption budget" in line and 'pods/"' in line:
            pod = line.split('pods/"', 1)[1].split('"', 1)[0]
            blocked[pod_component.get(pod, pod)] += 1
    return blocked


def restore_into_live_zone(cp: ControlPlane, namespace: str, folder: Path, lost_zone: str) -> list[str]:
    """The runbook for a store whose zonal volume was in the lost zone (docs/operations.md): drop
    the claim (its protection finalizer too: the volume is unreachable) and the Pending pod; the
    StatefulSet, or the GitOps re-sync for a standalone claim, creates the claim in a live zone,
    and the store is restored from backup into it."""
    dropped: dict[str, str] = {}
    for pod in cp.items(f"/api/v1/namespaces/{namespace}/pods"):
        if pod["status"].get("phase") != "Pending":
            continue
        for volume in pod["spec"].get("volumes", []):
            claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            if not claim or cp.volume_zone(namespace, claim) != lost_zone:
                continue
            path = f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/{claim}"
            dropped[claim] = cp.get(path)["metadata"]["uid"]
            cp.api.delete(path)
            cp.api.patch(
                path,
                json={"metadata": {"finalizers": None}},
                headers={"Content-Type": "application/merge-patch+json"},
            )
            cp.api.delete(f"/api/v1/namespaces/{namespace}/pods/{pod['metadata']['name']}")
    if dropped:

        def claims_gone() -> bool:
            uids = {c["metadata"]["uid"] for c in cp.items(f"/api/v1/namespaces/{namespace}/persistentvolumeclaims")}
            return not uids & set(dropped.values())

        cp.wait("the lost zone's claims to be deleted", claims_gone, timeout=60)
        # The GitOps re-sync re-creates a standalone claim (the indexer's).
        for claim in folder.glob("persistentvolumeclaim-*.yaml"):
            cp.kubectl.ok("apply", "--server-side", "--field-manager=kgstack-test", "-f", str(claim))
    return sorted(dropped)


def zone_loss_drill(cp: ControlPlane, env: str, lost_zone: str = "zone-a") -> tuple[list[DrillRow], list[str]]:
    """Cordon a zone, evict its pods through the Eviction API, delete its nodes, recover.

    Returns the table and the claims restored from backup into a live zone."""
    namespace = f"kga-{env}"
    workloads = cp.workloads(namespace)
    before = {key: pods_per_zone(cp, namespace, w) for key, w in workloads.items()}
    pod_component = {
        p["metadata"]["name"]: f"{key.split('/')[0]}/{w['metadata']['name']}"
        for key, w in workloads.items()
        for p in cp.pods_of(namespace, w)
    }
    with ReadyWatch(cp, namespace) as watch:
        out = drain(cp, ["-l", f"{ZONE}={lost_zone}"], timeout="60s")
        blocked = blocked_evictions(out.stdout + out.stderr, pod_component)
        for node, zone in cp.node_zones().items():
            if zone == lost_zone:
                cp.api.delete(f"/api/v1/nodes/{node}").raise_for_status()
        restored = restore_into_live_zone(cp, namespace, ROOT / "dist" / env, lost_zone)
        wait_all_ready(cp, namespace, timeout=120)
    rows = []
    for key, w in workloads.items():
        recovered = watch.recovered_at.get(key)
        dropped = watch.fewest.get(key, 0) < watch.desired.get(key, 0)
        rows.append(
            DrillRow(
                component=key,
                replicas=int(w["spec"].get("replicas", 1)),
                spread_before=" ".join(f"{z[-1]}:{before[key].get(z, 0)}" for z in ZONES),
                fewest_ready=watch.fewest.get(key, 0),
                blocked_evictions=blocked.get(key, 0),
                recovery_seconds=recovered - watch.start if dropped and recovered else None,
                note="restored from backup" if any(w["metadata"]["name"] in c for c in restored) else "",
            )
        )
    return rows, restored


def drill_table(rows: list[DrillRow]) -> str:
    lines = [
        "| component | replicas | spread before (a b c) | fewest Ready | evictions blocked | recovery | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        recovery = "no drop" if r.recovery_seconds is None else f"{r.recovery_seconds:.1f} s"
        lines.append(
            f"| {r.component} | {r.replicas} | {r.spread_before} | {r.fewest_ready} | {r.blocked_evictions} "
            f"| {recovery} | {r.note} |"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "drill":
        print("usage: python tests/control_plane.py drill ENV", file=sys.stderr)
        return 2
    env = argv[1]
    provider = yaml.safe_load((ROOT / "environments" / f"{env}.yaml").read_text()).get("cloud", {})
    with control_plane(provider.get("provider", "generic")) as cp:
        problems = apply_environment(cp, ROOT / "dist" / env)
        if problems:
            print("\n".join(problems), file=sys.stderr)
            return 1
        wait_all_ready(cp, f"kga-{env}")
        scale_to_hpa_max(cp, f"kga-{env}")  # the worst case, as in the tests
        rows, restored = zone_loss_drill(cp, env)
        print(f"Zone-loss drill, {env} at HPA maximum: zone-a cordoned, drained, removed; 6 {cp.shape.instance_type}")
        print(drill_table(rows))
        if restored:
            print(f"restored from backup into a live zone: {', '.join(restored)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
