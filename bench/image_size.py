#!/usr/bin/env python3
"""Compare image sizes: hardened multi-stage vs the agent's original recipe.

Builds tests/fixtures/agent-app twice on the same base image (the Debian-built
stand-in for python:3.11-slim-bookworm from scripts/build-test-base.sh, since
Docker Hub may be unreachable):

  * docker/agent/Dockerfile   (builder + slim runtime, no compilers)
  * bench/Dockerfile.original (upstream single stage: build-essential + git)

and prints uncompressed image sizes (sum of layers, as `podman image inspect`
reports them), the part each adds on top of the base, and the ratio.

    sudo python3 bench/image_size.py [--base IMAGE] [--json]

Needs root, podman and debootstrap (see scripts/build-test-base.sh). Storage
is the repo-local vfs store under .cache/images/storage.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from image_build import build_command, tool_command  # noqa: E402

FIXTURE_APP = REPO / "tests" / "fixtures" / "agent-app"
TARGET_RATIO = 0.4


def podman() -> list[str]:
    command = tool_command("podman")
    if command is None:
        sys.exit("podman not found: apt-get install podman buildah debootstrap")
    return command


def run(cmd: list[str], **kw) -> str:
    res = subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)
    if res.returncode:
        sys.exit(f"failed: {' '.join(cmd)}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res.stdout


def build(dockerfile: Path, tag: str, base: str, ctx: Path) -> float:
    t0 = time.monotonic()
    run(build_command(podman(), dockerfile, tag, base, ctx))
    return time.monotonic() - t0


def size(tag: str) -> int:
    return int(run([*podman(), "image", "inspect", "--format", "{{.Size}}", tag]).strip())


def mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", help="base image ref (default: build the stand-in)")
    ap.add_argument("--json", action="store_true", help="print JSON only")
    args = ap.parse_args()

    base = args.base or run(["bash", str(REPO / "scripts" / "build-test-base.sh")]).strip().splitlines()[-1]
    with tempfile.TemporaryDirectory() as tmp:
        ctx = Path(tmp) / "app"
        shutil.copytree(FIXTURE_APP, ctx, ignore=shutil.ignore_patterns("__pycache__"))
        t_new = build(REPO / "docker" / "agent" / "Dockerfile", "localhost/kga-agent:bench", base, ctx)
        t_old = build(REPO / "bench" / "Dockerfile.original", "localhost/kga-original:bench", base, ctx)

    s_base, s_new, s_old = size(base), size("localhost/kga-agent:bench"), size("localhost/kga-original:bench")
    result = {
        "base_image": base,
        "base_bytes": s_base,
        "hardened_bytes": s_new,
        "original_bytes": s_old,
        "ratio": round(s_new / s_old, 3),
        "ratio_above_base": round((s_new - s_base) / (s_old - s_base), 3),
        "target_ratio": TARGET_RATIO,
        "meets_target": s_new / s_old <= TARGET_RATIO,
        "build_seconds": {"hardened": round(t_new, 1), "original": round(t_old, 1)},
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"base      {base:40s} {mb(s_base):>10s}")
    for label, path, size_, secs in (
        ("original", "bench/Dockerfile.original", s_old, t_old),
        ("hardened", "docker/agent/Dockerfile", s_new, t_new),
    ):
        print(f"{label:9s} {path:40s} {mb(size_):>10s}  (+{mb(size_ - s_base)} over base, built in {secs:.0f}s)")
    print(
        f"ratio     hardened/original = {result['ratio']:.3f}  (target <= {TARGET_RATIO}: "
        f"{'met' if result['meets_target'] else 'MISSED'}); above-base ratio = {result['ratio_above_base']:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
