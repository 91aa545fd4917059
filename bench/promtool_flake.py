#!/usr/bin/env python3
"""Run every promtool unit test N times (default 50) against the rendered kga-prod rules: 0 failures.

For comparison it also runs KgaEdge5xxRatioHigh N times against the old grouping (the
alert in the components group, away from the SLI it reads): promtool orders groups by Go
map iteration when a test names no ``group_eval_order``, so that alert sometimes read its
SLI before it was recorded and fired one evaluation late (issue 9, defect 9).

  PYTHONPATH=constructs .venv/bin/python bench/promtool_flake.py [N]
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "constructs")]

from monitoring_support import build, promtool, props  # noqa: E402

MOVED = "KgaEdge5xxRatioHigh"


def rules() -> list[dict[str, Any]]:
    _, _, objects = build(props())
    groups: list[dict[str, Any]] = objects["PrometheusRule/kga-prod"]["spec"]["groups"]
    for group in groups:
        for rule in group["rules"]:
            rule.pop("annotations", None)  # the unit tests assert labels only
    return groups


def failures(tool: str, folder: Path, test: str, n: int) -> int:
    run = [tool, "test", "rules", test]
    return sum(subprocess.run(run, cwd=folder, capture_output=True).returncode != 0 for _ in range(n))


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    tool = promtool()
    tests = sorted((ROOT / "tests" / "promtool").glob("*.yaml"))
    groups = rules()
    old = copy.deepcopy(groups)
    moved = [r for r in old[0]["rules"] if r.get("alert") == MOVED]
    old[0]["rules"] = [r for r in old[0]["rules"] if r.get("alert") != MOVED]
    old[1]["rules"] = moved + old[1]["rules"]
    with tempfile.TemporaryDirectory() as tmp:
        now, before = Path(tmp) / "now", Path(tmp) / "before"
        for folder, content in ((now, groups), (before, old)):
            folder.mkdir()
            (folder / "rules.yaml").write_text(yaml.safe_dump({"groups": content}, sort_keys=False))
            for test in tests:
                shutil.copy(test, folder / test.name)
        failed = {t.stem: failures(tool, now, t.name, n) for t in tests}
        old_failed = failures(tool, before, f"{MOVED}.yaml", n)
    print(f"{len(tests)} unit tests x {n} runs = {len(tests) * n} runs, {sum(failed.values())} failed")
    for name, count in failed.items():
        if count:
            print(f"  {name}: {count}/{n}")
    print(f"{MOVED} with the old grouping: {old_failed}/{n} failed")
    return 1 if any(failed.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
