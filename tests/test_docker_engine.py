"""The Docker Engine harness (tests/docker_engine.py): its own daemon under a temporary folder, images from podman."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from docker_engine import DockerEngine, engine, free_pool
from image_build import CACHE_DIR, tool_command
from tools import missing

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def docker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerEngine]:
    yield from engine(Path(f"/tmp/kga-engine-test-{os.getpid()}"))


@pytest.fixture(scope="module")
def base_image(docker: DockerEngine) -> str:
    podman = tool_command("podman")
    if podman is None:
        missing("podman not installed (apt-get install podman buildah debootstrap)")
    script = ROOT / "scripts" / "build-test-base.sh"
    built = subprocess.run(
        ["bash", str(script)], capture_output=True, text=True, timeout=900, check=False,
        env={**os.environ, "KGA_IMAGE_CACHE": str(CACHE_DIR)},
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    ref = built.stdout.strip().splitlines()[-1]
    docker.load(podman, ref, tag="example.com/acme/base:test")
    return "example.com/acme/base:test"


def test_the_engine_is_its_own(docker: DockerEngine) -> None:
    info = docker.docker("info", "--format", "{{.DockerRootDir}} {{.CgroupDriver}}").stdout.split()
    assert info == [str(docker.folder / "data"), "cgroupfs"]
    assert docker.env["DOCKER_HOST"] == f"unix://{docker.socket}"


def test_a_hardened_container_runs_a_loaded_image(docker: DockerEngine, base_image: str) -> None:
    ran = docker.docker(
        "run", "--rm", "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges:true",
        "--user", "10001:10001", base_image, "python", "-c",
        "import os; print(os.getuid())",
    )  # fmt: skip
    assert ran.stdout.strip() == "10001"
    refused = docker.docker("run", "--rm", "--read-only", base_image, "touch", "/probe", check=False)
    assert refused.returncode != 0 and "Read-only file system" in refused.stderr


def test_networks_get_the_engines_own_pool(docker: DockerEngine) -> None:
    docker.docker("network", "create", "probe")
    subnet = docker.docker("network", "inspect", "probe", "--format", "{{(index .IPAM.Config 0).Subnet}}").stdout
    assert subnet.startswith(f"10.{docker.pool}."), subnet
    docker.docker("network", "rm", "probe")


def _routes(pool: int) -> list[str]:
    out = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if line.startswith(f"10.{pool}.")]


def test_a_stopped_engine_leaves_no_bridge_and_a_new_one_avoids_routed_pools() -> None:
    """dockerd keeps a network's bridge on the host when it stops; one left behind overlapped the next engine's
    networks of the same pool (same pytest process) and sent their traffic to the dead bridge."""
    first = DockerEngine(Path(f"/tmp/kga-engine-stop-{os.getpid()}")).start()
    try:
        first.docker("network", "create", "left-behind")
        assert _routes(first.pool), "the network's bridge should be routed while the engine runs"
        assert free_pool(first.pool) != first.pool
    finally:
        first.remove()
    assert _routes(first.pool) == []
    assert free_pool(first.pool) == first.pool
