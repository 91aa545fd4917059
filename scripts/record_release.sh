#!/usr/bin/env bash
# The release workflow's record step (.github/workflows/main.yml, job `bump`): record the
# digests the registry answered for, then re-synthesize dist/ with them.
#   scripts/record_release.sh REPOSITORY[:TAG]@sha256:HEX ...
# release_images.py imports kgstack, so it runs on the project's venv, which the set-up
# makes here exactly as `make synth` would; a bare python3 lacks cdk8s and constructs.
# tests/test_releases.py runs this script in a clean environment, as the workflow does.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$#" -eq 0 ]; then
  echo "usage: scripts/record_release.sh REPOSITORY[:TAG]@sha256:HEX ..." >&2
  exit 2
fi
scripts/setup.sh synth >&2
.venv/bin/python scripts/release_images.py "$@"
make --no-print-directory SETUP=true synth
