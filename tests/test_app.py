"""app.py end to end: exit codes, messages, an untouched dist/ on error, determinism, CLI parity."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import DELETE, ENVIRONMENTS, ROOT, env_data

NODE_BIN = ROOT / ".tools" / "node_modules" / ".bin"


def run_app(envdir: Path, outdir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "app.py"), "--environments", str(envdir), "--outdir", str(outdir)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **env},
        timeout=120,
    )


def tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def workspace(tmp_path: Path) -> tuple[Path, Path]:
    envdir, outdir = tmp_path / "environments", tmp_path / "dist"
    shutil.copytree(ENVIRONMENTS, envdir)
    shutil.copytree(ROOT / "dist", outdir)
    return envdir, outdir


def write_env(envdir: Path, name: str, data: object) -> None:
    (envdir / f"{name}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.mark.parametrize(
    ("name", "changes", "code", "message"),
    [
        ("staging", {"query__replicaz": 2}, 2, "staging.yaml: query.replicaz: unknown field"),
        ("prod", {"images__agent__digest": DELETE}, 2, "prod.yaml: (top level): stage prod requires image digests"),
        ("dev", {"quota__pods": 3}, 1, "environment dev/Namespace: quota.pods is too small"),
    ],
)
def test_bad_input_exits_non_zero_and_leaves_dist_untouched(
    workspace: tuple[Path, Path],
    name: str,
    changes: dict[str, object],
    code: int,
    message: str,
) -> None:
    envdir, outdir = workspace
    before = tree_digest(outdir)
    write_env(envdir, name, env_data(name, **changes))
    result = run_app(envdir, outdir)
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert "nothing was written" in result.stderr
    assert tree_digest(outdir) == before
    assert not list(outdir.parent.glob(".dist.*")), "no staging folder is left behind"


def test_yaml_syntax_error(workspace: tuple[Path, Path]) -> None:
    envdir, outdir = workspace
    before = tree_digest(outdir)
    (envdir / "dev.yaml").write_text("name: dev\n  stage: dev\n")
    result = run_app(envdir, outdir)
    assert result.returncode == 2
    assert "dev.yaml: line 2: not valid YAML" in result.stderr
    assert tree_digest(outdir) == before


def test_committed_dist_is_a_fresh_synth(tmp_path: Path) -> None:
    result = run_app(ENVIRONMENTS, tmp_path / "dist")
    assert result.returncode == 0, result.stderr
    assert tree_digest(tmp_path / "dist") == tree_digest(ROOT / "dist"), "run: make synth"


def test_two_synths_are_byte_identical(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    assert run_app(ENVIRONMENTS, first).returncode == 0
    assert run_app(ENVIRONMENTS, second).returncode == 0
    assert tree_digest(first) == tree_digest(second)


def test_new_environment_is_one_yaml_file(workspace: tuple[Path, Path]) -> None:
    envdir, outdir = workspace
    write_env(envdir, "qa", env_data("staging", name="qa", namespace="kga-qa", domain="kga.qa.example.com"))
    result = run_app(envdir, outdir)
    assert result.returncode == 0, result.stderr
    assert (outdir / "qa" / "deployment-kga-qa-query.yaml").exists()


def test_no_end_of_life_banner(tmp_path: Path) -> None:
    result = run_app(ENVIRONMENTS, tmp_path / "dist")
    assert "end-of-life" not in result.stdout + result.stderr
    node = subprocess.run([os.environ["JSII_NODE"], "--version"], capture_output=True, text=True, check=True).stdout
    assert int(node.lstrip("v").split(".")[0]) >= 22


def test_cdk8s_cli_writes_the_same_dist(workspace: tuple[Path, Path]) -> None:
    cli = NODE_BIN / "cdk8s"
    if not cli.exists():
        pytest.fail("cdk8s-cli missing: run scripts/setup.sh synth")
    _, outdir = workspace
    shutil.rmtree(outdir)
    # The CLI runs `.venv/bin/python app.py` from cdk8s.yaml; point it at the temp outdir.
    result = subprocess.run(
        [str(cli), "synth", "--no-check-upgrade", "--app", f"{sys.executable} app.py --outdir {outdir}"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=180,
        env={**os.environ, "PATH": f"{NODE_BIN}:{os.environ['PATH']}"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "end-of-life" not in result.stdout + result.stderr
    assert tree_digest(outdir) == tree_digest(ROOT / "dist")
    # The CLI's own scratch folder received the same files.
    assert tree_digest(ROOT / ".cdk8s.out") == tree_digest(outdir)
