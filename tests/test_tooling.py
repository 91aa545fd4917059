"""Lint runs clean, from the same script `make lint` runs; the make targets are wired as documented."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

NODE_BIN = ROOT / ".tools" / "node_modules" / ".bin"


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, **env})


def make_dry_run(target: str, *variables: str) -> list[str]:
    # Under `make test` (CI) this make is nested: without --no-print-directory it adds "Entering directory".
    result = run("make", "--no-print-directory", "-n", target, *variables)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_lint_script_passes() -> None:
    # Exactly what `make lint` runs after its set-up: ruff check, ruff format --check, mypy --strict.
    result = run(str(ROOT / "scripts" / "lint.sh"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_make_lint_sets_up_then_runs_the_lint_script() -> None:
    assert make_dry_run("lint") == ["scripts/setup.sh lint", "scripts/lint.sh"]


def test_lint_setup_installs_the_linters() -> None:
    lint = (ROOT / "requirements" / "lint.txt").read_text().splitlines()
    assert {line.split("==")[0] for line in lint if "==" in line} >= {"ruff", "mypy"}
    assert "-r lint.txt" in (ROOT / "requirements" / "test.txt").read_text().splitlines()
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert '[ "$mode" = lint ] && reqs=requirements/lint.txt' in setup


def test_restore_and_backups_targets_run_the_app_in_its_venv() -> None:
    # Finding 3: the documented command must not depend on the caller's python.
    setup, restore = make_dry_run("restore", "ENV=prod", "STORE=chroma", "BACKUP_ID=20260320T020000.123Z")
    assert setup == "scripts/setup.sh synth"
    assert restore.strip() == '.venv/bin/python -O app.py restore "prod" "chroma" --backup-id "20260320T020000.123Z"'
    _, forced = make_dry_run("restore", "ENV=prod", "STORE=redis", "FORCE=1")
    assert forced.strip() == '.venv/bin/python -O app.py restore "prod" "redis"  --force'
    setup, backups = make_dry_run("backups", "ENV=prod", "STORE=redis")
    assert (setup, backups.strip()) == ("scripts/setup.sh synth", '.venv/bin/python -O app.py backups "prod" "redis"')


def test_docs_use_the_make_targets() -> None:
    docs = [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]
    offenders = [str(p.relative_to(ROOT)) for p in docs if "python app.py restore" in p.read_text()]
    assert offenders == []
    assert "make restore ENV=$ENV STORE=redis" in (ROOT / "docs" / "backup-restore.md").read_text()


def test_diff_against_committed_dist_reports_per_object(tmp_path: Path) -> None:
    result = run("make", "-s", "diff", "SETUP=true", "ENV=dev")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "dev: no change"


def test_cdk8s_synth_is_quiet_and_ends_with_the_synth_summary(tmp_path: Path) -> None:
    if not (NODE_BIN / "cdk8s").exists():
        pytest.fail("cdk8s-cli missing: run scripts/setup.sh synth")
    outdir = tmp_path / "dist"
    cli = f"cdk8s synth --no-check-upgrade --app '{sys.executable} -O app.py --outdir {outdir}'"
    result = run("make", "-s", "cdk8s-synth", "SETUP=true", f"CDK8S_SYNTH={cli}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == f"synthesized dev, prod, staging into {outdir}\n"
    assert result.stderr == ""


def test_ci_gate_is_strict_whoever_runs_it(tmp_path: Path) -> None:
    """Issue 9 defect 12: a missing tool failed only when the caller happened to set CI=true.

    .ci/run is run with a stand-in `make` that records what it sees: CI must be set for `make test`."""
    fake = tmp_path / "bin"
    fake.mkdir()
    seen = tmp_path / "seen"
    (fake / "make").write_text(f'#!/bin/sh\necho "$1 CI=${{CI:-unset}}" >> {seen}\nexit 3\n')
    (fake / "make").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "CI"} | {"PATH": f"{fake}:{os.environ['PATH']}"}
    result = subprocess.run(["bash", str(ROOT / ".ci" / "run")], env=env, capture_output=True, text=True)
    assert result.returncode == 3  # the gate stops at the failed `make test`
    assert seen.read_text().splitlines() == ["test CI=true"]
