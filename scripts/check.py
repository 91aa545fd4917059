#!/usr/bin/env python3
"""`make check`: synth plus every static gate on every environment, each tool timed.

Synth itself runs the strict schemas (Kubernetes and the vendored CRDs) and the
cross-reference gate before it swaps dist/. Then, side by side on the free
cores: checkov over every dist/<env>/, network-config-analyzer against the
expected matrix, and promtool (rules and every alert's unit test). The last
two run through their pytest modules, so `make check` and `make test` share
one definition of each gate.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = str(ROOT / ".venv" / "bin" / "python")


def _pytest(*selection: str) -> list[str]:
    return [PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--no-header", *selection]


def _envs() -> list[str]:
    """The environments in dist/: read after synth, so a new environment is scanned too."""
    # A folder without kustomization.yaml holds another target's output (dist/<env>/compose/) only.
    return sorted(
        p.name
        for p in (ROOT / "dist").iterdir()
        if p.is_dir() and p.name != "argocd" and (p / "kustomization.yaml").exists()
    )


def gates() -> dict[str, list[str]]:
    return {
        "checkov": [
            str(ROOT / ".venvs" / "checkov" / "bin" / "checkov"),
            "--skip-download",
            "--framework",
            "kubernetes",
            "--quiet",
            "--compact",
            *[arg for env in _envs() for arg in ("-d", f"dist/{env}")],
        ],
        "network-config-analyzer": _pytest("tests/test_network_policies.py", "-k", "test_matrix_holds_in_dist"),
        "promtool": _pytest("tests/test_alerts.py", "-k", "promtool"),
    }


def run(name: str, command: list[str]) -> tuple[str, float, int, str]:
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "CI": "true"})
    return name, time.perf_counter() - start, result.returncode, result.stdout[-3000:] + result.stderr[-3000:]


def main() -> int:
    total = time.perf_counter()
    results = [run("synth (schemas, CRDs, cross-references)", [PY, "-O", "app.py"])]
    if results[0][2] == 0:
        commands = gates()
        with ThreadPoolExecutor(max_workers=len(commands)) as pool:
            results += list(pool.map(lambda item: run(*item), commands.items()))
    width = max(len(name) for name, *_ in results)
    failed = False
    for name, seconds, code, output in results:
        print(f"{name:<{width}}  {seconds:6.1f} s  {'ok' if code == 0 else 'FAILED'}")
        if code != 0:
            failed = True
            print(output, file=sys.stderr)
    print(f"{'check':<{width}}  {time.perf_counter() - total:6.1f} s  {'FAILED' if failed else 'ok'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
