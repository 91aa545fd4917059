"""The admission policy of each cluster (issue 24): our images only when the release workflow signed them.

Read back from the committed ``dist/argocd/<cluster>/platform/``. The images come from the
environment files and the pods in ``dist/<env>/``, the identity from the workflow file and the
repository Argo CD syncs from, so none of these checks reads the tables that generated the policy.
Kyverno's matching is followed as its source has it: ``ImageInfo.String()`` of
``pkg/utils/image/infos.go`` (``<registry>/<path>@<digest>`` when pinned, else ``:<tag>``) against
each ``imageReferences`` pattern with ``wildcard.Match`` (``pkg/engine/utils/image.go``: ``*`` any
run of characters, ``/`` included). The API server's own check of the policy against Kyverno's CRD
is tests/test_control_plane.py.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import cdk8s
import pytest
import yaml
from conftest import ROOT
from tools import missing

from kgstack.image_policy import (
    ISSUER_KEY,
    POLICY_NAME,
    SUBJECT_KEY,
    WORKFLOW,
    ImagePolicy,
    ImagePolicyProps,
    SigningIdentity,
    SigningIdentityError,
    signing_identity,
)

pytestmark = pytest.mark.go_build("helm")

sys.path.insert(0, str(ROOT / "scripts"))
DIST = ROOT / "dist"
# The environments that run on a cluster (Compose and cloud-only ones have no `cluster:`).
ENVS = {
    p.stem: data for p in (ROOT / "environments").glob("*.yaml") if "cluster" in (data := yaml.safe_load(p.read_text()))
}
OWN = ("agent", "web", "backup", "redis")
CLUSTERS = sorted({env["cluster"]["name"] for env in ENVS.values()})


def policy(cluster: str) -> dict[str, Any]:
    path = DIST / "argocd" / cluster / "platform" / f"clusterpolicy-{POLICY_NAME}.yaml"
    assert path.exists(), f"{path.relative_to(ROOT)}: no admission policy for the cluster's images"
    return yaml.safe_load(path.read_text())  # type: ignore[no-any-return]


def verify_images(obj: dict[str, Any]) -> dict[str, Any]:
    (rule,) = obj["spec"]["rules"]
    (entry,) = rule["verifyImages"]
    return entry  # type: ignore[no-any-return]


def kyverno_string(image: str) -> str:
    """The reference Kyverno matches: the digest when there is one, else the tag."""
    name, _, digest = image.partition("@")
    if digest:
        repository = name.rsplit(":", 1)[0] if ":" in name.rsplit("/", 1)[-1] else name
        return f"{repository}@{digest}"
    return image


def matched(image: str, patterns: list[str]) -> bool:
    # Kyverno's wildcard: * and ? only; our patterns hold no [ for fnmatch to read as a class.
    assert not any("[" in p for p in patterns)
    return any(fnmatch.fnmatchcase(kyverno_string(image), p) for p in patterns)


def pod_images(env: str) -> set[str]:
    """Every container image of every pod template in dist/<env>/."""
    images: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key in ("containers", "initContainers"):
                for container in node.get(key) or []:
                    images.add(container["image"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    for path in (DIST / env).glob("*.yaml"):
        if path.name != "kustomization.yaml":
            walk(yaml.safe_load(path.read_text()))
    return images


def own_repositories(cluster: str) -> set[str]:
    return {
        env["images"][name]["repository"] for env in ENVS.values() if env["cluster"]["name"] == cluster for name in OWN
    }


def workflow() -> dict[Any, Any]:
    data = yaml.safe_load((ROOT / WORKFLOW).read_text())
    data["on"] = data.pop(True, data.get("on"))  # PyYAML reads `on:` as True
    return data  # type: ignore[no-any-return]


# ------------------------------------------------------------------ exactly our images, per cluster


@pytest.mark.parametrize("cluster", CLUSTERS)
def test_every_own_image_of_the_cluster_is_verified_and_no_other(cluster: str) -> None:
    patterns = verify_images(policy(cluster))["imageReferences"]
    ours = own_repositories(cluster)
    envs = [name for name, env in ENVS.items() if env["cluster"]["name"] == cluster]
    images = {image for env in envs for image in pod_images(env)}
    mine = {i for i in images if any(i.startswith((f"{r}:", f"{r}@")) for r in ours)}
    assert mine, f"{cluster}: no pod runs our images?"
    assert {i for i in images if matched(i, patterns)} == mine
    # Both forms of each repository, and no neighbour: knowledge-graph-agent must not take -web.
    for repo in ours:
        assert matched(f"{repo}:0.1.0", patterns) and matched(f"{repo}@sha256:{'0' * 64}", patterns)
        assert not matched(f"{repo}-evil:0.1.0", patterns)
        assert not matched(f"{repo}x@sha256:{'0' * 64}", patterns)


@pytest.mark.parametrize("cluster", CLUSTERS)
def test_staging_and_prod_clusters_enforce_and_fail_closed_dev_only_audits(cluster: str) -> None:
    stages = {env["stage"] for env in ENVS.values() if env["cluster"]["name"] == cluster}
    obj = policy(cluster)
    entry = verify_images(obj)
    if stages == {"dev"}:
        assert (entry["failureAction"], obj["spec"]["failurePolicy"]) == ("Audit", "Ignore")
    else:
        assert (entry["failureAction"], obj["spec"]["failurePolicy"]) == ("Enforce", "Fail")
    # A tag can be re-pointed after signing: only a digest is checked, and nothing is rewritten under Argo CD.
    assert (entry["verifyDigest"], entry["mutateDigest"], entry["required"]) == (True, False, True)
    assert obj["spec"]["background"] is False


def test_prod_and_staging_are_on_enforcing_clusters() -> None:
    enforcing = {c for c in CLUSTERS if verify_images(policy(c))["failureAction"] == "Enforce"}
    assert {ENVS["prod"]["cluster"]["name"], ENVS["staging"]["cluster"]["name"]} <= enforcing


# ------------------------------------------------------------------ the identity: the workflow's own


def test_the_sign_job_verifies_with_the_declared_identity() -> None:
    data = workflow()
    run = "\n".join(step.get("run", "") for step in data["jobs"]["sign"]["steps"])
    assert f'--certificate-identity-regexp "${{{SUBJECT_KEY}}}"' in run
    assert f'--certificate-oidc-issuer "${{{ISSUER_KEY}}}"' in run
    identity = signing_identity(ROOT / WORKFLOW)
    assert (identity.issuer, identity.subject_regexp) == (data["env"][ISSUER_KEY], data["env"][SUBJECT_KEY])


@pytest.mark.parametrize("cluster", CLUSTERS)
def test_the_policy_requires_the_identity_the_workflow_verifies(cluster: str) -> None:
    data = workflow()
    (attestor,) = verify_images(policy(cluster))["attestors"]
    (entry,) = attestor["entries"]
    assert entry["keyless"]["issuer"] == data["env"][ISSUER_KEY] == "https://token.actions.githubusercontent.com"
    assert entry["keyless"]["subjectRegExp"] == data["env"][SUBJECT_KEY]
    assert entry["keyless"]["rekor"]["url"] == "https://rekor.sigstore.dev"


def _identity(repo: str, workflow_path: str, ref: str) -> str:
    return f"https://github.com/{repo}/{workflow_path}@{ref}"


def test_the_regexp_admits_this_workflow_on_its_branch_in_the_gitops_repository_only() -> None:
    # What GitHub puts in the certificate: ${GITHUB_SERVER_URL}/${GITHUB_WORKFLOW_REF}, formed here from the
    # repository the environments' Argo CD syncs from (where this workflow runs) and the branch it runs on.
    (repo_url,) = {env["gitops"]["repoURL"] for env in ENVS.values() if "gitops" in env}
    repo = re.sub(r"^https://github\.com/|\.git$", "", repo_url)
    path = WORKFLOW.as_posix()
    (branch,) = workflow()["on"]["push"]["branches"]
    regexp = re.compile(signing_identity(ROOT / WORKFLOW).subject_regexp)
    assert regexp.match(_identity(repo, path, f"refs/heads/{branch}"))
    owner, name = repo.split("/")
    for other in [
        _identity(repo, path, "refs/heads/feature"),
        _identity(repo, path, f"refs/heads/{branch}-evil"),
        _identity(repo, path, "refs/pull/7/merge"),
        _identity(repo, path, f"refs/tags/{branch}"),
        _identity(repo, ".github/workflows/pr.yml", f"refs/heads/{branch}"),
        _identity(f"{owner}-fork/{name}", path, f"refs/heads/{branch}"),
        _identity(f"{owner}/{name}-fork", path, f"refs/heads/{branch}"),
        "https://evil.example.com/" + _identity(repo, path, f"refs/heads/{branch}").removeprefix("https://"),
    ]:
        assert not regexp.match(other), other


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"APP_REF": "x"}, f"env.{ISSUER_KEY}: missing"),
        ({ISSUER_KEY: "https://token.actions.githubusercontent.com"}, f"env.{SUBJECT_KEY}: missing"),
        (
            {ISSUER_KEY: "https://token.actions.githubusercontent.com", SUBJECT_KEY: "https://github\\.com/acme/"},
            f"env.{SUBJECT_KEY}: Value error, must be anchored",
        ),
        ({ISSUER_KEY: "http://issuer.example.com", SUBJECT_KEY: "^x$"}, f"env.{ISSUER_KEY}: String should match"),
    ],
    ids=["no-issuer", "no-subject", "unanchored", "plain-http-issuer"],
)
def test_a_workflow_without_a_usable_identity_is_an_error_naming_file_and_key(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    path = tmp_path / "main.yml"
    path.write_text(yaml.safe_dump({"name": "main", "env": env, "jobs": {}}))
    with pytest.raises(SigningIdentityError) as exc:
        signing_identity(path)
    assert str(exc.value).startswith(f"{path}: env.")
    assert message in str(exc.value)


def test_the_construct_renders_what_its_props_say() -> None:
    chart = cdk8s.Chart(cdk8s.App(), "t")
    identity = SigningIdentity(issuer="https://issuer.example.com", subject_regexp="^https://x\\.example\\.com/a$")
    props = ImagePolicyProps(repositories=["ghcr.io/acme/b", "ghcr.io/acme/a"], identity=identity, enforce=False)
    ImagePolicy(chart, "p", props=props, labels={})
    (obj,) = chart.to_json()
    entry = obj["spec"]["rules"][0]["verifyImages"][0]
    assert entry["imageReferences"] == ["ghcr.io/acme/a:*", "ghcr.io/acme/a@*", "ghcr.io/acme/b:*", "ghcr.io/acme/b@*"]
    assert entry["failureAction"] == "Audit"
    assert entry["attestors"][0]["entries"][0]["keyless"]["subjectRegExp"] == "^https://x\\.example\\.com/a$"
    with pytest.raises(ValueError, match="repositories"):
        ImagePolicyProps(repositories=[], identity=identity, enforce=True)


# ------------------------------------------------------------------ the engine: Kyverno's chart from its Go module

HELM = ROOT / ".tools" / "control-plane" / "helm"
# Sub-charts fetched from other Helm repositories at release time: not in the module, and none of them
# serves what the policy needs (kyverno-api: policies.kyverno.io; openreports and reports-server: reports).
_REMOTE_SUBCHARTS = {"kyverno-api", "openreports", "reports-server"}


def _minor(version: str) -> int:
    return int(version.split(".")[1])


def _kyverno_chart(tmp: Path, app: dict[str, Any]) -> Path:
    """charts/kyverno of the Go module github.com/kyverno/kyverno at the release scripts/fetch_crds.py vendors."""
    import fetch_crds  # scripts/ is on sys.path (below)

    (module, version) = fetch_crds._KYVERNO
    if fetch_crds.go() is None:
        missing("go not found: the chart comes from its Go module")
    chart = tmp / "kyverno"
    shutil.copytree(fetch_crds.module_dir(module, version) / "charts" / "kyverno", chart)
    for path in [chart, *chart.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    # The chart the Application installs is the chart of the vendored CRDs' release.
    assert (meta["version"], meta["appVersion"]) == (app["spec"]["source"]["targetRevision"], version)
    meta["dependencies"] = [d for d in meta["dependencies"] if d["name"] not in _REMOTE_SUBCHARTS]
    (chart / "Chart.yaml").write_text(yaml.safe_dump(meta))
    (chart / "Chart.lock").unlink()
    return chart


def test_kyverno_chart_from_its_go_module_honours_the_values_the_platform_sets(tmp_path: Path) -> None:
    """Rendered by Helm built from its Go module: the values the Application sets reach the admission
    controller (three replicas; PolicyExceptions only in Kyverno's namespace: the break glass), and the chart
    installs the very ClusterPolicy CRD the rendered policy is validated against."""
    if not HELM.exists():
        missing(f"{HELM} not built (scripts/setup.sh test builds it from scripts/control-plane/helm)")
    app = yaml.safe_load((DIST / "argocd" / "prod-eks" / "application-prod-eks-kyverno.yaml").read_text())
    chart = _kyverno_chart(tmp_path, app)
    helm = app["spec"]["source"]["helm"]
    namespace = app["spec"]["destination"]["namespace"]
    (tmp_path / "values.yaml").write_text(yaml.safe_dump(helm["valuesObject"]))
    env = {**os.environ, "HELM_CACHE_HOME": str(tmp_path / "c"), "HELM_CONFIG_HOME": str(tmp_path / "h")}
    # The chart's kubeVersion constraint is checked against the Kubernetes the cluster's environments target.
    version = min((e["kubernetesVersion"] for e in ENVS.values() if e["cluster"]["name"] == "prod-eks"), key=_minor)
    args = [str(HELM), "template", helm["releaseName"], str(chart), "-n", namespace, "--kube-version", version]
    out = subprocess.run([*args, "-f", str(tmp_path / "values.yaml")], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    objects = [o for o in yaml.safe_load_all(out.stdout) if o]
    (deployment,) = [
        o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "kyverno-admission-controller"
    ]
    assert deployment["spec"]["replicas"] == 3
    (container,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "kyverno"]
    assert "--enablePolicyException=true" in container["args"]
    assert f"--exceptionNamespace={namespace}" in container["args"]
    (crd,) = [
        o
        for o in objects
        if o["kind"] == "CustomResourceDefinition" and o["metadata"]["name"] == "clusterpolicies.kyverno.io"
    ]
    vendored = json.loads((ROOT / "constructs" / "kgstack" / "crds" / "kyverno.io_clusterpolicies.json").read_text())
    assert crd["spec"] == vendored["spec"]
