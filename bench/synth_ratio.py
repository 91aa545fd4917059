#!/usr/bin/env python3
"""Synth cost as ratios measured in one run (no absolute targets, so no timed tests).

  all environments / empty cdk8s App   what our constructs add to the floor (target <= 2.0x)
  12 environments / 3 environments     how synth scales with environments  (target <= 1.5x)
  shipped - Kubernetes-only shipped    what the cloud targets (ECS, ACI) add, reported on its own

The Kubernetes ratios read the shipped environments that target Kubernetes (a copy of environments/
without the cloud-only ones): aws-cdk-lib is imported only for an environment that targets ECS.

Each sample is a fresh process, as `make synth` and `cdk8s synth` run it; the
runs are interleaved so drift on the machine hits both sides alike. Medians.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def on_kubernetes(path: Path) -> bool:
    return "kubernetes" in (yaml.safe_load(path.read_text()).get("targets") or ["kubernetes"])


def kubernetes_only(folder: Path) -> Path:
    """The shipped environments that target Kubernetes, with the releases file."""
    shutil.copytree(ROOT / "environments" / "releases", folder / "releases")
    for path in (ROOT / "environments").glob("*.yaml"):
        if on_kubernetes(path):
            shutil.copy(path, folder / path.name)
    return folder


def generated(folder: Path, count: int) -> Path:
    """``count`` environments cloned from the shipped Kubernetes ones under new names."""
    folder.mkdir()
    shipped = sorted(p for p in (ROOT / "environments").glob("*.yaml") if on_kubernetes(p))
    for i in range(count):
        data = yaml.safe_load(shipped[i % len(shipped)].read_text())
        name = f"{data['name']}{i}"
        data.update(name=name, namespace=f"kga-{name}", domain=f"{name}.example.com")
        # What a copy must change (README): its own backups, identity and secret-store path.
        data["backup"]["target"] = f"s3://acme-kga-backups/{name}"
        if data.get("cloud", {}).get("workloadIdentity"):
            data["cloud"]["workloadIdentity"] = f"arn:aws:iam::444455556666:role/kga-{name}"
        data.setdefault("secrets", {})["remoteKeyPrefix"] = f"kga/{name}/"
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(data))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    os.environ.setdefault("JSII_NODE", str(ROOT / ".tools" / "jsii-node"))
    py = sys.executable
    # The same interpreter flags as `make synth` (Makefile: SYNTH), for every side.
    py_flags = [py, "-O"]
    work = Path(tempfile.mkdtemp())
    try:
        three, twelve = generated(work / "env3", 3), generated(work / "env12", 12)
        commands = {
            "empty": [*py_flags, str(ROOT / "bench" / "empty_app.py"), str(work / "empty")],
            "floor": [*py_flags, str(ROOT / "bench" / "library_floor.py"), str(work / "floor")],
            "kubernetes": [
                *py_flags,
                "app.py",
                "--environments",
                str(kubernetes_only(work / "envk")),
                "--outdir",
                str(work / "dk"),
                "--docs",
                str(work / "docsk"),
            ],
            "shipped": [*py_flags, "app.py", "--outdir", str(work / "d0"), "--docs", str(work / "docs0")],
            "3": [
                *py_flags,
                "app.py",
                "--environments",
                str(three),
                "--outdir",
                str(work / "d3"),
                "--docs",
                str(work / "docs3"),
            ],
            "12": [
                *py_flags,
                "app.py",
                "--environments",
                str(twelve),
                "--outdir",
                str(work / "d12"),
                "--docs",
                str(work / "docs12"),
            ],
        }
        samples: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, cmd in commands.items():
                samples[name].append(timed(cmd))
    finally:
        shutil.rmtree(work)
    med = {name: statistics.median(values) for name, values in samples.items()}
    print(f"medians of {args.runs} interleaved runs (s): " + ", ".join(f"{k}={v:.3f}" for k, v in med.items()))
    print(f"Kubernetes environments / empty App:   {med['kubernetes'] / med['empty']:.2f}x (target <= 2.0x)")
    print(f"Kubernetes environments / library floor: {med['kubernetes'] / med['floor']:.2f}x")
    print(f"cloud targets (ECS, ACI) add:   {med['shipped'] - med['kubernetes']:.2f} s to the shipped synth")
    print(f"library floor / empty App:      {med['floor'] / med['empty']:.2f}x")
    print(f"12 environments / 3:            {med['12'] / med['3']:.2f}x (target <= 1.5x)")
    # The ratio above grows as the fixed cost shrinks; the marginal cost is the figure to watch.
    print(f"each environment beyond 3:      {(med['12'] - med['3']) / 9 * 1000:.0f} ms")


if __name__ == "__main__":
    main()
