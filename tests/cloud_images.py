"""Local stand-ins for the images the cloud templates name (nothing can be pulled here), built with podman.

``dist/aws/ecs/template.json`` and ``dist/azure/aci/`` name our images (agent, web) and two upstream ones
(nginx-unprivileged, chroma). Each is built here, and the run tags it as the reference the template names
(by repository and tag: a local build cannot carry the upstream digest, which is therefore not checked):

* ``agent``: docker/agent/Dockerfile on the stand-in app (as tests/test_images.py builds it), trusting the
  test CA as a company proxy's CA would be: its model provider and its cache speak TLS with certificates from
  that CA (the ElastiCache and Azure Cache certificates are from public CAs the image already trusts);
* ``nginx``: nginx-unprivileged's stand-in: nginx from Debian unstable (1.27.3 or later, which the ECS edge's
  ``server ... resolve`` needs; bookworm's 1.22 refuses it) and wget (the health checks' client), uid 101;
* ``web``: docker/web/Dockerfile on that nginx;
* ``chroma``: the Chroma server of the agent image's chromadb (the pinned release), behind ``dumb-init`` as
  the upstream image runs it;
* ``redis``: docker/redis/Dockerfile, for the managed caches' stand-ins (redis-server with TLS and AUTH);
* ``backup``: docker/backup/Dockerfile (as tests/real_node.py builds it), trusting the test CA: its S3 is moto.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from image_build import AGENT_DOCKERFILE, CACHE_DIR, build_command, tool_command
from real_node import TRUST_CA, node_ca
from tools import ROOT, missing

BASE_SCRIPT = ROOT / "scripts" / "build-test-base.sh"
FIXTURE_APP = ROOT / "tests" / "fixtures" / "agent-app"
PREFIX = "localhost/kga-cloud"

STANDINS = {
    "knowledge-graph-agent": "agent",
    "knowledge-graph-agent-web": "web",
    "nginx-unprivileged": "nginx",
    "chroma": "chroma",
    "kga-redis": "redis",
    "kgbackup": "backup",
}
"""The stand-in for each image a template names, by the last part of its repository."""

_NGINX = """\
FROM {root}
RUN mkdir -p /var/cache/nginx /usr/share/nginx/html && chown 101:0 /var/cache/nginx
USER 101:101
EXPOSE 8080
ENTRYPOINT ["nginx", "-e", "stderr", "-g", "daemon off;"]
"""
NGINX_SUITE = "sid"
"""Debian's suite with nginx 1.27.3 or later (``server ... resolve``): unstable (bookworm and trixie have 1.22 and
1.26). A root file system of its own: unstable's libraries do not mix into the bookworm base."""
_CHROMA = """\
FROM {agent}
USER root
# dpkg, not apt: the agent image purged perl under git, which apt would want back first.
RUN cd /tmp && apt-get update && apt-get download dumb-init && dpkg -i dumb-init_*.deb \\
    && rm -rf dumb-init_*.deb /var/lib/apt/lists/*
USER 10001:10001
HEALTHCHECK NONE
ENTRYPOINT ["dumb-init", "--", "chroma"]
CMD ["run"]
"""


def local(name: str) -> str:
    return f"{PREFIX}-{name}:run"


def _run(cmd: list[str], timeout: float, **kw: object) -> str:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, **kw)  # type: ignore[call-overload]
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:8])} ... failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return str(result.stdout)


class Images:
    """Builds the stand-ins into the repo-local podman store; ``built``: seconds per image."""

    def __init__(self, workdir: Path) -> None:
        if os.geteuid() != 0:
            missing("image builds and dockerd need root")
        podman = tool_command("podman")
        if podman is None or not shutil.which("debootstrap"):
            missing("podman and debootstrap not installed (apt-get install podman buildah debootstrap)")
        self.podman: list[str] = podman
        self.workdir = workdir
        self.built: dict[str, float] = {}

    def _build(self, name: str, dockerfile: Path, context: Path, base: str, *extra: str) -> None:
        started = time.monotonic()
        _run(build_command(self.podman, dockerfile, local(name), base, context, *extra), 1800)
        self.built[name] = time.monotonic() - started

    def _inline(self, name: str, text: str, files: dict[str, Path] | None = None) -> None:
        context = self.workdir / f"ctx-{name}"
        context.mkdir(parents=True, exist_ok=True)
        (context / "Containerfile").write_text(text)
        for target, source in (files or {}).items():
            shutil.copy2(source, context / target)
        self._build(name, context / "Containerfile", context, "")

    def _trusting_test_ca(self, name: str, image: str) -> None:
        """``image`` with the test CA added to its trust stores (real_node.TRUST_CA), as ``name``: the servers it
        calls on the "internet" (the model provider, S3) are the tests' own."""
        user = _run([*self.podman, "image", "inspect", "--format", "{{.Config.User}}", image], 60).strip()
        ca, _ = node_ca()
        self._inline(name, TRUST_CA.format(image=image, user=user), {"test-ca.pem": ca})

    def _nginx_root(self) -> str:
        """Debian unstable with nginx and wget, debootstrapped once into the image cache, imported."""
        tarball = CACHE_DIR / f"kga-nginx-{NGINX_SUITE}.tar"
        if not tarball.exists():
            rootfs = Path(tempfile.mkdtemp(dir=CACHE_DIR, prefix="nginx-rootfs."))
            try:
                rootfs.chmod(0o755)
                _run(["debootstrap", "--variant=minbase", "--include=nginx,wget", NGINX_SUITE, str(rootfs),
                      "http://deb.debian.org/debian"], 1800)  # fmt: skip
                for junk in ("var/lib/apt/lists", "var/cache/apt/archives", "var/log"):
                    shutil.rmtree(rootfs / junk, ignore_errors=True)
                _run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", f"{tarball}.partial", "."], 600)
                Path(f"{tarball}.partial").rename(tarball)
            finally:
                shutil.rmtree(rootfs, ignore_errors=True)
        root = local("nginx-root")
        _run([*self.podman, "import", str(tarball), root], 600)
        return root

    def build(self) -> dict[str, str]:
        """Every stand-in, in order; ``{name: local tag}``."""
        env = {**os.environ, "KGA_IMAGE_CACHE": str(CACHE_DIR)}
        base = _run(["bash", str(BASE_SCRIPT)], 1800, env=env).strip().splitlines()[-1]
        app = self.workdir / "ctx-agent-app"
        shutil.copytree(FIXTURE_APP, app, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
        # The build arguments of tests/test_compose_run.py: podman reuses its layers.
        args = ("--build-arg", "VERSION=test", "--build-arg", "VCS_REF=fixture")
        self._build("agent-app", AGENT_DOCKERFILE, app, base, *args)
        self._trusting_test_ca("agent", local("agent-app"))
        self._inline("chroma", _CHROMA.format(agent=local("agent")))
        self._inline("nginx", _NGINX.format(root=self._nginx_root()))
        docker = ROOT / "docker"
        web = docker / "web"
        self._build("web", web / "Dockerfile", web, local("nginx"), f"--build-context=agent={FIXTURE_APP}")
        self._build("redis", docker / "redis" / "Dockerfile", docker / "redis", base)
        self._build("backup-app", docker / "backup" / "Dockerfile", docker / "backup", base)
        self._trusting_test_ca("backup", local("backup-app"))
        return {name: local(name) for name in ("agent", "chroma", "nginx", "web", "redis", "backup")}


if __name__ == "__main__":  # warm the store: python tests/cloud_images.py
    with tempfile.TemporaryDirectory() as folder:
        images = Images(Path(folder))
        print(images.build(), images.built)
