"""scripts/bump_digests.py: digests change, every other byte of the environment file stays."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from conftest import ENVIRONMENTS, ROOT

SCRIPT = ROOT / "scripts" / "bump_digests.py"
A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bump_digests", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


bump = _load()

BLOCK = """\
# header comment
name: dev
images:
  # the API image
  agent:
    repository: ghcr.io/acme/knowledge-graph-agent   # built by main.yml
    tag: 0.3.0
  web:
    repository: ghcr.io/acme/kga-web
    tag: "1.0"
    digest: sha256:{old}  # pinned 2026-01-01
query:
  replicas: 2   # the end
""".replace("{old}", "0" * 64)


def test_inserts_a_digest_after_the_tag_and_keeps_everything_else() -> None:
    edited, touched = bump.apply(BLOCK, [bump.parse_pair(f"agent={A}")])
    assert touched == ["agent"]
    assert edited == BLOCK.replace("    tag: 0.3.0\n", f"    tag: 0.3.0\n    digest: {A}\n", 1)


def test_replaces_a_digest_in_place_keeping_its_comment() -> None:
    edited, _ = bump.apply(BLOCK, [bump.parse_pair(f"web={B}")])
    assert edited == BLOCK.replace("0" * 64, "b" * 64)
    assert f"    digest: {B}  # pinned 2026-01-01\n" in edited


def test_updates_the_tag_with_the_right_quoting() -> None:
    edited, touched = bump.apply(BLOCK, [bump.parse_pair(f"web=1.1@{B}"), bump.parse_pair(f"agent=0.4.0@{A}")])
    assert touched == ["web", "agent"]
    assert '    tag: "1.1"\n' in edited  # 1.1 would read back as a float
    assert "    tag: 0.4.0\n" in edited
    assert edited.count("digest:") == 2
    assert "# the API image" in edited and "# the end" in edited


def test_flow_style_image() -> None:
    text = "name: x\nimages:\n  agent: {repository: r.io/a, tag: v1}  # flow\n"
    edited, _ = bump.apply(text, [bump.parse_pair(f"agent=v2@{A}")])
    assert edited == f"name: x\nimages:\n  agent: {{repository: r.io/a, tag: v2, digest: {A}}}  # flow\n"
    again, _ = bump.apply(edited, [bump.parse_pair(f"agent={B}")])
    assert again == edited.replace(A, B)


def test_only_keys_under_images_are_touched() -> None:
    text = "name: x\nagent:\n  digest: keep\nimages:\n  agent:\n    repository: r.io/a\n    tag: v1\n"
    edited, _ = bump.apply(text, [bump.parse_pair(f"agent={A}")])
    assert "  digest: keep\n" in edited
    assert edited.endswith(f"    tag: v1\n    digest: {A}\n")


def test_a_file_without_the_image_is_left_alone() -> None:
    assert bump.apply(BLOCK, [bump.parse_pair(f"backup={A}")]) == (BLOCK, [])


@pytest.mark.parametrize(
    "pair",
    [
        "agent=sha256:abc",
        f"agent={A.upper()}",
        f"Agent={A}",
        f"agent=@{A}",
        "agent",
        f"agent=v1:{A}",
    ],
)
def test_rejects_malformed_pairs(pair: str) -> None:
    with pytest.raises(bump.BumpError):
        bump.parse_pair(pair)


def test_refuses_a_scalar_image() -> None:
    with pytest.raises(bump.BumpError, match="expected a mapping"):
        bump.apply("images:\n  agent: ghcr.io/a:1\n", [bump.parse_pair(f"agent={A}")])


@pytest.fixture
def envdir(tmp_path: Path) -> Path:
    target = tmp_path / "environments"
    shutil.copytree(ENVIRONMENTS, target)
    return target


def run(envdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--environments", str(envdir), *args], capture_output=True, text=True, timeout=60
    )


def test_cli_on_the_real_environment_files(envdir: Path) -> None:
    before = {p.name: p.read_text() for p in envdir.glob("*.yaml")}
    result = run(envdir, "--check", f"agent={A}")
    assert result.returncode == 1, result.stderr
    assert {p.name: p.read_text() for p in envdir.glob("*.yaml")} == before

    result = run(envdir, f"agent={A}")
    assert result.returncode == 0, result.stderr
    for name, text in before.items():
        after = (envdir / name).read_text()
        changed = [line for line in after.splitlines() if line not in text.splitlines()]
        assert changed == [f"    digest: {A}"], name
        assert len(after.splitlines()) - len(text.splitlines()) in (0, 1)

    assert run(envdir, "--check", f"agent={A}").returncode == 0


def test_cli_only_some_environments(envdir: Path) -> None:
    prod = (envdir / "prod.yaml").read_text()
    assert run(envdir, "--only", "dev,staging", f"agent={A}").returncode == 0
    assert (envdir / "prod.yaml").read_text() == prod
    assert A in (envdir / "dev.yaml").read_text()
    result = run(envdir, "--only", "qa", f"agent={A}")
    assert (result.returncode, result.stderr) == (2, "error: no environment file for qa\n")


def test_cli_rejects_an_image_no_environment_has(envdir: Path) -> None:
    before = (envdir / "dev.yaml").read_text()
    result = run(envdir, f"agent={A}", f"nope={B}")
    assert result.returncode == 2
    assert "images.nope" in result.stderr
    assert (envdir / "dev.yaml").read_text() == before  # nothing written on error


def test_cli_can_skip_images_no_environment_has_yet(envdir: Path) -> None:
    result = run(envdir, "--skip-unknown", f"agent={A}", f"not-yet={B}")
    assert result.returncode == 0, result.stderr
    assert "skipped (no environment has them): not-yet" in result.stdout
    assert A in (envdir / "dev.yaml").read_text()
