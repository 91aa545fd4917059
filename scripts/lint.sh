#!/usr/bin/env bash
# The one definition of lint: `make lint` runs it, and tests/test_tooling.py runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.venv/bin
"$bin/ruff" check .
"$bin/ruff" format --check .
"$bin/mypy"
