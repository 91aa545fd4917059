"""Debian's Docker Engine (dockerd + containerd), started by hand for one test session under a temporary folder.

The packages start no service here: :class:`DockerEngine` runs containerd and dockerd with their own root, state,
exec root, pid files and sockets under ``folder``, so it touches no other daemon and leaves nothing behind:

* networks: no default bridge (``--bridge none``) and address pools of their own (``10.<n>.0.0/16`` with ``n``
  from the session), so two engines on one host do not hand out the same subnets;
* storage: overlay2 where the kernel has it, else vfs; cgroupfs (no systemd here);
* images come from podman (tests/image_build.py): :meth:`load` pipes ``podman save`` into ``docker load``, as
  nothing can be pulled.

Reusable for any container spec: ``engine.env`` is the environment a client (``docker``, ``docker-compose``)
needs (``DOCKER_HOST``), ``engine.docker(...)`` runs the Debian CLI against it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from tools import missing

DOCKERD = "/usr/sbin/dockerd"
CONTAINERD = "/usr/bin/containerd"
DOCKER = "/usr/bin/docker"
APT_HINT = "apt-get install docker.io containerd (scripts/setup.sh test)"


IPTABLES_RACE = "iptables failed"
"""dockerd edits the host's iptables chains (DOCKER-ISOLATION-*) when it creates a network; another engine on
the host doing the same at that moment makes one of them fail. Such a step is worth repeating."""


def transient(stderr: str) -> bool:
    """The failure is the host's shared iptables, not the project: run the step again."""
    return IPTABLES_RACE in stderr


def _routed_pools() -> set[int]:
    """The ``n`` of every ``10.<n>.0.0/16`` the host already routes (another engine's networks, or bridges an
    earlier run left behind)."""
    out = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True, check=False).stdout
    return {int(m) for m in re.findall(r"^10\.(\d+)\.", out, re.M)}


def free_pool(first: int) -> int:
    """The first ``n`` from ``first`` (wrapping within 100..199) whose ``10.<n>.0.0/16`` the host does not route:
    a network overlapping a route already there would send its traffic to the other bridge."""
    taken = _routed_pools()
    for step in range(100):
        n = 100 + (first - 100 + step) % 100
        if n not in taken:
            return n
    raise RuntimeError("no free 10.<n>.0.0/16 address pool between 10.100 and 10.199 on this host")


def _overlay() -> bool:
    try:
        return "overlay" in Path("/proc/filesystems").read_text()
    except OSError:
        return False


class DockerEngine:
    """containerd + dockerd under ``folder``; :meth:`stop` ends both and unmounts what they mounted."""

    def __init__(self, folder: Path, *, pool: int | None = None) -> None:
        for binary in (DOCKERD, CONTAINERD, DOCKER):
            if not os.access(binary, os.X_OK):
                missing(f"{binary} missing: {APT_HINT}")
        if os.geteuid() != 0:
            missing("dockerd needs root")
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.socket = folder / "docker.sock"
        self.containerd_socket = folder / "containerd.sock"
        self.pool = pool if pool is not None else free_pool(100 + os.getpid() % 100)
        self.env = {**os.environ, "DOCKER_HOST": f"unix://{self.socket}", "DOCKER_CONFIG": str(folder / "client")}
        self._procs: list[subprocess.Popen[bytes]] = []

    def start(self, timeout: float = 60) -> DockerEngine:
        f = self.folder
        config = f / "containerd.toml"
        config.write_text(
            "version = 2\n"
            f'root = "{f / "containerd-root"}"\n'
            f'state = "{f / "containerd-state"}"\n'
            "[grpc]\n"
            f'  address = "{self.containerd_socket}"\n'
            "[plugins]\n"
            '  [plugins."io.containerd.grpc.v1.cri"]\n'
            "    disable_tcp_service = true\n"
        )
        containerd_log = (f / "containerd.log").open("wb")
        self._procs.append(
            subprocess.Popen(
                [CONTAINERD, "--config", str(config)],
                stdout=containerd_log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        self._wait(self.containerd_socket.exists, "containerd", timeout)
        dockerd_log = (f / "dockerd.log").open("wb")
        self._procs.append(
            subprocess.Popen(
                [
                    DOCKERD,
                    "--host",
                    f"unix://{self.socket}",
                    "--containerd",
                    str(self.containerd_socket),
                    "--data-root",
                    str(f / "data"),
                    "--exec-root",
                    str(f / "exec"),
                    "--pidfile",
                    str(f / "dockerd.pid"),
                    "--storage-driver",
                    "overlay2" if _overlay() else "vfs",
                    "--exec-opt",
                    "native.cgroupdriver=cgroupfs",
                    "--bridge",
                    "none",
                    "--default-address-pool",
                    f"base=10.{self.pool}.0.0/16,size=24",
                    "--log-level",
                    "warn",
                ],
                stdout=dockerd_log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        self._wait(lambda: self.docker("info", check=False).returncode == 0, "dockerd", timeout)
        return self

    def _wait(self, ready: object, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if callable(ready) and ready():
                return
            if any(p.poll() is not None for p in self._procs):
                break
            time.sleep(0.2)
        logs = "".join(
            (self.folder / name).read_text(errors="replace")[-3000:]
            for name in ("containerd.log", "dockerd.log")
            if (self.folder / name).exists()
        )
        self.stop()
        raise RuntimeError(f"{what} did not start:\n{logs}")

    def docker(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        for _ in range(3):
            result = subprocess.run(
                [DOCKER, *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
            )
            if result.returncode == 0 or not transient(result.stderr):
                break
            time.sleep(2)
        if check and result.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
        return result

    def load(self, podman: list[str], image: str, *, tag: str | None = None) -> None:
        """``podman save image | docker load``, then tag it as ``tag`` (the reference the spec names)."""
        save = subprocess.Popen([*podman, "save", "--format", "docker-archive", image], stdout=subprocess.PIPE)
        loaded = subprocess.run(
            [DOCKER, "load"], stdin=save.stdout, env=self.env, capture_output=True, text=True, timeout=900, check=False
        )
        save.wait(timeout=60)
        if save.returncode != 0 or loaded.returncode != 0:
            raise RuntimeError(f"loading {image} failed: {loaded.stderr[-2000:]}")
        if tag and tag != image:
            self.docker("tag", image, tag)

    def load_all(self, podman: list[str], images: list[str]) -> None:
        """Several images in one ``podman save`` archive: the layers they share travel once."""
        save = subprocess.Popen(
            [*podman, "save", "--multi-image-archive", "--format", "docker-archive", *images], stdout=subprocess.PIPE
        )
        loaded = subprocess.run(
            [DOCKER, "load"], stdin=save.stdout, env=self.env, capture_output=True, text=True, timeout=1800, check=False
        )
        save.wait(timeout=60)
        if save.returncode != 0 or loaded.returncode != 0:
            raise RuntimeError(f"loading {images} failed: {loaded.stderr[-2000:]}")

    def stop(self) -> None:
        """Containers and networks first (dockerd keeps a stopped network's bridge and its iptables rules on
        the host), then dockerd, then containerd; then every mount left under the folder."""
        if self._procs and self.socket.exists():
            ids = self.docker("ps", "-aq", check=False, timeout=60).stdout.split()
            if ids:
                self.docker("rm", "-f", *ids, check=False, timeout=120)
            self.docker("network", "prune", "-f", check=False, timeout=60)
        for proc in reversed(self._procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)
        self._procs.clear()
        mounts = [
            line.split()[1]
            for line in Path("/proc/mounts").read_text().splitlines()
            if line.split()[1].startswith(str(self.folder))
        ]
        for mount in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", mount], capture_output=True, check=False)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


def engine(folder: Path) -> Iterator[DockerEngine]:
    """For a fixture: ``yield from engine(tmp)`` starts one, stops and removes it afterwards."""
    started = DockerEngine(folder).start()
    try:
        yield started
    finally:
        started.remove()
