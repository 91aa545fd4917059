"""The library as someone else uses it: exports, defaults, version ranges, and docs/reuse.md's app."""

from __future__ import annotations

import enum
import inspect
import os
import re
import subprocess
import sys
import tomllib
import typing
from pathlib import Path

import pytest
import yaml
from conftest import ROOT
from constructs import Construct
from packaging.requirements import Requirement
from pydantic import BaseModel

import kgstack

# isort: split
import cdk8s

from kgstack import cross_reference
from kgstack.model import Spec
from kgstack.publish import file_name
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
    # The constructs declared query -> Redis themselves: the policies the example renders allow it.
    files = {file_name(o): o for o in objects}
    gate = cross_reference.Gate(files, namespace="search", prerequisites={"search-agent": None, "search-redis": None})
    assert gate.problems() == []
    assert gate.reaches("deployment-search-prod-query.yaml", "search-prod-redis", 6379)
    assert not gate.reaches("statefulset-search-prod-redis.yaml", "search-prod-query", 8000)
    redis_policy = files["networkpolicy-search-prod-redis.yaml"]["spec"]
    assert [
        r["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for r in redis_policy["ingress"]
    ] == ["query"]


def test_a_construct_declares_the_connections_it_is_handed() -> None:
    """Issue 21: query -> Redis was declared only by AgentStack, so a chart of the constructs blocked it."""
    chart = cdk8s.Chart(cdk8s.App(), "t")
    release = kgstack.Identity(instance="t", version="1")
    redis_url = kgstack.SecretRef(
        name="r", key="url", endpoint=kgstack.Endpoint.serving(release.of("redis"), "t", 6379, "redis")
    )
    props = kgstack.AgentConfigProps(
        identity=release.of("agent"),
        namespace="t",
        settings=kgstack.AgentSettings(github_file_extensions=[".py"]),
        repositories=[],
        production=False,
        api_base_url="https://t.example.com/api/v1",
        chroma=kgstack.Endpoint.serving(release.of("chroma"), "t", 8000, "http"),
        extra_secrets={"REDIS_URL": redis_url},
    )
    config = kgstack.AgentConfig(chart, "Config", props=props)
    config.connect(kgstack.ComponentPeer(component="query"))
    flows = {
        (f.source.key, f.destination.model_dump().get("component"), f.ports[0].port)
        for f in kgstack.Connections.of(chart).flows
    }  # type: ignore[union-attr]
    assert ("query", "redis", 6379) in flows and ("query", None, 443) in flows
    assert ("query", "chroma", 8000) in flows  # the vector store server (issue 16)


def test_the_gate_runs_on_any_chart(tmp_path: Path) -> None:
    """Without the example's ServiceAccount, check_chart names the file and field that reference it."""
    code = reuse_example().replace(
        '    metadata=k8s.ObjectMeta(name="search-agent"', '    metadata=k8s.ObjectMeta(name="someone-else"'
    )
    result = _run(tmp_path, code)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: search/deployment-search-prod-query.yaml: spec.template.spec.serviceAccountName: "
        "ServiceAccount search-agent does not exist"
    ]
    assert not (tmp_path / "dist").exists()


@pytest.mark.parametrize(
    ("change", "line"),
    [
        (  # a props model refuses a value
            (
                "resources=small,\n        autoscaling",
                "resources=small,\n        termination_grace_seconds=5,\n        autoscaling",
            ),
            "error: AgentTierProps.termination_grace_seconds: Input should be greater than or equal to 10",
        ),
        (  # a construct's synth-time check fails inside cdk8s's JavaScript (jsii used to print ~40 lines)
            ("problems = check_chart(", "app.synth()\nproblems = check_chart("),
            "error: search/Query: PodDisruptionBudget/search-prod-query allows 0 voluntary disruptions at the minimum "
            "scale of 1 (Deployment/search-prod-query); node drains would block. Lower disruption.minAvailable or "
            "raise the minimum replicas.",
        ),
    ],
)
def test_a_validation_error_is_one_line_naming_the_prop(tmp_path: Path, change: tuple[str, str], line: str) -> None:
    code = reuse_example().replace(*change)
    code = code.replace("Autoscaling(min_replicas=2,", "Autoscaling(min_replicas=1,").replace(
        "        service_account=",
        "        disruption=Disruption(max_unavailable=None, min_available=1),\n        service_account=",
    )
    code = code.replace("from kgstack import (", "from kgstack import (\n    Disruption,")
    result = _run(tmp_path, code)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [line]


def test_everything_a_user_builds_with_is_exported() -> None:
    """Issue 21: Quota (TenantNamespaceProps), Connections and the flow types were not; every model a props
    field or a constructor takes is now importable from kgstack."""
    seen: set[type] = set()
    todo: list[type] = [getattr(kgstack, n) for n in kgstack.__all__ if inspect.isclass(getattr(kgstack, n))]
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.add(cls)
        if issubclass(cls, BaseModel):
            todo += [c for f in cls.model_fields.values() for c in _classes_in(f.annotation)]
        if issubclass(cls, Construct) and "__init__" in vars(cls):
            todo += [c for hint in typing.get_type_hints(cls.__init__).values() for c in _classes_in(hint)]
    missing = sorted(
        f"{c.__module__}.{c.__name__}"
        for c in seen
        if c.__module__.startswith("kgstack") and c.__name__ not in kgstack.__all__
    )
    assert missing == []
    for name in ("Quota", "Connections", "Endpoint", "Flow", "ComponentPeer", "tcp", "check_chart", "SecretRef"):
        assert name in kgstack.__all__


def _classes_in(annotation: object) -> list[type]:
    if isinstance(annotation, type):
        return [annotation] if issubclass(annotation, (BaseModel, enum.Enum, Construct)) else []
    return [c for arg in typing.get_args(annotation) for c in _classes_in(arg)]


def _run(folder: Path, code: str) -> subprocess.CompletedProcess[str]:
    (folder / "app.py").write_text(code)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "constructs")}
    return subprocess.run([sys.executable, "app.py"], cwd=folder, capture_output=True, text=True, timeout=300, env=env)


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
