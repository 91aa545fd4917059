"""External tools the tests run: a missing one skips on a laptop and fails in CI (``CI`` is set)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, NoReturn

import pytest

ROOT = Path(__file__).resolve().parent.parent


def missing(message: str) -> NoReturn:
    """Skip with ``message`` locally; fail in CI, where scripts/setup.sh test must have installed it."""
    if os.environ.get("CI"):
        pytest.fail(f"{message} -- required in CI (scripts/setup.sh test installs it)")
    pytest.skip(message)


def require_tool(name: str, *candidates: Path, hint: str) -> str:
    """Path of a tool: the given candidates, then this venv's bin, then PATH."""
    for candidate in (*candidates, Path(sys.executable).parent / name):
        if candidate.exists():
            return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    missing(f"{name} not found ({hint})")


def free_port() -> int:
    """A free TCP port on loopback for a server the test starts."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def checkov(target: Path | str, framework: str = "kubernetes") -> dict[str, Any]:
    """checkov's JSON report on the folder ``target`` (relative to the repository, or absolute), offline."""
    binary = require_tool("checkov", ROOT / ".venvs/checkov/bin/checkov", hint="scripts/setup.sh test")
    result = subprocess.run(
        [binary, "--skip-download", "--framework", framework, "-d", str(target), "--quiet", "--compact", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert result.returncode in (0, 1), result.stderr[-2000:]
    report = json.loads(result.stdout)
    return report[0] if isinstance(report, list) else report  # type: ignore[no-any-return]
