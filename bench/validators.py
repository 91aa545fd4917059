#!/usr/bin/env python3
"""The static schema gate: kubeconform -strict against kgstack.schema (jsonschema in Python), on the
same files (every dist/ manifest) for every supported Kubernetes version (1.27-1.35).

Each sample is a fresh process, as a CI step runs it; the runs are interleaved so drift on the
machine hits both sides alike. Prints the medians and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FILES = sorted(str(p) for p in (ROOT / "dist").rglob("*.yaml") if p.name != "kustomization.yaml")

PYTHON_GATE = """
import sys, yaml
from kgstack.environment import SUPPORTED_KUBERNETES
from kgstack.schema import schema_problems
objects = [yaml.safe_load(open(f)) for f in sys.argv[1:]]
problems = [p for v in SUPPORTED_KUBERNETES for o in objects for p in schema_problems(o, v)]
sys.exit(1 if problems else 0)
"""


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL, env={"PYTHONPATH": "constructs"})
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    kubeconform = [sys.executable, "scripts/kubeconform.py", "all", *FILES]
    python = [sys.executable, "-c", PYTHON_GATE, *FILES]
    timed(kubeconform)  # writes the CRD schema cache once
    samples: dict[str, list[float]] = {"kubeconform": [], "kgstack.schema": []}
    for _ in range(args.runs):
        samples["kubeconform"].append(timed(kubeconform))
        samples["kgstack.schema"].append(timed(python))
    medians = {name: statistics.median(s) for name, s in samples.items()}
    print(f"{len(FILES)} manifests x 9 Kubernetes versions, {args.runs} runs each, medians:")
    for name, median in medians.items():
        print(f"  {name:15} {median:6.2f} s")
    print(f"  kgstack.schema / kubeconform = {medians['kgstack.schema'] / medians['kubeconform']:.2f}x")


if __name__ == "__main__":
    main()
