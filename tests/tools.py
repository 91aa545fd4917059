"""External tools the tests run: a missing one skips on a laptop and fails in CI (``CI`` is set)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import pytest

ROOT = Path(__file__).resolve().parent.parent


def missing(message: str) -> NoReturn:
    """Skip with ``message`` locally; fail in CI, where scripts/setup.sh test must have installed it."""
    if os.environ.get("CI"):
        pytest.fail(f"{message} -- required in CI (scripts/setup.sh test installs it)")
    pytest.skip(message)


GO_BUILD_TIMEOUT = 3600.0
GO_BUILDS_IN_COLD_ORDER = ("kubeconform", "compose", "helm", "kwok", "node", "envoy-gateway", "control-plane")
"""Set-up's Go builds in the order they end on a fresh machine (a cold ``.ci/run`` of ef30acf ended them 2, 12,
18, 19, 22, 32 and 34 minutes in): the tests that wait for an earlier one run first (tests/conftest.py)."""
"""Longest wait for one of set-up's Go builds: a cold Envoy Gateway build on a loaded 2-core machine stays under it."""


def _alive(pid_file: Path) -> bool:
    """Whether the process recorded in ``pid_file`` (``PID START_TIME``) still runs: same pid, same start."""
    try:
        pid, started = pid_file.read_text().split()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return False
    return stat.rsplit(")", 1)[1].split()[19] == started  # field 22 of proc(5), counted after "comm)"


def wait_for_go_build(name: str, timeout: float = GO_BUILD_TIMEOUT, cache: Path = ROOT / ".cache") -> None:
    """Wait for set-up's Go build ``name`` (its module folder: control-plane, node, kwok, kubeconform, helm,
    envoy-gateway, compose) when ``scripts/setup.sh test -- pytest`` (``make test``) still runs it beside
    the tests: it records ``.cache/setup-NAME.pid`` while it runs and ``.cache/setup-NAME.rc`` when it ends.
    A failed build is a missing tool, named with its log. Returns at once when the build is not running."""
    pid_file, rc_file = cache / f"setup-{name}.pid", cache / f"setup-{name}.rc"
    deadline = time.monotonic() + timeout
    if _alive(pid_file) and not rc_file.exists():
        print(f"\n[tests] waiting for set-up's {name} build (log: .cache/setup-{name}.log)", file=sys.stderr)
    while _alive(pid_file) and not rc_file.exists():
        if time.monotonic() > deadline:
            pytest.fail(f"set-up's {name} build still runs after {timeout:.0f} s (log: .cache/setup-{name}.log)")
        time.sleep(2)
    status = rc_file.read_text().strip() if rc_file.exists() else "0"
    if status != "0":
        missing(f"set-up's {name} build failed (exit {status}); its log: .cache/setup-{name}.log")


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


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate a server the tests started, and kill it if it has not exited after 20 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
