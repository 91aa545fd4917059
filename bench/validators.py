#!/usr/bin/env python3
"""The static schema gate: kubeconform -strict (scripts/kubeconform.py) against kgstack.schema
(jsonschema in Python), on the same files (every dist/ manifest) for every supported Kubernetes
version (1.27-1.35), as the gate runs them.

Both sides start cold in every sample: kgstack.schema's compiled-validator caches are cleared, and
kubeconform is a fresh process per version (its schemas are files, prepared once beforehand). The
import of kgstack, which both pay once, is left out. Runs are interleaved so drift on the machine
hits both sides alike. Prints the medians and their ratio.

    PYTHONPATH=constructs .venv/bin/python bench/validators.py --runs 5
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "constructs"))

from kgstack import schema  # noqa: E402
from kgstack.environment import SUPPORTED_KUBERNETES  # noqa: E402

FILES = sorted(str(p) for p in (ROOT / "dist").rglob("*.yaml") if p.name != "kustomization.yaml")


def _wrapper():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("kubeconform_wrapper", ROOT / "scripts" / "kubeconform.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def python_gate(objects: list[dict]) -> int:  # type: ignore[type-arg]
    for cached in (schema._validator, schema._definitions, schema._crd_validator, schema._crds):
        cached.cache_clear()
    return sum(len(schema.schema_problems(o, v)) for v in SUPPORTED_KUBERNETES for o in objects)


def kubeconform_gate(kc) -> int:  # type: ignore[no-untyped-def]
    return sum(kc.validate(v, FILES).returncode for v in SUPPORTED_KUBERNETES)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    kc = _wrapper()
    objects = [yaml.safe_load(Path(f).read_text()) for f in FILES]
    assert kubeconform_gate(kc) == 0 and python_gate(objects) == 0, "dist/ must be valid to compare speed"
    samples: dict[str, list[float]] = {"kubeconform": [], "kgstack.schema": []}
    for _ in range(args.runs):
        start = time.perf_counter()
        kubeconform_gate(kc)
        samples["kubeconform"].append(time.perf_counter() - start)
        start = time.perf_counter()
        python_gate(objects)
        samples["kgstack.schema"].append(time.perf_counter() - start)
    medians = {name: statistics.median(s) for name, s in samples.items()}
    print(f"{len(FILES)} manifests x {len(SUPPORTED_KUBERNETES)} Kubernetes versions, {args.runs} runs, medians:")
    for name, median in medians.items():
        print(f"  {name:15} {median:6.2f} s")
    print(f"  kgstack.schema / kubeconform = {medians['kgstack.schema'] / medians['kubeconform']:.2f}x")


if __name__ == "__main__":
    main()
