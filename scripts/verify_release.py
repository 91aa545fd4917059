#!/usr/bin/env python3
"""Verify each pushed image's signature and name the version it was built as (the release workflow's check).

    scripts/verify_release.py --certificate-identity ID --certificate-oidc-issuer URL REPOSITORY@sha256:HEX ...
    scripts/verify_release.py --key PUBLIC_KEY.asc --lookaside URL REPOSITORY@sha256:HEX ...

The first form is the workflow's: ``cosign verify`` against the keyless identity of its
signing job (Fulcio certificate, Rekor entry: it needs the network). The second checks a
key pair's signature with skopeo and a ``signedBy`` policy: an OpenPGP key and
containers' simple signing, whose signatures live at the ``lookaside`` URL. The tests run
it against a registry on loopback: Debian's skopeo has sigstore signing and verification
disabled ("Debian-local change: sigstore disabled"), and cosign is not packaged.
Every image is verified before anything is printed; then each is printed as
``REPOSITORY:VERSION@sha256:HEX``, VERSION read from the image's own
``org.opencontainers.image.version`` label (skopeo inspect --config). Exit 0 all verified,
1 an image refused (unsigned, wrongly signed, no version), 2 usage. Standard library only.
``CONTAINERS_REGISTRIES_CONF``, where set, is handed to skopeo (Debian's 1.9 predates it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

_REF = re.compile(r"^(?P<repository>[a-z0-9][a-z0-9.:/_-]*)@(?P<digest>sha256:[a-f0-9]{64})$")
_VERSION = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
VERSION_LABEL = "org.opencontainers.image.version"
UNVERSIONED = "0.0.0-dev"
"""The Dockerfiles' default VERSION: an image built without the workflow's build argument."""


class RefusedError(Exception):
    """An image that must not be recorded; the message says which and why."""


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RefusedError(f"{name} not found on PATH: nothing can be verified")
    return path


def _skopeo() -> list[str]:
    conf = os.environ.get("CONTAINERS_REGISTRIES_CONF")
    return [_tool("skopeo"), *(["--registries-conf", conf] if conf else [])]


def verify_keyless(ref: str, identity: str, issuer: str) -> None:
    result = _run(
        [_tool("cosign"), "verify", ref, "--certificate-identity", identity, "--certificate-oidc-issuer", issuer]
    )
    if result.returncode != 0:
        raise RefusedError(f"{ref}: no valid signature by {identity}: {result.stderr.strip()[-2000:]}")


def verify_key(ref: str, repository: str, key: Path, lookaside: str, scratch: Path) -> None:
    """skopeo applies the policy before it copies a layer: a refused image fails at once."""
    registries_d = scratch / "registries.d"
    registries_d.mkdir(exist_ok=True)
    (registries_d / "lookaside.yaml").write_text(f"default-docker:\n  lookaside: {json.dumps(lookaside)}\n")
    policy = scratch / "policy.json"
    requirement = {"type": "signedBy", "keyType": "GPGKeys", "keyPath": str(key.resolve())}
    policy.write_text(
        json.dumps({"default": [{"type": "reject"}], "transports": {"docker": {repository: [requirement]}}})
    )
    target = scratch / "image"
    shutil.rmtree(target, ignore_errors=True)
    command = [*_skopeo(), "--policy", str(policy), "--registries.d", str(registries_d), "copy", "--quiet"]
    result = _run([*command, f"docker://{ref}", f"dir:{target}"])
    shutil.rmtree(target, ignore_errors=True)
    if result.returncode != 0:
        raise RefusedError(f"{ref}: no valid signature by {key}: {result.stderr.strip()[-2000:]}")


def built_version(ref: str) -> str:
    result = _run([*_skopeo(), "inspect", "--config", f"docker://{ref}"])
    if result.returncode != 0:
        raise RefusedError(f"{ref}: the registry did not answer for it: {result.stderr.strip()[-2000:]}")
    labels = (json.loads(result.stdout).get("config") or {}).get("Labels") or {}
    version = labels.get(VERSION_LABEL)
    if not version or version == UNVERSIONED or not _VERSION.match(version):
        raise RefusedError(f"{ref}: label {VERSION_LABEL}={version!r} is not the version of a release build")
    return str(version)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("refs", nargs="+", metavar="REPOSITORY@sha256:HEX")
    parser.add_argument("--key", type=Path, help="OpenPGP public key (armored) of the signing key pair")
    parser.add_argument("--lookaside", help="with --key: where its signatures are stored (file:// or https://)")
    parser.add_argument("--certificate-identity", help="keyless: the signing job's workflow identity")
    parser.add_argument("--certificate-oidc-issuer", help="keyless: the OIDC issuer of that identity")
    args = parser.parse_args(argv)
    keyless = args.certificate_identity is not None or args.certificate_oidc_issuer is not None
    complete = bool(args.certificate_identity and args.certificate_oidc_issuer)
    if (args.key is not None) == keyless or (keyless and not complete):
        parser.error("give --key and --lookaside, or both --certificate-identity and --certificate-oidc-issuer")
    if args.key is not None and not args.lookaside:
        parser.error("--key needs --lookaside, where the signatures are stored")
    matches = [_REF.match(ref) for ref in args.refs]
    for ref, match in zip(args.refs, matches, strict=True):
        if match is None:
            parser.error(f"{ref!r}: expected REPOSITORY@sha256:<64 hex>")
    built = []
    try:
        with tempfile.TemporaryDirectory(prefix="verify-release-") as scratch:
            for ref, match in zip(args.refs, matches, strict=True):
                assert match is not None
                if keyless:
                    verify_keyless(ref, args.certificate_identity, args.certificate_oidc_issuer)
                else:
                    verify_key(ref, match["repository"], args.key, args.lookaside, Path(scratch))
                built.append(f"{match['repository']}:{built_version(ref)}@{match['digest']}")
    except RefusedError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 1
    print("\n".join(built))
    return 0


if __name__ == "__main__":
    sys.exit(main())
