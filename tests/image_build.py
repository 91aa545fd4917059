"""Rootful podman builds without a Docker engine: shared by tests/test_images.py and bench/image_size.py.

Storage is repo-local (``.cache/images``, the layout scripts/build-test-base.sh
uses) with chroot isolation, on the overlay driver where the kernel has it and
vfs otherwise: vfs copies every layer (an agent build took 16-24 min and wrote
~30 GB on 2 cores, against 3-4 min on overlay).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE_DIR = Path(os.environ.get("KGA_IMAGE_CACHE", REPO / ".cache" / "images"))
AGENT_DOCKERFILE = REPO / "docker" / "agent" / "Dockerfile"
_CHROMA_RELEASE = REPO / "docker" / "agent" / "chroma_release.py"


def chroma_release() -> str:
    """The Chroma release every environment in dist/ deploys: the agent image's client pin."""
    spec = importlib.util.spec_from_file_location("chroma_release", _CHROMA_RELEASE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.release())


def default_driver() -> str:
    """overlay when the kernel offers it (same rule as scripts/build-test-base.sh), else vfs."""
    try:
        filesystems = Path("/proc/filesystems").read_text()
    except OSError:
        return "vfs"
    return "overlay" if any(line.split()[-1:] == ["overlay"] for line in filesystems.splitlines()) else "vfs"


def storage_args() -> list[str]:
    """Repo-local container storage, same layout as scripts/build-test-base.sh."""
    driver = os.environ.get("KGA_STORAGE_DRIVER") or default_driver()
    root = CACHE_DIR / ("storage" if driver == "vfs" else f"storage-{driver}")
    runroot = os.environ.get("KGA_PODMAN_RUNROOT", "/run/kga-podman") + ("" if driver == "vfs" else f"-{driver}")
    return ["--root", str(root), "--runroot", runroot, "--storage-driver", driver]


def tool_command(name: str) -> list[str] | None:
    """``podman``/``buildah`` with the repo-local storage, or ``None`` when not installed."""
    exe = shutil.which(name)
    return [exe, *storage_args()] if exe else None


def ca_secret() -> list[str]:
    """Hand the host's CA bundle to pip in the build (TLS-intercepting proxies); never a layer."""
    for cand in (os.environ.get("PIP_CERT"), os.environ.get("SSL_CERT_FILE"), "/etc/ssl/certs/ca-certificates.crt"):
        if cand and Path(cand).is_file():
            return ["--secret", f"id=pip_ca,src={cand}"]
    return []


def build_command(podman: list[str], dockerfile: Path, tag: str, base: str, context: Path, *extra: str) -> list[str]:
    """``podman build`` of ``dockerfile`` on ``base`` (swapped in through the BASE_IMAGE build arg)."""
    ignore = dockerfile.parent / ".dockerignore"
    return [
        *podman,
        "build",
        "--isolation",
        "chroot",
        "--format",
        "docker",
        "--layers",
        "-f",
        str(dockerfile),
        *(["--ignorefile", str(ignore)] if ignore.exists() else []),
        *ca_secret(),
        "--build-arg",
        f"BASE_IMAGE={base}",
        # The agent image pins its chromadb client with this; the release workflow passes the same.
        *(
            ["--build-context", f"kga={AGENT_DOCKERFILE.parent}", "--build-arg", f"CHROMADB_VERSION={chroma_release()}"]
            if dockerfile == AGENT_DOCKERFILE
            else []
        ),
        *extra,
        "-t",
        tag,
        str(context),
    ]
