"""ruff and mypy --strict run clean (part of the test command, so CI enforces them)."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT

BIN = ROOT / ".venv" / "bin"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff() -> None:
    result = run(str(BIN / "ruff"), "check", ".")
    assert result.returncode == 0, result.stdout


def test_mypy_strict() -> None:
    result = run(sys.executable, "-m", "mypy")
    assert result.returncode == 0, result.stdout
