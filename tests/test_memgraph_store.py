"""MemgraphStore: auth from a Secret, bolt probes, durable storage; only where graph features are on."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

Manifests = dict[str, dict[str, dict[str, Any]]]


def test_only_where_the_graph_is_enabled(manifests: Manifests) -> None:
    assert "StatefulSet/kga-staging-memgraph" in manifests["staging"]
    assert "StatefulSet/kga-prod-memgraph" not in manifests["prod"]
    assert "CronJob/kga-prod-backup-memgraph" not in manifests["prod"]


def test_auth_from_secret_and_bolt_probes(manifests: Manifests) -> None:
    pod = manifests["staging"]["StatefulSet/kga-staging-memgraph"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") or e["valueFrom"]["secretKeyRef"] for e in container["env"]}
    assert env == {"MEMGRAPH_USER": "kga", "MEMGRAPH_PASSWORD": {"name": "kga-memgraph", "key": "password"}}
    assert container["readinessProbe"]["tcpSocket"] == {"port": "bolt"}
    assert "--data-directory=/var/lib/memgraph/data" in container["args"]
    assert "--storage-wal-enabled=true" in container["args"]
    assert pod["terminationGracePeriodSeconds"] == 120


def test_agent_gets_the_graph_settings(manifests: Manifests) -> None:
    data = manifests["staging"]["ConfigMap/kga-staging-agent"]["data"]
    assert data["GRAPH_STORE_URL"] == "bolt://kga-staging-memgraph:7687"
    assert data["ENABLE_GRAPH_FEATURES"] == "true"
    env = manifests["staging"]["Deployment/kga-staging-indexer"]["spec"]["template"]["spec"]["containers"][0]["env"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in env if "secretKeyRef" in e.get("valueFrom", {})}
    assert refs["GRAPH_STORE_PASSWORD"] == {"name": "kga-memgraph", "key": "password"}
    assert data["GRAPH_STORE_USER"] == "kga"


def test_memory_limit_follows_the_container_limit(manifests: Manifests) -> None:
    """Without --memory-limit Memgraph sizes itself from the node's RAM and is OOM-killed (review finding 6)."""
    sts = manifests["staging"]["StatefulSet/kga-staging-memgraph"]
    container = sts["spec"]["template"]["spec"]["containers"][0]
    limit = container["resources"]["limits"]["memory"]
    assert limit.endswith("Gi")
    assert f"--memory-limit={int(int(limit[:-2]) * 1024 * 0.8)}" in container["args"]


# What Memgraph does at start with durability on (storage/v2/inmemory/storage.cpp, durability.cpp):
# create <data>/snapshots and <data>/wal, then abort unless the data directory's owner is its euid.
_MEMGRAPH_START = """
import os, sys
data = sys.argv[1]
for sub in ("snapshots", "wal"):
    os.makedirs(os.path.join(data, sub), exist_ok=True)
owner = os.stat(data).st_uid
if owner != os.geteuid():
    sys.exit(f"The process is running as user {os.geteuid()}, but the data directory is owned by user {owner}.")
"""


def _start_as_the_pod(sts: dict[str, Any], volume_root: Path) -> subprocess.CompletedProcess[str]:
    """Memgraph's start-up checks, as the pod's user, on a volume prepared as the kubelet prepares a fresh
    one with ``fsGroup``: the root stays root's, group fsGroup, setgid and group-writable."""
    pod = sts["spec"]["template"]["spec"]
    security = pod["securityContext"]
    (container,) = [c for c in pod["containers"] if c["name"] == "memgraph"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "data"]
    (arg,) = [a for a in container["args"] if a.startswith("--data-directory=")]
    data = Path(arg.partition("=")[2])
    os.chown(volume_root, 0, security["fsGroup"])
    volume_root.chmod(0o2775)
    local = volume_root / data.relative_to(mount["mountPath"])
    return subprocess.run(
        # The system interpreter: the venv's lives under /root, which the pod's user cannot enter.
        [shutil.which("python3", path="/usr/bin:/bin") or sys.executable, "-c", _MEMGRAPH_START, str(local)],
        user=security["runAsUser"],
        group=security["runAsGroup"],
        extra_groups=[security["fsGroup"]],
        capture_output=True,
        text=True,
        check=False,
    )


def test_memgraph_owns_its_data_directory_on_a_fresh_volume(manifests: Manifests) -> None:
    """Issue 19 defect 4: with --data-directory at the PVC root, owned by root, Memgraph aborted."""
    if os.geteuid() != 0 and os.environ.get("CI") != "true":
        pytest.skip("changing the user of a process needs root (CI runs as root)")
    sts = manifests["staging"]["StatefulSet/kga-staging-memgraph"]
    # Outside pytest's 0700 tmp folder, which the pod's user could not enter.
    with tempfile.TemporaryDirectory() as scratch:
        Path(scratch).chmod(0o755)
        _fresh_and_old(sts, Path(scratch))


def _fresh_and_old(sts: dict[str, Any], tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    result = _start_as_the_pod(sts, volume)
    assert result.returncode == 0, result.stderr
    # The old flag, on the same volume: the check Memgraph aborts on.
    old = copy.deepcopy(sts)
    container = old["spec"]["template"]["spec"]["containers"][0]
    container["args"] = [
        "--data-directory=/var/lib/memgraph" if a.startswith("--data-directory=") else a for a in container["args"]
    ]
    old_volume = tmp_path / "old"
    old_volume.mkdir()
    result = _start_as_the_pod(old, old_volume)
    assert "but the data directory is owned by user 0" in result.stderr
