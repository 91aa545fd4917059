"""External tools the tests run: found in their own environments, required in CI."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def require_tool(name: str, *candidates: Path, hint: str) -> str:
    """Path of a tool; a missing tool skips locally and fails in CI (``CI`` is set)."""
    for candidate in candidates:
        if candidate.exists():
            return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    message = f"{name} not found ({hint})"
    if os.environ.get("CI"):
        pytest.fail(message + " -- CI must have it: scripts/setup.sh test installs it")
    pytest.skip(message)
