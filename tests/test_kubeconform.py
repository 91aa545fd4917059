"""scripts/kubeconform.py: kubeconform -strict with kubernetes-validate's schemas and the vendored CRDs."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from conftest import ROOT, dist_files
from tools import missing

from kgstack.environment import SUPPORTED_KUBERNETES

pytestmark = pytest.mark.go_build("kubeconform")


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("kubeconform_wrapper", ROOT / "scripts" / "kubeconform.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


kc = _load()


@pytest.fixture(autouse=True)
def _binary() -> None:
    if not kc.BINARY.exists():
        missing(f"{kc.BINARY} not built (scripts/setup.sh test builds it)")


# The static gate stays kgstack.schema (bench/validators.py: faster); kubeconform is checked to
# agree with it at the oldest and newest supported versions.
@pytest.mark.parametrize("version", [SUPPORTED_KUBERNETES[0], SUPPORTED_KUBERNETES[-1]])
def test_dist_is_valid_at_the_supported_bounds(version: str) -> None:
    out = kc.validate(version, [str(p) for p in dist_files()])
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Invalid: 0, Errors: 0, Skipped: 0" in out.stdout


def _mutated(tmp_path: Path, source: str, path: list[str | int], key: str) -> str:
    obj = yaml.safe_load((ROOT / source).read_text())
    node = obj
    for step in path:
        node = node[step]
    node[key] = "x"
    out = tmp_path / Path(source).name
    out.write_text(yaml.safe_dump(obj))
    return str(out)


def test_an_unknown_field_in_a_built_in_kind_fails(tmp_path: Path) -> None:
    path = ["spec", "template", "spec", "containers", 0, "securityContext"]
    f = _mutated(tmp_path, "dist/prod/deployment-kga-prod-query.yaml", path, "privilegd")
    out = kc.validate("1.33", [f])
    assert out.returncode == 1
    assert "privilegd" in out.stdout


def test_an_unknown_field_in_a_custom_resource_fails(tmp_path: Path) -> None:
    f = _mutated(tmp_path, "dist/prod/externalsecret-kga-agent.yaml", ["spec"], "refreshIntervl")
    out = kc.validate("1.33", [f])
    assert out.returncode == 1
    assert "refreshIntervl" in out.stdout


def test_a_kind_without_a_schema_is_an_error_not_a_skip(tmp_path: Path) -> None:
    f = tmp_path / "widget.yaml"
    f.write_text(yaml.safe_dump({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}))
    out = kc.validate("1.33", [str(f)])
    assert out.returncode == 1
    assert "could not find schema for Widget" in out.stdout
