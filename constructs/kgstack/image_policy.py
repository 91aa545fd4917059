"""The admission policy that refuses our images unless the release workflow signed them (Kyverno).

One ``ClusterPolicy`` per cluster, in its platform layer (``dist/argocd/<cluster>/platform/``):
every Pod (and, through Kyverno's autogen rules, every Deployment, StatefulSet, Job and
CronJob) whose image is one of the project's own repositories must be pinned by digest and
carry a keyless cosign signature whose certificate was issued to the release workflow.

Kyverno rather than sigstore's policy-controller: policy-controller rewrites the pod templates of
Deployments and StatefulSets to resolve tags to digests (its mutating webhook, always on), which
Argo CD reads as drift on every image still named by tag, and it denies every image no policy
matches in the namespaces it watches (``no-match-policy: deny``). Kyverno verifies only the
images listed here, and ``mutateDigest: false`` keeps the objects exactly as Argo CD applied them.

The signing identity is not typed here: :func:`signing_identity` reads it from the workflow's
``env`` (``SIGNER_OIDC_ISSUER``, ``SIGNER_IDENTITY_REGEXP``), the values its signing job
verifies each fresh signature with (``cosign verify --certificate-identity-regexp``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

import yaml
from constructs import Construct
from pydantic import AfterValidator, Field, ValidationError

from .custom_resource import custom_resource
from .model import Spec

WORKFLOW = Path(".github") / "workflows" / "main.yml"
"""The release workflow, relative to the repository: it signs the images and declares the identity."""
ISSUER_KEY = "SIGNER_OIDC_ISSUER"
SUBJECT_KEY = "SIGNER_IDENTITY_REGEXP"
REKOR_URL = "https://rekor.sigstore.dev"
"""The public transparency log ``cosign sign`` (keyless) records each signature in."""
POLICY_NAME = "kga-signed-images"


class SigningIdentityError(ValueError):
    """The workflow does not declare a usable identity; the message names the file and the key."""


def _anchored(value: str) -> str:
    # Unanchored, the regexp would admit any workflow whose identity merely contains it (a fork's, a PR's).
    if not (value.startswith("^") and value.endswith("$")):
        raise ValueError("must be anchored: start with ^ and end with $")
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"not a regular expression: {exc}") from None
    return value


class SigningIdentity(Spec):
    """Who may sign our images: the OIDC issuer and the certificate subject of the release workflow."""

    issuer: Annotated[str, Field(pattern=r"^https://\S+$")]
    """OIDC issuer of the signing certificate (GitHub Actions: ``https://token.actions.githubusercontent.com``)."""
    subject_regexp: Annotated[str, AfterValidator(_anchored)]
    """Anchored regular expression over the certificate's subject: the workflow file at the ref it runs on
    (``https://github.com/<owner>/<repo>/.github/workflows/main.yml@refs/heads/main``)."""


def signing_identity(workflow: Path) -> SigningIdentity:
    """The identity the release workflow verifies its signatures with, read from its top-level ``env``."""
    try:
        data = yaml.safe_load(workflow.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise SigningIdentityError(f"{workflow}: (file): {exc}") from None
    env = data.get("env") if isinstance(data, dict) else None
    env = env if isinstance(env, dict) else {}
    missing = [key for key in (ISSUER_KEY, SUBJECT_KEY) if not isinstance(env.get(key), str)]
    if missing:
        raise SigningIdentityError(
            "; ".join(f"{workflow}: env.{key}: missing (the signing job verifies with it)" for key in missing)
        )
    try:
        return SigningIdentity(issuer=env[ISSUER_KEY], subject_regexp=env[SUBJECT_KEY])
    except ValidationError as exc:
        keys = {"issuer": ISSUER_KEY, "subject_regexp": SUBJECT_KEY}
        raise SigningIdentityError(
            "; ".join(f"{workflow}: env.{keys[str(e['loc'][0])]}: {e['msg']}" for e in exc.errors())
        ) from None


class ImagePolicyProps(Spec):
    """What the cluster's admission policy checks."""

    repositories: Annotated[list[str], Field(min_length=1)]
    """Our own image repositories deployed on the cluster (``ghcr.io/acme/knowledge-graph-agent`` ...): exactly
    these are verified; upstream images (Chroma, Memgraph, nginx, the exporter) are not ours to sign."""
    identity: SigningIdentity
    """The release workflow's keyless identity."""
    enforce: bool
    """``True``: refuse an unsigned or tag-only image (staging and prod clusters). ``False``: admit it and
    record the failure in a PolicyReport (a dev-only cluster, where unreleased builds run)."""


def image_references(repositories: Iterable[str]) -> list[str]:
    """Kyverno ``imageReferences`` covering exactly ``repositories``, by tag (``repo:*``) or digest (``repo@*``).

    Kyverno matches each pattern against ``<repository>@<digest>`` (or ``<repository>:<tag>``), ``*``
    crossing ``/``: a bare ``repo*`` would also take ``repo-web``, a different image."""
    return [f"{repo}{sep}*" for repo in sorted(set(repositories)) for sep in (":", "@")]


class ImagePolicy(Construct):
    """Kyverno ``ClusterPolicy`` ``kga-signed-images``: our images only when the release workflow signed them."""

    def __init__(self, scope: Construct, id: str, *, props: ImagePolicyProps, labels: dict[str, str]) -> None:
        super().__init__(scope, id)
        self.props = props
        action = "Enforce" if props.enforce else "Audit"
        keyless: dict[str, Any] = {
            "issuer": props.identity.issuer,
            "subjectRegExp": props.identity.subject_regexp,
            "rekor": {"url": REKOR_URL},
        }
        self.body: dict[str, Any] = {
            "apiVersion": "kyverno.io/v1",
            "kind": "ClusterPolicy",
            "metadata": {
                "name": POLICY_NAME,
                "labels": labels,
                "annotations": {
                    "policies.kyverno.io/title": "Images signed by the release workflow",
                    "policies.kyverno.io/description": (
                        "Our images run only when pinned by digest and signed (keyless cosign) by "
                        ".github/workflows/main.yml; docs/operations.md says how to break glass."
                    ),
                },
            },
            "spec": {
                # Verification needs the registry and Rekor at admission time, not in background scans.
                "background": False,
                # Enforced clusters fail closed: no verdict (Kyverno down) is no admission.
                "failurePolicy": "Fail" if props.enforce else "Ignore",
                "webhookTimeoutSeconds": 30,
                "rules": [
                    {
                        "name": "signed-by-the-release-workflow",
                        "match": {"any": [{"resources": {"kinds": ["Pod"]}}]},
                        "verifyImages": [
                            {
                                "imageReferences": image_references(props.repositories),
                                "failureAction": action,
                                # Argo CD compares the pod templates it applied: a rewritten image is drift.
                                "mutateDigest": False,
                                # A tag can be moved after signing; only a digest names what was signed.
                                "verifyDigest": True,
                                "required": True,
                                "attestors": [{"entries": [{"keyless": keyless}]}],
                            }
                        ],
                    }
                ],
            },
        }
        custom_resource(self, "ClusterPolicy", self.body)
