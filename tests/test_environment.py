"""The environment model: every bad input is one clear line naming file, field and reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import DELETE, ENVIRONMENTS, env_data

from kgstack.environment import (
    EnvironmentError,
    json_schema,
    load_environment,
    load_environments,
    markdown_reference,
    parse_environment,
)

DIGEST = "sha256:" + "ab" * 32


def problems(data: object, source: str = "environments/dev.yaml") -> list[str]:
    with pytest.raises(EnvironmentError) as caught:
        parse_environment(data, source=source)
    return caught.value.problems


def test_shipped_environments_load() -> None:
    names = [env.name for env in load_environments(ENVIRONMENTS)]
    assert names == ["dev", "prod", "staging"]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        pytest.param({"query__resorces": {}}, "query.resorces: unknown field", id="typo"),
        pytest.param(
            {"query__autoscaling__maxReplicas": "many"},
            "query.autoscaling.maxReplicas: Input should be a valid integer",
            id="wrong-type",
        ),
        pytest.param(
            {"query__autoscaling__minReplicas": 0},
            "query.autoscaling.minReplicas: Input should be greater than or equal to 1",
            id="zero-replicas",
        ),
        pytest.param(
            {"query__autoscaling__minReplicas": -2},
            "query.autoscaling.minReplicas: Input should be greater than or equal to 1",
            id="negative-replicas",
        ),
        pytest.param(
            {"query__autoscaling__minReplicas": 5, "query__autoscaling__maxReplicas": 2},
            "query.autoscaling: minReplicas (5) is greater than maxReplicas (2)",
            id="min-over-max",
        ),
        pytest.param(
            {"indexer__resources__limits__memory": "256Mi"},
            "indexer.resources: limits.memory (256Mi) is below requests.memory (512Mi)",
            id="limit-below-request",
        ),
        pytest.param(
            {"query__resources__requests__cpu": "lots"},
            "query.resources.requests.cpu: 'lots' is not a Kubernetes quantity",
            id="bad-quantity",
        ),
        pytest.param(
            {"images__agent__repository": "GHCR.io/Acme//agent"},
            "images.agent: repository 'GHCR.io/Acme//agent' is not a valid image reference",
            id="bad-image",
        ),
        pytest.param(
            {"images__agent__digest": "sha256:1234"},
            "images.agent.digest: String should match pattern",
            id="bad-digest",
        ),
        pytest.param({"domain": "localhost"}, "domain: 'localhost' is not a lowercase", id="domain"),
        pytest.param({"domain": "Kga_Example.com"}, "domain: 'Kga_Example.com' is not", id="domain-case"),
        pytest.param(
            {"agent__githubFileExtensions": DELETE},
            "agent.githubFileExtensions: required field is missing",
            id="missing-setting",
        ),
        pytest.param(
            {"agent__githubFileExtensions": []},
            "agent.githubFileExtensions: List should have at least 1 item",
            id="empty-extensions",
        ),
        pytest.param({"kubernetesVersion": "1.26"}, "kubernetesVersion: '1.26' is not one of", id="k8s-version"),
        pytest.param(
            {"cloud__workloadIdentity": "arn:aws:iam::1:role/x"},
            "cloud: workloadIdentity needs provider eks, gke or aks",
            id="identity-generic",
        ),
        pytest.param(
            {"agent__chunking__overlap": 1000},
            "agent.chunking: overlap (1000) must be smaller than size (1000)",
            id="chunking",
        ),
        pytest.param(
            {"repositories": [{"name": "x", "url": "git@github.com:a/b.git"}]},
            "repositories[0].url: String should match pattern",
            id="repo-url",
        ),
    ],
)
def test_bad_input_names_file_field_and_reason(changes: dict[str, object], expected: str) -> None:
    found = problems(env_data("dev", **changes))
    assert any(p.startswith("environments/dev.yaml: ") and expected in p for p in found), found


def test_prod_requires_digests() -> None:
    found = problems(env_data("prod", images__agent__digest=DELETE), "environments/prod.yaml")
    assert found == ["environments/prod.yaml: (top level): stage prod requires image digests; missing for images.agent"]


def test_every_problem_is_reported_once() -> None:
    found = problems(env_data("dev", query__resorces={}, domain="x", indexer__storageSize="big"))
    assert len(found) == 3, found


def test_name_must_match_file(tmp_path: Path) -> None:
    path = tmp_path / "qa.yaml"
    path.write_text(yaml.safe_dump(env_data("dev")))
    with pytest.raises(EnvironmentError) as caught:
        load_environment(path)
    assert caught.value.problems == [f"{path}: name: 'dev' must equal the file name 'qa'"]


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "dev.yaml"
    path.write_text("name: dev\nstage: [dev\n")
    with pytest.raises(EnvironmentError) as caught:
        load_environment(path)
    (problem,) = caught.value.problems
    assert problem.startswith(f"{path}: line ") and "not valid YAML" in problem


def test_not_a_mapping() -> None:
    assert problems(["a"]) == ["environments/dev.yaml: (top level): expected a mapping of settings"]


def test_models_are_frozen(environments: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError, match="frozen"):
        environments["dev"].domain = "other.example.com"


def test_published_schema_is_current() -> None:
    committed = (ENVIRONMENTS / "schema.json").read_text()
    assert committed == json_schema(), "run: make schema"


def test_reference_doc_is_current() -> None:
    committed = (ENVIRONMENTS.parent / "docs" / "environment-reference.md").read_text()
    assert committed == markdown_reference(), "run: make schema"
    assert "| `kubernetesVersion` | string | **required** |" in committed


def test_schema_rejects_unknown_fields_for_editors() -> None:
    schema = json.loads(json_schema())
    assert schema["additionalProperties"] is False
    assert "kubernetesVersion" in schema["properties"]
    assert schema["$defs"]["QueryTier"]["properties"]["resources"]["description"]
