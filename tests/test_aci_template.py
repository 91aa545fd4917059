"""The ACI target: the committed ARM template, valid against Azure's published schema and clean under checkov."""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Any

import jsonschema
import pytest
from conftest import ROOT
from referencing import Registry, Resource
from tools import checkov

from kgstack import load_environment
from kgstack.aci_template import API_VERSION, render_aci
from kgstack.cloud_components import kubernetes_view
from kgstack.environment import Target

ENVS = sorted(p.stem for p in (ROOT / "environments").glob("*.yaml") if Target.ACI in load_environment(p).targets)
SCHEMAS = ROOT / "tests" / "fixtures" / "arm-schemas"
GROUP = "Microsoft.ContainerInstance/containerGroups"


@cache
def committed(env: str, name: str = "azuredeploy.json") -> dict[str, Any]:
    return json.loads((ROOT / "dist" / env / "aci" / name).read_text())  # type: ignore[no-any-return]


def groups(env: str) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in committed(env)["resources"] if r["type"] == GROUP}


def number(value: int | str) -> float:
    """A template number: an integer, or ``[json('0.5')]`` (ARM has no decimal literals)."""
    return float(value.removeprefix("[json('").removesuffix("')]")) if isinstance(value, str) else float(value)


def validator() -> jsonschema.Draft4Validator:
    aci = json.loads((SCHEMAS / "Microsoft.ContainerInstance.json").read_text())
    common = json.loads((SCHEMAS / "common-definitions.json").read_text())
    registry: Registry[Any] = Registry().with_resources(
        [
            (aci["id"].rstrip("#"), Resource.opaque(aci)),
            ("https://schema.management.azure.com/schemas/common/definitions.json", Resource.opaque(common)),
        ]
    )
    schema = {"$ref": f"{aci['id'].rstrip('#')}#/resourceDefinitions/containerGroups"}
    return jsonschema.Draft4Validator(schema, registry=registry)


def test_an_environment_targets_aci() -> None:
    assert ENVS == ["azure"]


def test_the_schema_is_azures_at_a_recorded_commit() -> None:
    source = json.loads((SCHEMAS / "SOURCE.json").read_text())
    assert source["repository"] == "https://github.com/Azure/azure-resource-manager-schemas"
    assert len(source["commit"]) == 40
    assert f"schemas/{API_VERSION}/Microsoft.ContainerInstance.json" in source["files"]


@pytest.mark.parametrize("env", ENVS)
def test_every_container_group_is_valid_against_the_vendored_schema(env: str) -> None:
    check = validator()
    assert groups(env)
    for name, group in groups(env).items():
        errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in check.iter_errors(group)]
        assert errors == [], name


def test_the_schema_check_catches_a_container_without_image_or_resources() -> None:
    (group, *_) = groups(ENVS[0]).values()
    broken = json.loads(json.dumps(group))
    del broken["properties"]["containers"][0]["properties"]["image"]
    del broken["properties"]["containers"][0]["properties"]["resources"]
    assert list(validator().iter_errors(broken))


@pytest.mark.parametrize("env", ENVS)
def test_the_template_is_the_fresh_render(env: str) -> None:
    from app import pin_releases

    (environment,) = pin_releases(ROOT / "environments", [load_environment(ROOT / "environments" / f"{env}.yaml")])
    view = kubernetes_view(environment)
    files = render_aci(environment, view.objects, view.remote_secrets)
    assert json.loads(files["azuredeploy.json"]) == committed(env)
    assert json.loads(files["azuredeploy.parameters.json"]) == committed(env, "azuredeploy.parameters.json")


def strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else []
    return [s for v in items for s in strings(v)]


@pytest.mark.parametrize("env", ENVS)
def test_every_bracketed_string_is_an_expression_or_escaped(env: str) -> None:
    """ARM evaluates any string in ``[...]`` as an expression: a literal one (a JSON list in a setting,
    ``GITHUB_FILE_EXTENSIONS``) fails the deployment unless escaped as ``[[...]`` (found by test_cloud_run)."""
    for text in strings(committed(env)):
        if text.startswith("[") and text.endswith("]") and not text.startswith("[["):
            assert re.match(r"^\[[a-zA-Z]+\(", text), text


@pytest.mark.parametrize("env", ENVS)
def test_secrets_are_key_vault_references_never_inline(env: str) -> None:
    template, parameters = committed(env), committed(env, "azuredeploy.parameters.json")
    secure = {k for k, p in template["parameters"].items() if p["type"] == "securestring"}
    assert secure and secure == set(parameters["parameters"])
    for value in parameters["parameters"].values():
        assert set(value) == {"reference"} and "keyVault" in value["reference"]
    for group in groups(env).values():
        for c in group["properties"]["containers"]:
            for var in c["properties"].get("environmentVariables", []):
                if "secureValue" in var:
                    assert var["secureValue"].startswith("[parameters('"), var
                assert var["name"] not in {"OPENAI_API_KEY", "GITHUB_TOKEN", "REDIS_URL"} or "secureValue" in var


@pytest.mark.parametrize("env", ENVS)
def test_containers_run_non_root_without_capabilities_with_probes_and_limits(env: str) -> None:
    for group in groups(env).values():
        assert group["properties"]["diagnostics"]["logAnalytics"]["workspaceId"]
        assert group["properties"]["ipAddress"]["type"] == "Private"
        for c in group["properties"]["containers"]:
            p = c["properties"]
            assert p["securityContext"]["runAsUser"] >= 100, c["name"]
            assert p["securityContext"]["capabilities"]["drop"] == ["ALL"], c["name"]
            assert p["securityContext"]["privileged"] is False
            limits, requests = p["resources"]["limits"], p["resources"]["requests"]
            assert number(limits["memoryInGB"]) >= number(requests["memoryInGB"]) > 0, c["name"]
            assert number(limits["cpu"]) >= number(requests["cpu"]) > 0, c["name"]
            assert "livenessProbe" in p, c["name"]


@pytest.mark.parametrize("env", ENVS)
def test_the_edge_is_probed_over_the_tls_it_serves(env: str) -> None:
    """The edge ends TLS on its port: a plain-HTTP probe gets 400 and ACI restarts it forever (test_cloud_run)."""
    (edge,) = [c for g in groups(env).values() for c in g["properties"]["containers"] if c["name"] == "edge"]
    assert edge["properties"]["livenessProbe"]["httpGet"]["scheme"] == "https"


@pytest.mark.parametrize("env", ENVS)
def test_the_indexer_keeps_its_working_directory_on_azure_files(env: str) -> None:
    (indexer,) = [g for name, g in groups(env).items() if name.endswith("-indexer")]
    volumes = {v["name"]: v for v in indexer["properties"]["volumes"]}
    (data,) = [
        m for m in indexer["properties"]["containers"][0]["properties"]["volumeMounts"] if m["mountPath"] == "/data"
    ]
    assert "azureFile" in volumes[data["name"]]


@pytest.mark.slow
@pytest.mark.parametrize("env", ENVS)
def test_checkov_reports_no_failed_checks(env: str) -> None:
    report = checkov(ROOT / "dist" / env / "aci", framework="arm")
    failed = [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]]
    assert failed == []
    assert report["summary"]["passed"] > 5
