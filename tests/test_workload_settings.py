"""The Helm-chart staples (``workloads:``) reach every workload and run-once Job, and never override the stack."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from typing import Any

import pytest
import yaml
from conftest import ROOT, build, env_data

from kgstack import cross_reference
from kgstack.environment import EnvironmentFileError, parse_environment
from kgstack.publish import manifests
from kgstack.validation import collect_errors

Obj = dict[str, Any]

UNREACHABLE = {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"}
STAPLES = {
    "tolerations": [
        {"key": "dedicated", "operator": "Equal", "value": "kga", "effect": "NoSchedule"},
        {**UNREACHABLE, "tolerationSeconds": 60},
    ],
    "nodeSelector": {"kubernetes.io/arch": "amd64", "pool": "kga"},
    "imagePullSecrets": ["kga-registry", "kga-mirror"],
    "priorityClassName": "kga-high",
    "labels": {"acme.example.com/cost-centre": "search"},
    "annotations": {"acme.example.com/owner": "search-team"},
    "env": {"query": {"HTTP_PROXY": "http://proxy.example.com:3128"}, "backup": {"AWS_MAX_ATTEMPTS": "5"}},
}


def _templates(objects: dict[str, Obj]) -> list[tuple[str, Obj]]:
    out = []
    for name, obj in objects.items():
        if obj["kind"] == "CronJob":
            out.append((name, obj["spec"]["jobTemplate"]["spec"]["template"]))
        elif obj["kind"] in ("Deployment", "StatefulSet", "Job"):
            out.append((name, obj["spec"]["template"]))
    return out


def _stack(name: str, workloads: Obj) -> Any:
    data = env_data(name)
    data["workloads"] = workloads
    return build(parse_environment(data, source=f"{name}.yaml"))


def _own_env(name: str) -> list[Obj]:
    """The container's env without any workload settings, from dist/."""
    obj = yaml.safe_load((ROOT / "dist" / "staging" / name).read_text())
    return obj["spec"]["template"]["spec"]["containers"][0]["env"]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def staged() -> dict[str, Obj]:
    _, stack = _stack("staging", STAPLES)
    return manifests(stack)


def test_every_pod_gets_every_staple(staged: dict[str, Obj]) -> None:
    templates = _templates(staged)
    kinds = {staged[name]["kind"] for name, _ in templates}
    assert kinds == {"Deployment", "StatefulSet", "CronJob"}
    for name, template in templates:
        spec = template["spec"]
        assert spec["tolerations"] == [
            {"key": "dedicated", "operator": "Equal", "value": "kga", "effect": "NoSchedule"},
            {
                "key": "node.kubernetes.io/unreachable",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 60,
            },
        ], name
        assert spec["nodeSelector"] == {"kubernetes.io/arch": "amd64", "pool": "kga"}, name
        assert spec["imagePullSecrets"] == [{"name": "kga-registry"}, {"name": "kga-mirror"}], name
        assert spec["priorityClassName"] == "kga-high", name
        assert template["metadata"]["labels"]["acme.example.com/cost-centre"] == "search", name
        assert template["metadata"]["annotations"]["acme.example.com/owner"] == "search-team", name


def test_labels_and_annotations_reach_every_object_and_leave_selectors_alone(staged: dict[str, Obj]) -> None:
    for name, obj in staged.items():
        assert obj["metadata"]["labels"]["acme.example.com/cost-centre"] == "search", name
        assert obj["metadata"]["annotations"]["acme.example.com/owner"] == "search-team", name
        selector = (obj.get("spec") or {}).get("selector") or {}
        assert "acme.example.com/cost-centre" not in (selector.get("matchLabels") or selector), name


def test_extra_env_goes_to_its_component_only_after_the_stacks_own(staged: dict[str, Obj]) -> None:
    query = staged["deployment-kga-staging-query.yaml"]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert query[-1] == {"name": "HTTP_PROXY", "value": "http://proxy.example.com:3128"}
    assert [e["name"] for e in query[:-1]] == [e["name"] for e in _own_env("deployment-kga-staging-query.yaml")]
    indexer = staged["deployment-kga-staging-indexer.yaml"]["spec"]["template"]["spec"]["containers"][0]
    assert "HTTP_PROXY" not in {e["name"] for e in indexer.get("env") or []}
    backup = staged["cronjob-kga-staging-backup-redis.yaml"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert {"name": "AWS_MAX_ATTEMPTS", "value": "5"} in backup["containers"][0]["env"]


def test_named_ports_survive_the_patches(staged: dict[str, Obj]) -> None:
    """The typed k8s classes re-read their output after JSON patches: a named port must still be there."""
    query = staged["deployment-kga-staging-query.yaml"]["spec"]["template"]["spec"]["containers"][0]
    assert query["readinessProbe"]["httpGet"]["port"] == "runtime"  # the runtime layer's side port


def test_the_gate_resolves_every_pull_secret(staged: dict[str, Obj]) -> None:
    """Outside dev an ExternalSecret makes each pull Secret; without it every pod's reference is reported."""
    registry = staged["externalsecret-kga-mirror.yaml"]
    assert registry["spec"]["target"]["template"]["type"] == "kubernetes.io/dockerconfigjson"
    assert registry["spec"]["data"] == [
        {"secretKey": ".dockerconfigjson", "remoteRef": {"key": "kga/staging/mirror", "property": ".dockerconfigjson"}}
    ]
    assert cross_reference.Gate(staged, namespace="kga-staging").problems() == []
    without = {k: v for k, v in staged.items() if k != "externalsecret-kga-mirror.yaml"}
    problems = cross_reference.Gate(without, namespace="kga-staging").problems()
    assert len(problems) == len(_templates(staged))
    for problem in problems:
        assert re.match(
            r"^\S+\.yaml: spec\.(jobTemplate\.spec\.)?template\.spec\.imagePullSecrets\[1\]: "
            r"Secret kga-mirror is neither rendered, produced nor a documented prerequisite$",
            problem,
        ), problem


def test_the_gate_refuses_a_pull_secret_of_the_wrong_type(staged: dict[str, Obj]) -> None:
    """The kubelet ignores an Opaque Secret named in imagePullSecrets: the pull then fails in the cluster."""
    opaque = copy.deepcopy(staged)
    del opaque["externalsecret-kga-mirror.yaml"]["spec"]["target"]["template"]["type"]
    problems = cross_reference.Gate(opaque, namespace="kga-staging").problems()
    assert problems and all(
        p.endswith(
            "imagePullSecrets[1]: Secret kga-mirror has type Opaque; the kubelet reads pull credentials only from a "
            "kubernetes.io/dockerconfigjson Secret"
        )
        for p in problems
    ), problems


def test_dev_lists_the_pull_secret_as_a_docker_registry_secret_to_create() -> None:
    page = (ROOT / "docs" / "environments" / "dev" / "secrets.md").read_text()
    assert (
        "kubectl -n kga-dev create secret docker-registry kga-registry "
        "--from-file=.dockerconfigjson=.secrets/kga-registry/.dockerconfigjson"
    ) in page
    staging = (ROOT / "docs" / "environments" / "staging" / "secrets.md").read_text()
    assert "| `kga-registry` | `.dockerconfigjson` | ExternalSecret from" in staging


@pytest.mark.parametrize(
    ("workloads", "expected"),
    [
        (
            {"labels": {"app.kubernetes.io/component": "x"}},
            "labels.app.kubernetes.io/component: app.kubernetes.io/*",
        ),
        ({"labels": {"team": "a b"}}, "workloads.labels.team: 'a b' is not a label value"),
        ({"tolerations": [{"operator": "Exists", "value": "x"}]}, "workloads.tolerations[0].value: must be empty"),
        ({"tolerations": [{"operator": "Equal"}]}, "workloads.tolerations[0].key: required with operator Equal"),
        ({"tolerations": [{"key": "k", "tolerationSeconds": 5}]}, "workloads.tolerations[0].tolerationSeconds: only"),
        ({"priorityClassName": "High"}, "workloads.priorityClassName: String should match pattern"),
        ({"imagePullSecrets": ["Bad_Name"]}, "workloads.imagePullSecrets[0]: String should match pattern"),
        ({"env": {"query": {"1BAD=": "x"}}}, "workloads.env.query.1BAD=: not an environment variable name"),
        ({"nodeSelector": {"bad key!": "x"}}, "is not a Kubernetes label or annotation key"),
    ],
)
def test_bad_settings_name_the_field(workloads: Obj, expected: str) -> None:
    data = env_data("dev")
    data["workloads"] = workloads
    with pytest.raises(EnvironmentFileError) as exc:
        parse_environment(data, source="dev.yaml")
    assert any(expected in p for p in exc.value.problems), exc.value.problems


@pytest.mark.parametrize(
    ("workloads", "expected"),
    [
        (
            {"env": {"query": {"LOG_LEVEL": "INFO"}}},
            "workloads.env.query.LOG_LEVEL: the stack already sets it on ConfigMap kga-dev-agent of container agent",
        ),
        (
            {"env": {"redis": {"REDIS_USER": "x"}}},
            "workloads.env.redis.REDIS_USER: the stack already sets it on StatefulSet kga-dev-redis pod template, "
            "container exporter",
        ),
        ({"env": {"qeury": {"A": "b"}}}, "workloads.env.qeury: no workload has this component; components: "),
        (
            {"annotations": {"checksum/config": "x"}},
            "workloads.annotations.checksum/config: the stack already sets it on Deployment kga-dev-query "
            "pod template (",
        ),
        (
            {"labels": {"kgstack/zonal-state": "no"}},
            "workloads.labels.kgstack/zonal-state: the stack already sets it on StatefulSet kga-dev-redis "
            "pod template (",
        ),
    ],
)
def test_what_the_stack_sets_is_never_overridden(workloads: Obj, expected: str) -> None:
    app, stack = _stack("dev", workloads)
    field = expected.split(": ", maxsplit=1)[0]
    (line,) = [e for e in collect_errors(app) if e.startswith(f"dev: {field}: ")]  # one line per field
    assert f"dev: {expected}" in line
    # The stack's value is the one rendered.
    query = stack.query.node.find_child("Deployment").to_json()
    env = {e["name"] for e in query["spec"]["template"]["spec"]["containers"][0].get("env") or []}
    assert "LOG_LEVEL" not in env and query["spec"]["template"]["metadata"]["annotations"]["checksum/config"] != "x"


def test_a_one_off_job_gets_the_staples_too() -> None:
    """`make backups` prints a Job made outside dist/: staging's pull Secret must reach it."""
    result = subprocess.run(
        [sys.executable, "app.py", "backups", "staging", "redis"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    job = yaml.safe_load(result.stdout)
    assert job["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "kga-registry"}]
