"""AgentConfig: the app's settings as env vars, appSettings.json, and secret references only."""

from __future__ import annotations

import json
from typing import Any

from conftest import DELETE, build, env_data

from kgstack.environment import parse_environment
from kgstack.publish import synth, synth_objects

Manifests = dict[str, dict[str, dict[str, Any]]]


def test_settings_render_to_the_apps_variables(manifests: Manifests) -> None:
    data = manifests["prod"]["ConfigMap/kga-prod-agent"]["data"]
    assert data["APP_ENV"] == "production"
    assert json.loads(data["GITHUB_FILE_EXTENSIONS"])[0] == ".py"
    assert data["DATABASE_TYPE"] == "chroma"
    assert (data["CHROMA_HOST"], data["CHROMA_PORT"]) == ("kga-prod-chroma", "8000")
    assert data["API_BASE_URL"] == "https://kga.example.com/api/v1"
    assert data["WORKFLOW_TIMEOUT_SECONDS"] == "3600"
    assert manifests["dev"]["ConfigMap/kga-dev-agent"]["data"]["APP_ENV"] == "development"


def test_app_settings_json_lists_the_repositories(manifests: Manifests) -> None:
    settings = json.loads(manifests["staging"]["ConfigMap/kga-staging-agent"]["data"]["appSettings.json"])
    assert [r["name"] for r in settings["repositories"]] == ["knowledge-graph-agent", "langgraph"]
    assert set(settings["repositories"][0]) == {"name", "url", "branch", "description"}


def test_secrets_are_references(manifests: Manifests) -> None:
    env = manifests["prod"]["Deployment/kga-prod-query"]["spec"]["template"]["spec"]["containers"][0]["env"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in env}
    assert refs["OPENAI_API_KEY"] == {"name": "kga-agent", "key": "OPENAI_API_KEY"}
    assert refs["GITHUB_TOKEN"]["name"] == "kga-agent"
    assert refs["EMBEDDING_API_KEY"]["optional"] is True
    assert all("value" not in e for e in env)
    assert "PINECONE_API_KEY" not in refs


def test_pinecone_needs_its_key_and_no_chroma_host() -> None:
    data = env_data("dev", agent__vectorStore={"type": "pinecone"}, stores__chroma=DELETE)
    env = parse_environment(data, source="dev.yaml")
    _, stack = build(env)
    files = synth([stack])["dev"]
    assert "PINECONE_API_KEY" in files["deployment-kga-dev-query.yaml"]
    config = files["configmap-kga-dev-agent.yaml"]
    assert "CHROMA_HOST" not in config and "PINECONE_COLLECTION_NAME" in config


def test_an_embedding_key_of_its_own_is_required_and_fetched_by_the_external_secret() -> None:
    data = env_data("prod", agent__embedding__ownKey=True)
    env = parse_environment(data, source="prod.yaml")
    _, stack = build(env)
    objects = synth_objects([stack])["prod"]
    query = objects["deployment-kga-prod-query.yaml"]["spec"]["template"]["spec"]["containers"][0]
    (ref,) = [e["valueFrom"]["secretKeyRef"] for e in query["env"] if e["name"] == "EMBEDDING_API_KEY"]
    assert ref == {"name": "kga-agent", "key": "EMBEDDING_API_KEY"}
    data_keys = [d["secretKey"] for d in objects["externalsecret-kga-agent.yaml"]["spec"]["data"]]
    assert "EMBEDDING_API_KEY" in data_keys
    assert stack.check_references(objects) == []
