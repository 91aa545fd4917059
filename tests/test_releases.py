"""Released digests: one file written by the release workflow; nothing invented; unreleased means not synced.

Issue 9 defect 5: staging and prod carried made-up digests, and prod's "digests
are pinned" rule passed on them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ENV_DIRS, ROOT, env_data

from kgstack.environment import parse_environment
from kgstack.gitops_chart import GitOpsTarget
from kgstack.releases import ReleasesError, load_releases, own_digest_problems, unreleased, with_releases

DIGEST = "sha256:" + "0" * 64
"""Plainly not a real image: only ever used inside these tests."""


def test_no_environment_file_pins_our_own_images() -> None:
    for path in sorted((ROOT / "environments").glob("*.yaml")):
        images = yaml.safe_load(path.read_text())["images"]
        for name in ("agent", "web", "backup"):
            assert "digest" not in images[name], f"{path.name}: images.{name}.digest"


def test_an_own_digest_in_an_environment_file_is_refused() -> None:
    data = env_data("prod", images__agent__digest=DIGEST)
    env = parse_environment(data, source="prod.yaml")
    assert own_digest_problems(env, "environments/prod.yaml") == [
        "environments/prod.yaml: images.agent.digest: digests of our own images come from "
        "environments/releases/images.yaml, written by the release workflow; remove it"
    ]


def test_unreleased_images_hold_back_automated_sync() -> None:
    env = parse_environment(env_data("dev"), source="dev.yaml")
    assert env.gitops is not None
    held = GitOpsTarget.of(env, env.gitops)
    assert held.unreleased and held.automated is False
    released = with_releases(
        env,
        {
            "ghcr.io/acme/knowledge-graph-agent": {"0.3.0": DIGEST},
            "ghcr.io/acme/knowledge-graph-agent-web": {"0.3.0": DIGEST},
            "ghcr.io/acme/kgbackup": {"0.1.0": DIGEST},
            "ghcr.io/acme/kga-redis": {"7.0.15-deb12u10": DIGEST},
        },
    )
    assert unreleased(released) == []
    assert released.images.agent.reference.endswith(f"@{DIGEST}")
    assert GitOpsTarget.of(released, released.gitops or env.gitops).automated is True  # dev syncs automatically


def test_dist_pins_exactly_the_recorded_digests_and_argocd_holds_back_the_unreleased() -> None:
    # Holds before and after the first release: a digest of ours in dist/ is one the release
    # workflow recorded for that tag, a recorded tag is always pinned, and an environment that
    # deploys an unrecorded tag never syncs automatically.
    releases = load_releases(ROOT / "environments")
    for folder in [ROOT / "dist" / env for env in ENV_DIRS]:
        refs = {m for path in folder.glob("*.yaml") for m in re.findall(r"ghcr\.io/acme/[^\s\"']+", path.read_text())}
        assert refs, folder.name
        for ref in refs:
            image, _, digest = ref.partition("@")
            repository, _, tag = image.rpartition(":")
            assert (digest or None) == releases.get(repository, {}).get(tag), f"{folder.name}: {ref}"
        (path,) = (ROOT / "dist" / "argocd").glob(f"*/application-kga-{folder.name}.yaml")
        app = yaml.safe_load(path.read_text())
        if any("@" not in ref for ref in refs):
            assert "automated" not in app["spec"].get("syncPolicy", {}), folder.name


def test_a_malformed_releases_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "releases").mkdir()
    (tmp_path / "releases" / "images.yaml").write_text("ghcr.io/acme/kgbackup:\n  0.1.0: sha256:abc\n")
    with pytest.raises(ReleasesError, match=r"images.yaml: ghcr.io/acme/kgbackup.0.1.0: 'sha256:abc' is not"):
        load_releases(tmp_path)


def test_release_script_records_under_the_tags_environments_deploy(tmp_path: Path) -> None:
    envs = tmp_path / "environments"
    shutil.copytree(ROOT / "environments", envs)
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "release_images.py"),
            "--environments",
            str(envs),
            f"ghcr.io/acme/kgbackup@{DIGEST}",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    releases = load_releases(envs)
    assert releases["ghcr.io/acme/kgbackup"] == {"0.1.0": DIGEST}
    text = (envs / "releases" / "images.yaml").read_text()
    assert text.startswith("# Released digests of our own images")
    bad = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "release_images.py"), "--environments", str(envs), "kgbackup:latest"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "expected REPOSITORY[:TAG]@sha256" in bad.stderr


@pytest.mark.slow
def test_the_workflow_record_step_runs_in_a_clean_environment(tmp_path: Path) -> None:
    """Issue 24: the bump job ran release_images.py on a python3 with only pyyaml and crashed on `import kgstack`.

    The step is now scripts/record_release.sh, run here as the workflow runs it: a checkout with no venv,
    no project variables, and the machine's python3 and npm. It must record the digest and re-synthesize.
    """
    checkout = tmp_path / "checkout"
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, files):
        source = ROOT / name.decode()
        if source.is_file():
            (checkout / name.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, checkout / name.decode())
    bump = "\n".join(
        step.get("run", "")
        for step in yaml.safe_load((ROOT / ".github" / "workflows" / "main.yml").read_text())["jobs"]["bump"]["steps"]
    )
    call = next(line.strip() for line in bump.splitlines() if "record_release.sh" in line)
    assert call == 'scripts/record_release.sh "${refs[@]}"'
    # The machine's environment (its CA bundle settings included) without what the project adds:
    # the Makefile's exports, a venv, and this checkout's .venv and .tools on PATH.
    project = {"PYTHONPATH", "JSII_NODE", "VIRTUAL_ENV", "MAKEFLAGS", "MAKELEVEL", "MFLAGS", "PYTHONHOME"}
    clean = {k: v for k, v in os.environ.items() if k not in project and not k.startswith(("KGA_", "PYTEST_"))}
    clean["PATH"] = ":".join(p for p in os.environ["PATH"].split(":") if p and not p.startswith(str(ROOT)))
    result = subprocess.run(
        ["bash", "-c", "refs=(); " + call, "bash"],
        cwd=checkout,
        env=clean,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "usage:" in result.stderr  # no refs: usage, nothing recorded
    result = subprocess.run(
        ["bash", "-c", 'refs=("$@"); ' + call, "bash", f"ghcr.io/acme/kgbackup@{DIGEST}"],
        cwd=checkout,
        env=clean,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert load_releases(checkout / "environments")["ghcr.io/acme/kgbackup"] == {"0.1.0": DIGEST}
    rendered = "\n".join(p.read_text() for p in (checkout / "dist").rglob("*.yaml"))
    assert f"ghcr.io/acme/kgbackup@{DIGEST}" in rendered or f"ghcr.io/acme/kgbackup:0.1.0@{DIGEST}" in rendered
