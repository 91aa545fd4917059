"""The library as someone else uses it: exports, defaults, version ranges, and docs/reuse.md's app."""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml
from conftest import ROOT
from constructs import Construct
from packaging.requirements import Requirement

import kgstack
from kgstack.model import Spec
from kgstack.schema import schema_problems


def test_every_construct_and_its_props_is_exported() -> None:
    modules = sorted((ROOT / "constructs" / "kgstack").glob("*.py"))
    missing = []
    for path in modules:
        if path.name.startswith("_"):
            continue
        module = __import__(f"kgstack.{path.stem}", fromlist=["*"])
        for name, obj in vars(module).items():
            public = inspect.isclass(obj) and obj.__module__ == module.__name__ and not name.startswith("_")
            if public and (issubclass(obj, Construct) or name.endswith("Props")) and name not in kgstack.__all__:
                missing.append(f"{module.__name__}.{name}")
    assert missing == []
    assert all(getattr(kgstack, name) is not None for name in kgstack.__all__)


def test_agent_settings_live_outside_the_environment_model() -> None:
    from kgstack import environment

    assert kgstack.AgentSettings.__module__ == "kgstack.agent_settings"
    assert environment.AgentSettings is kgstack.AgentSettings  # kept as a re-export


def test_environment_error_does_not_shadow_the_builtin() -> None:
    from kgstack import environment

    assert not hasattr(environment, "EnvironmentError") or environment.EnvironmentError is OSError
    assert issubclass(kgstack.EnvironmentFileError, Exception)
    assert "EnvironmentError" not in kgstack.__all__


def test_names_come_from_props_with_todays_defaults() -> None:
    default = kgstack.Identity(instance="kga-dev", version="1")
    assert default.labels["app.kubernetes.io/name"] == "kga"
    assert default.labels["app.kubernetes.io/part-of"] == "knowledge-graph-agent"
    theirs = kgstack.Identity(name="search", part_of="acme-platform", instance="search-prod", version="1")
    assert theirs.labels["app.kubernetes.io/name"] == "search"
    assert theirs.labels["app.kubernetes.io/part-of"] == "acme-platform"


def test_every_props_model_is_strict() -> None:
    props = [getattr(kgstack, n) for n in kgstack.__all__ if n.endswith("Props")]
    assert props and all(issubclass(p, Spec) for p in props)
    assert all(p.model_config["frozen"] and p.model_config["extra"] == "forbid" for p in props)


def test_library_declares_ranges_and_the_app_pins_inside_them() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    requirements = {Requirement(line).name: Requirement(line) for line in declared}
    assert not [r for r in requirements.values() if str(r.specifier).startswith("==")], "ranges, not pins"
    pins = {}
    for line in (ROOT / "requirements" / "base.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name] = version
    assert set(pins) == set(requirements), "base.txt pins exactly what the library declares"
    outside = [f"{n}=={v}" for n, v in pins.items() if not requirements[n].specifier.contains(v, prereleases=True)]
    assert outside == []


def reuse_example() -> str:
    text = (ROOT / "docs" / "reuse.md").read_text()
    (code,) = re.findall(r"```python\n(.*?)```", text, re.S)
    return code


def test_the_reuse_example_synthesizes_and_validates(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(reuse_example())
    # Outside the repository: its own folder, no environments/, the library from constructs/.
    env = {**os.environ, "PYTHONPATH": str(ROOT / "constructs")}
    env.pop("JSII_NODE", None)  # import kgstack must find a supported Node by itself
    result = subprocess.run(
        [sys.executable, "app.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env
    )
    assert result.returncode == 0, result.stderr
    assert "end-of-life" not in result.stdout + result.stderr
    objects = [o for o in yaml.safe_load_all((tmp_path / "dist" / "search.k8s.yaml").read_text()) if o]
    kinds = sorted(f"{o['kind']}/{o['metadata']['name']}" for o in objects)
    assert "Deployment/search-prod-query" in kinds and "StatefulSet/search-prod-redis" in kinds
    assert "HorizontalPodAutoscaler/search-prod-query" in kinds
    problems = [p for o in objects for p in schema_problems(o, "1.33")]
    assert problems == []
    for obj in objects:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "search" and labels["app.kubernetes.io/part-of"] == "acme-platform"
        assert obj["metadata"]["namespace"] == "search"
    query = next(o for o in objects if o["kind"] == "Deployment")
    env_names = {e["name"]: e for e in query["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env_names["REDIS_URL"]["valueFrom"]["secretKeyRef"]["name"] == "search-redis"


def test_without_a_supported_node_one_line_says_how(tmp_path: Path) -> None:
    # _node.py alone (importing kgstack would start jsii), from a folder without .tools/, with an old node.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "node").write_text("#!/bin/sh\necho v20.20.2\n")
    (bin_dir / "node").chmod(0o755)
    lib = tmp_path / "lib" / "kgstack"
    lib.mkdir(parents=True)
    (lib / "_node.py").write_text((ROOT / "constructs" / "kgstack" / "_node.py").read_text())
    code = (
        "import importlib.util, os\n"
        f"spec = importlib.util.spec_from_file_location('n', {str(lib / '_node.py')!r})\n"
        "n = importlib.util.module_from_spec(spec); spec.loader.exec_module(n)\n"
        "n.use_supported_node(); print(os.environ.get('JSII_NODE'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "JSII_NODE"} | {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert result.stdout == "None\n"
    (line,) = result.stderr.splitlines()
    assert line.startswith("kgstack: jsii needs Node.js 22 or 24 and found none; set JSII_NODE=")
