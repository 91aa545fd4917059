"""AgentSecrets: ExternalSecrets in staging/prod only, strictly valid against the vendored ESO CRD."""

from __future__ import annotations

from typing import Any

import cdk8s
import pytest
from pydantic import ValidationError

from kgstack.agent_secrets import AgentSecrets, AgentSecretsProps, SecretsSettings
from kgstack.model import Stage
from kgstack.naming import Identity
from kgstack.publish import manifests
from kgstack.schema import schema_problems

RELEASE = Identity(name="kga", instance="kga-prod", version="0.3.0")


def render(stage: Stage, **props: Any) -> dict[str, dict[str, Any]]:
    chart = cdk8s.Chart(cdk8s.App(), "t", disable_resource_name_hashes=True)
    AgentSecrets(
        chart,
        "S",
        props=AgentSecretsProps(
            identity=RELEASE,
            namespace="kga-prod",
            stage=stage,
            environment="prod",
            settings=SecretsSettings(store_name="vault-prod") if stage is not Stage.DEV else SecretsSettings(),
            **props,
        ),
    )
    return {o["metadata"]["name"]: o for o in manifests(chart).values()}


def test_prod_renders_one_strict_external_secret_per_secret() -> None:
    objects = render(
        Stage.PROD,
        memgraph_secret="kga-memgraph",
        backup_secret="kga-backup",
        redis_url_template='redis://app:{{ index . "app-password" | urlquery }}@kga-prod-redis:6379/0',
        agent_keys=["OPENAI_API_KEY", "GITHUB_TOKEN", "PINECONE_API_KEY"],
    )
    assert set(objects) == {"kga-agent", "kga-redis", "kga-memgraph", "kga-edge-keys", "kga-backup"}
    for obj in objects.values():
        assert obj["apiVersion"] == "external-secrets.io/v1"
        assert schema_problems(obj, "1.33") == []
        assert obj["spec"]["secretStoreRef"] == {"name": "vault-prod", "kind": "ClusterSecretStore"}
        assert obj["spec"]["refreshInterval"] == "1h"
        assert "data" not in obj or all("remoteRef" in d for d in obj["spec"]["data"])
    agent = objects["kga-agent"]["spec"]["data"]
    assert {d["secretKey"] for d in agent} == {"OPENAI_API_KEY", "GITHUB_TOKEN", "PINECONE_API_KEY"}
    assert agent[0]["remoteRef"] == {"key": "kga/prod/agent", "property": "OPENAI_API_KEY"}
    redis = objects["kga-redis"]["spec"]["target"]["template"]
    assert redis["mergePolicy"] == "Merge" and redis["data"]["url"].endswith("@kga-prod-redis:6379/0")


def test_the_crd_schema_rejects_unknown_fields() -> None:
    obj = render(Stage.PROD)["kga-agent"]
    obj["spec"]["target"]["nmae"] = "typo"
    assert any("'nmae' was unexpected" in p for p in schema_problems(obj, "1.33"))


def test_dev_renders_nothing() -> None:
    assert render(Stage.DEV) == {}


def test_store_required_outside_dev() -> None:
    with pytest.raises(ValidationError, match="storeName is required in staging"):
        AgentSecretsProps(identity=RELEASE, namespace="n", stage=Stage.STAGING, environment="staging")


def test_no_secret_values_rendered() -> None:
    text = str(render(Stage.PROD, backup_secret="kga-backup"))
    assert "stringData" not in text and "'kind': 'Secret'" not in text
