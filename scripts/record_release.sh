#!/usr/bin/env bash
# The release workflow's record step (.github/workflows/main.yml, job `bump`): verify each pushed
# image's signature, record its digest under the version it was built as, re-synthesize dist/.
#   scripts/record_release.sh (--certificate-identity ID --certificate-oidc-issuer URL | --key PUB.asc --lookaside URL) \
#     REPOSITORY@sha256:HEX ...
# The workflow verifies the keyless identity of its signing job; tests/test_releases.py runs this
# script with a key pair against a registry on loopback, in a clean environment as the workflow does.
# Nothing is recorded unless every image passes (scripts/verify_release.py).
# release_images.py imports kgstack, so it runs on the project's venv, which the set-up
# makes here exactly as `make synth` would; a bare python3 lacks cdk8s and constructs.
set -euo pipefail
cd "$(dirname "$0")/.."
usage() {
  echo "usage: scripts/record_release.sh (--certificate-identity ID --certificate-oidc-issuer URL | --key PUB.asc --lookaside URL) REPOSITORY@sha256:HEX ..." >&2
  exit 2
}
verify=()
while [ "$#" -gt 0 ]; do
  case "$1" in
    --key | --lookaside | --certificate-identity | --certificate-oidc-issuer)
      [ "$#" -ge 2 ] || usage
      verify+=("$1" "$2")
      shift 2
      ;;
    -*) usage ;;
    *) break ;;
  esac
done
{ [ "$#" -gt 0 ] && [ "${#verify[@]}" -gt 0 ]; } || usage
scripts/setup.sh synth >&2
# A repository no environment deploys (another owner than the environments name) is refused first.
.venv/bin/python scripts/release_images.py --check "$@"
built=$(.venv/bin/python scripts/verify_release.py "${verify[@]}" "$@")
mapfile -t refs <<<"$built"
.venv/bin/python scripts/release_images.py "${refs[@]}"
make --no-print-directory SETUP=true synth
