"""GitHub workflows: actionlint and zizmor run clean, every action is pinned, permissions are least-privilege.

The linters come from requirements/ci-test.txt. A missing tool skips its test
locally and fails it in CI (``CI`` set), so CI can never pass by not linting.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ROOT
from tools import require_tool

WORKFLOWS = ROOT / ".github" / "workflows"
BIN = Path(sys.executable).parent
_USES = re.compile(r"^\s*(?:-\s+)?uses:\s*(?P<ref>\S+)(?P<rest>.*)$")
_PINNED = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_./-]+@[0-9a-f]{40}$")
_VERSION_COMMENT = re.compile(r"^\s+# v\d+\.\d+\.\d+\b")


def tool(name: str) -> str:
    """Path of ``name`` (the venv's first); skip outside CI, fail in CI."""
    return require_tool(name, BIN / name, hint="pip install -r requirements/ci-test.txt")


def workflow_files() -> list[Path]:
    return sorted([*WORKFLOWS.glob("*.yml"), *WORKFLOWS.glob("*.yaml")])


def load(path: Path) -> dict[Any, Any]:
    data = yaml.safe_load(path.read_text())
    # PyYAML reads the `on:` key as the boolean True
    if True in data:
        data["on"] = data.pop(True)
    return data  # type: ignore[no-any-return]


def test_the_workflows_exist() -> None:
    assert [p.name for p in workflow_files()] == ["main.yml", "pr.yml", "rebuild.yml"]


def test_actionlint() -> None:
    actionlint = tool("actionlint")
    tool("shellcheck")  # actionlint checks `run:` scripts only when shellcheck is on PATH
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run(
        [actionlint, "-no-color", "-oneline", *map(str, workflow_files())],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_zizmor() -> None:
    zizmor = tool("zizmor")
    result = subprocess.run(
        [zizmor, "--offline", "--no-progress", "--format", "plain", str(WORKFLOWS)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", workflow_files(), ids=lambda p: p.name)
def test_every_action_is_pinned_to_a_commit(path: Path) -> None:
    uses = [(n, m) for n, line in enumerate(path.read_text().splitlines(), 1) if (m := _USES.match(line))]
    assert uses
    for number, match in uses:
        ref = match["ref"]
        where = f"{path.name}:{number}: {ref}"
        assert not ref.startswith(("./", "docker://")), f"{where}: only pinned repository actions"
        assert _PINNED.match(ref), f"{where}: pin the action to a full 40-hex commit SHA"
        assert _VERSION_COMMENT.match(match["rest"]), f"{where}: add the release as a '# vX.Y.Z' comment"


@pytest.mark.parametrize("path", workflow_files(), ids=lambda p: p.name)
def test_least_privilege(path: Path) -> None:
    workflow = load(path)
    assert workflow["permissions"] == {"contents": "read"}
    assert "pull_request_target" not in workflow["on"]
    for name, job in workflow["jobs"].items():
        permissions = job.get("permissions", {})
        assert permissions != "write-all" and "write-all" not in str(permissions), name
        if permissions.get("id-token") == "write":
            assert name == "sign", f"{path.name}: only the signing job gets an OIDC token"
        for step in job["steps"]:
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step.get("with", {}).get("persist-credentials") is False, f"{name}: {step.get('name')}"


def test_pr_runs_the_readme_commands_and_the_drift_gate() -> None:
    workflow = load(WORKFLOWS / "pr.yml")
    runs = "\n".join(step.get("run", "") for job in workflow["jobs"].values() for step in job["steps"])
    readme = (ROOT / "README.md").read_text()
    for command in ("make synth", "make test"):
        assert command in readme and command in runs
    assert "git status --porcelain -- dist/" in runs
    assert runs.index("make synth") < runs.index("git status --porcelain") < runs.index("make test")
    assert "scripts/dist_diff_summary.py" in runs
    assert (ROOT / "scripts" / "dist_diff_summary.py").exists()


def test_main_builds_scans_signs_and_bumps() -> None:
    workflow = load(WORKFLOWS / "main.yml")
    jobs = workflow["jobs"]
    assert jobs["sign"]["needs"] == "build" and jobs["bump"]["needs"] == "sign"
    build = jobs["build"]
    images = {entry["image"]: entry for entry in build["strategy"]["matrix"]["include"]}
    assert sorted(images) == ["agent", "backup", "redis", "web"]
    for entry in images.values():
        assert (ROOT / entry["dockerfile"]).exists()
    steps = {step.get("uses", "").split("@")[0]: step for step in build["steps"]}
    assert steps["docker/build-push-action"]["with"]["platforms"] == "linux/amd64,linux/arm64"
    scans = [s for s in build["steps"] if s.get("uses", "").startswith("anchore/scan-action@")]
    assert len(scans) == 2
    for scan in scans:
        assert scan["with"]["fail-build"] is True and scan["with"]["severity-cutoff"] == "high"
    sign = "\n".join(step.get("run", "") for step in jobs["sign"]["steps"])
    assert "cosign sign --yes" in sign
    bump = "\n".join(step.get("run", "") for step in jobs["bump"]["steps"])
    # The record step is a script of ours that sets up the project's venv (issue 24: a bare python3 crashed).
    assert "scripts/record_release.sh" in bump and "pip install" not in bump
    assert 'imagetools inspect "${repo}@${digest}"' in bump  # the registry answers for the digest first


def test_the_digest_pull_request_is_made_with_the_release_app_token() -> None:
    # Issue 24: a pull request opened with GITHUB_TOKEN triggers no pull_request workflow, so pr.yml's gate
    # never ran on the one pull request that deploys. The App's installation token is another actor.
    bump = load(WORKFLOWS / "main.yml")["jobs"]["bump"]
    steps = {step.get("uses", "").split("@")[0]: step for step in bump["steps"]}
    app = steps["actions/create-github-app-token"]
    assert app["with"]["client-id"] == "${{ vars.RELEASE_APP_CLIENT_ID }}"
    assert app["with"]["private-key"] == "${{ secrets.RELEASE_APP_PRIVATE_KEY }}"
    # The token carries only what the pull request needs, whatever else the App is granted.
    granted = {k.removeprefix("permission-"): v for k, v in app["with"].items() if k.startswith("permission-")}
    assert granted == {"contents": "write", "pull-requests": "write"}
    pull_request = steps["peter-evans/create-pull-request"]
    assert pull_request["with"]["token"] == f"${{{{ steps.{app['id']}.outputs.token }}}}"
    assert bump["steps"].index(app) < bump["steps"].index(pull_request)
    # GITHUB_TOKEN no longer writes anything in this job.
    assert "write" not in bump["permissions"].values()
    # The set-up the docs walk through names exactly these: the variable, the secret, the permissions.
    docs = (ROOT / "docs" / "deployment.md").read_text()
    for name in ("RELEASE_APP_CLIENT_ID", "RELEASE_APP_PRIVATE_KEY", "Contents", "Pull requests"):
        assert name in docs, name


def test_a_weekly_rebuild_builds_every_released_image_and_rescans_what_is_deployed() -> None:
    # Issue 24: exact Debian pins leave the archive at the next security update; nothing rebuilt or rescanned.
    workflow = load(WORKFLOWS / "rebuild.yml")
    (cron,) = [entry["cron"] for entry in workflow["on"]["schedule"]]
    _minute, _hour, day, month, weekday = cron.split()
    assert (day, month) == ("*", "*") and weekday.isdigit(), f"{cron}: weekly"
    jobs = workflow["jobs"]
    main = load(WORKFLOWS / "main.yml")
    built = {e["image"]: e["dockerfile"] for e in jobs["build"]["strategy"]["matrix"]["include"]}
    released = {e["image"]: e["dockerfile"] for e in main["jobs"]["build"]["strategy"]["matrix"]["include"]}
    assert built == released
    steps = {step.get("uses", "").split("@")[0]: step for step in jobs["build"]["steps"]}
    build = steps["docker/build-push-action"]["with"]
    assert build["push"] is False and build["no-cache"] is True
    runs = "\n".join(step.get("run", "") for step in jobs["build"]["steps"])
    # The agent's commit is main.yml's, read from it, never restated.
    assert "yq '.env.APP_REF' .github/workflows/main.yml" in runs and "APP_REF:" not in str(workflow.get("env"))
    for job in ("build", "rescan"):
        scans = [s for s in jobs[job]["steps"] if s.get("uses", "").startswith("anchore/scan-action@")]
        assert scans and all(s["with"]["fail-build"] is True and s["with"]["severity-cutoff"] == "high" for s in scans)
    # The rescan reads the released digests from the file the release workflow writes.
    assert "environments/releases/images.yaml" in "\n".join(s.get("run", "") for s in jobs["released"]["steps"])
    assert jobs["rescan"]["strategy"]["matrix"]["ref"] == "${{ fromJSON(needs.released.outputs.refs) }}"
    assert "write" not in str([job.get("permissions") for job in jobs.values()])


def _glob(pattern: str, path: str) -> bool:
    """GitHub's ``paths:`` filter syntax: ``**`` crosses ``/``, ``*`` does not."""
    regex = "".join(
        ".*" if part == "**" else "[^/]*" if part == "*" else re.escape(part)
        for part in re.split(r"(\*\*|\*)", pattern)
    )
    return re.fullmatch(regex, path) is not None


def _triggers(workflow: dict[Any, Any], path: str) -> bool:
    return any(_glob(pattern, path) for pattern in workflow["on"]["push"]["paths"])


def test_main_builds_for_a_new_environment_or_tag_but_not_for_its_own_digest_pull_request() -> None:
    """Issue 24: the paths filter never built for a new environment file or tag, though the guide says it does."""
    workflow = load(WORKFLOWS / "main.yml")
    assert _triggers(workflow, "environments/qa.yaml")  # a new environment
    assert _triggers(workflow, "environments/staging.yaml")  # a new tag in one
    assert _triggers(workflow, "docker/web/nginx.conf")
    # Merging the digest pull request must not build again (no release loop).
    create = next(
        s for s in workflow["jobs"]["bump"]["steps"] if s.get("uses", "").startswith("peter-evans/create-pull-request@")
    )
    for pattern in create["with"]["add-paths"].split():
        for path in (pattern.replace("**", "prod/deployment.yaml"), "environments/releases/images.yaml"):
            assert not _triggers(workflow, path), path


def test_the_agent_is_pinned_to_a_full_commit() -> None:
    """Issue 24: APP_REF was an abbreviated SHA, and an abbreviation only warned."""
    workflow = load(WORKFLOWS / "main.yml")
    ref = workflow["env"]["APP_REF"]
    assert re.fullmatch(r"[0-9a-f]{40}", ref), ref
    assert ref in (ROOT / "docs" / "agent.md").read_text()  # the commit the docs and the image tests use
    pin = next(s for s in workflow["jobs"]["build"]["steps"] if s.get("id") == "app")["run"]
    assert 'if [ "${sha}" != "${APP_REF}" ]' in pin and "exit 1" in pin


def test_the_bump_job_verifies_the_identity_the_sign_job_signs_with() -> None:
    """Issue 24: the only `cosign verify` was the signing job checking itself; the bump job recorded unverified."""
    jobs = load(WORKFLOWS / "main.yml")["jobs"]
    sign = "\n".join(step.get("run", "") for step in jobs["sign"]["steps"])
    identity = re.search(r'--certificate-identity "([^"]+)"', sign)
    issuer = re.search(r"--certificate-oidc-issuer (\S+)", sign)
    assert identity and issuer
    bump = "\n".join(step.get("run", "") for step in jobs["bump"]["steps"])
    verify = re.search(r"^\s*verify=\((.*)\)$", bump, re.MULTILINE)
    assert verify, bump
    assert verify[1] == f'--certificate-identity "{identity[1]}" --certificate-oidc-issuer {issuer[1]}'
    assert bump.index("verify=(") < bump.index('scripts/record_release.sh "${verify[@]}" "${refs[@]}"')
    installs = [s for s in jobs["bump"]["steps"] if s.get("uses", "").startswith("sigstore/cosign-installer@")]
    assert installs, "the bump job needs cosign for scripts/verify_release.py"


def test_pr_drift_check_covers_what_ci_run_checks() -> None:
    """Issue 24: pr.yml's drift check skipped files that .ci/run checks."""
    ci_run = (ROOT / ".ci" / "run").read_text()
    (ci_paths,) = re.findall(r"git status --porcelain -- (.+)\)", ci_run)
    runs = "\n".join(
        step.get("run", "") for job in load(WORKFLOWS / "pr.yml")["jobs"].values() for step in job["steps"]
    )
    (pr_paths,) = re.findall(r"git status --porcelain -- (.+)\)", runs)
    assert sorted(pr_paths.split()) == sorted(ci_paths.split())


def test_each_image_is_labelled_with_the_version_environments_deploy() -> None:
    """The record files a digest under the image's own version label (scripts/verify_release.py): APP_VERSION
    for the images built with it, the Dockerfile's literal otherwise; each must be a tag the environments name,
    or nothing they deploy would ever be released."""
    workflow = load(WORKFLOWS / "main.yml")
    build = workflow["jobs"]["build"]
    step = next(s for s in build["steps"] if s.get("uses", "").startswith("docker/build-push-action@"))
    assert "VERSION=${{ env.APP_VERSION }}" in step["with"]["build-args"].splitlines()
    tags: dict[str, set[str]] = {}
    for path in (ROOT / "environments").glob("*.yaml"):
        for image in yaml.safe_load(path.read_text())["images"].values():
            tags.setdefault(image["repository"].rpartition("/")[2], set()).add(str(image["tag"]))
    for entry in build["strategy"]["matrix"]["include"]:
        dockerfile = (ROOT / entry["dockerfile"]).read_text()
        (label,) = re.findall(r'org\.opencontainers\.image\.version="([^"]+)"', dockerfile)
        version = str(workflow["env"]["APP_VERSION"]) if label == "${VERSION}" else label
        assert version in tags[entry["repository"]], (
            f"{entry['dockerfile']}: {version} is no tag an environment deploys"
        )
