"""checkov over every environment's dist/: zero failed checks, and every skip inline with a reason."""

from __future__ import annotations

import pytest
import yaml
from conftest import ENV_DIRS, kubernetes_yaml
from tools import checkov

ENVIRONMENTS = ENV_DIRS


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
