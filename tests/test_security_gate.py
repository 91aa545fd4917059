"""checkov over every environment's dist/: zero failed checks, and every skip inline with a reason."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
import yaml
from conftest import ENV_DIRS, ROOT, kubernetes_yaml
from tools import require_tool

ENVIRONMENTS = ENV_DIRS


def checkov(target: str) -> dict[str, Any]:
    binary = require_tool("checkov", ROOT / ".venvs/checkov/bin/checkov", hint="scripts/setup.sh test")
    result = subprocess.run(
        [binary, "--skip-download", "--framework", "kubernetes", "-d", target, "--quiet", "--compact", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert result.returncode in (0, 1), result.stderr[-2000:]
    report = json.loads(result.stdout)
    return report[0] if isinstance(report, list) else report  # type: ignore[no-any-return]


@pytest.mark.slow
@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_checkov_reports_no_failed_checks(env: str) -> None:
    report = checkov(f"dist/{env}")
    failed = [(c["check_id"], c["resource"].split(".")[:3]) for c in report["results"]["failed_checks"]]
    assert failed == []
    assert report["summary"]["passed"] > 100


def test_every_skip_is_inline_with_a_reason() -> None:
    skips = 0
    for path in kubernetes_yaml():
        annotations = (yaml.safe_load(path.read_text()).get("metadata") or {}).get("annotations") or {}
        for key, value in annotations.items():
            if key.startswith("checkov.io/skip"):
                check, _, reason = value.partition("=")
                assert check.startswith("CKV") and len(reason) > 20, (path.name, value)
                skips += 1
    assert skips > 0
