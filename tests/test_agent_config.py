"""AgentConfig: the app's settings as env vars, appSettings.json, and secret references only."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import DELETE, ROOT, build, env_data
from pydantic import ValidationError
from rendered import AgentPod, run_agent, run_chroma, run_redis
from rendered import objects as rendered_objects
from tools import missing

from kgstack.agent_config import AgentConfigProps
from kgstack.environment import AgentSettings, Environment, Repository, parse_environment
from kgstack.naming import Identity
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
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in env if "valueFrom" in e}
    assert refs["OPENAI_API_KEY"] == {"name": "kga-agent", "key": "OPENAI_API_KEY"}
    assert refs["GITHUB_TOKEN"]["name"] == "kga-agent"
    assert refs["EMBEDDING_API_KEY"]["optional"] is True
    # Plain values are only the tier's own runtime settings, never a credential.
    assert {e["name"] for e in env if "value" in e} == {"KGA_RUNTIME_PORT"}
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


def agent_containers(objects: dict[str, dict[str, Any]], env: str) -> dict[str, dict[str, Any]]:
    return {
        tier: objects[f"Deployment/kga-{env}-{tier}"]["spec"]["template"]["spec"]["containers"][0]
        for tier in ("query", "indexer")
    }


def service_at(objects: dict[str, dict[str, Any]], host: str, port: int) -> str:
    """The component behind ``host:port`` in the rendered Services (what a pod's URL reaches)."""
    service = objects[f"Service/{host}"]
    assert port in [p["port"] for p in service["spec"]["ports"]], (host, port)
    return str(service["spec"]["selector"]["app.kubernetes.io/component"])


def egress_allows(objects: dict[str, dict[str, Any]], env: str, tier: str, component: str, port: int) -> bool:
    """The tier's NetworkPolicy lets it open ``port`` on the pods of ``component``."""
    rules = objects[f"NetworkPolicy/kga-{env}-{tier}"]["spec"]["egress"]
    return any(
        {"port": port, "protocol": "TCP"} in rule["ports"]
        and any(
            peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component") == component
            for peer in rule["to"]
        )
        for rule in rules
    )


@pytest.mark.parametrize("env", ["dev", "staging", "prod"])
def test_both_tiers_use_the_chroma_server(manifests: Manifests, env: str) -> None:
    """Issue 16 defect 2: the app always opened an embedded store in ``chroma_db`` in its working directory, so
    each query pod had its own empty store and the Chroma StatefulSet served nothing. The runtime layer uses the
    server when ``KGA_CHROMA_MODE`` is ``http``: both tiers start through it with the server's address."""
    objects = manifests[env]
    config = objects[f"ConfigMap/kga-{env}-agent"]
    data = config["data"]
    assert data["DATABASE_TYPE"] == "chroma"
    assert data["KGA_CHROMA_MODE"] == "http"
    assert service_at(objects, data["CHROMA_HOST"], int(data["CHROMA_PORT"])) == "chroma"
    for tier, container in agent_containers(objects, env).items():
        assert container["args"] == ["python", "-m", "kga_runtime"]
        assert {"configMapRef": {"name": config["metadata"]["name"]}} in container["envFrom"]
        assert egress_allows(objects, env, tier, "chroma", int(data["CHROMA_PORT"])), tier
        assert not {"CHROMA_HOST", "CHROMA_PORT", "KGA_CHROMA_MODE"} & {e["name"] for e in container["env"]}
    assert "chroma_db" not in str(objects)


def test_chroma_without_its_server_is_refused() -> None:
    """Without the server's endpoint a pod would fall back to its own embedded store: refused at construction."""
    with pytest.raises(ValidationError, match=r"chroma: required when settings.vectorStore.type is chroma"):
        AgentConfigProps(
            identity=Identity(name="kga", instance="kga-t", version="1").of("agent"),
            namespace="t",
            settings=AgentSettings(github_file_extensions=[".py"]),
            repositories=[Repository(name="r", url="https://github.com/a/b")],
            production=False,
            api_base_url="https://t.example.com/api/v1",
        )


@pytest.mark.parametrize("env", ["dev", "staging", "prod"])
def test_both_tiers_get_redis_and_the_cache_ttls(
    manifests: Manifests, environments: dict[str, Environment], env: str
) -> None:
    """Issue 16 defect 3: the app reads no ``REDIS_URL``, so Redis cost without effect. The runtime layer caches
    LLM answers and embeddings there: both tiers get the URL from the Redis Secret (whose ``url`` reaches the
    Redis Service) and the environment's TTLs."""
    objects = manifests[env]
    data = objects[f"ConfigMap/kga-{env}-agent"]["data"]
    cache = environments[env].agent.runtime.cache
    assert int(data["KGA_CACHE_LLM_TTL_SECONDS"]) == cache.llm_ttl_seconds > 0
    assert int(data["KGA_CACHE_EMBEDDINGS_TTL_SECONDS"]) == cache.embeddings_ttl_seconds > 0
    for tier, container in agent_containers(objects, env).items():
        (ref,) = [e["valueFrom"]["secretKeyRef"] for e in container["env"] if e["name"] == "REDIS_URL"]
        assert ref == {"name": "kga-redis", "key": "url"}, tier
        assert container["args"] == ["python", "-m", "kga_runtime"]  # the layer that reads REDIS_URL
        (redis_port,) = [
            p["port"] for p in objects[f"Service/kga-{env}-redis"]["spec"]["ports"] if p["name"] == "redis"
        ]
        assert egress_allows(objects, env, tier, "redis", redis_port), tier
    external = objects.get("ExternalSecret/kga-redis")
    if external is not None:  # staging, prod: External Secrets writes the URL; dev's is made by hand
        url = external["spec"]["target"]["template"]["data"]["url"]
        match = re.fullmatch(r"redis://app:[^@]+@([a-z0-9-]+):(\d+)/0", url)
        assert match and service_at(objects, match[1], int(match[2])) == "redis", url


def test_cache_ttls_come_from_the_environment() -> None:
    env = parse_environment(
        env_data("dev", agent__runtime={"cache": {"llmTtlSeconds": 0, "embeddingsTtlSeconds": 60}}), source="dev.yaml"
    )
    _, stack = build(env)
    data = synth_objects([stack])["dev"]["configmap-kga-dev-agent.yaml"]["data"]
    assert (data["KGA_CACHE_LLM_TTL_SECONDS"], data["KGA_CACHE_EMBEDDINGS_TTL_SECONDS"]) == ("0", "60")


# --- the rendered tiers with the real runtime layer, the rendered Redis and Chroma (tests/rendered.py) -------


@pytest.fixture(scope="module")
def tiers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """dist/staging's indexer and query pods (``python -m kga_runtime`` around the stand-in app), sharing
    dist/staging's Redis and Chroma, with a fake LLM."""
    if not (ROOT / "tests" / "fake_openai.py").exists():
        missing("tests/fake_openai.py missing (the runtime layer of issue 16)")
    from fake_openai import FakeOpenAI

    root = tmp_path_factory.mktemp("tiers")
    llm = FakeOpenAI().start()
    try:
        with (
            run_redis("staging", root / "redis") as redis,
            run_chroma("staging", root / "chroma") as chroma,
            run_agent(
                "staging", "indexer", root / "indexer", redis=redis, chroma=chroma, llm_url=llm.base_url
            ) as indexer,
            run_agent("staging", "query", root / "query", redis=redis, chroma=chroma, llm_url=llm.base_url) as query,
        ):
            yield {"indexer": indexer, "query": query, "redis": redis, "chroma": chroma, "llm": llm}
    finally:
        llm.stop()


def wait_workflow(indexer: AgentPod, workflow_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, text = indexer.get("http", f"/api/v1/workflows/{workflow_id}/status")
        if status == 200 and json.loads(text)["status"] in ("completed", "failed"):
            return dict(json.loads(text))
        time.sleep(0.2)
    raise AssertionError(f"workflow {workflow_id} did not finish:\n{indexer.tail()}")


def test_the_indexer_fills_the_chroma_server_the_query_tier_reads(tiers: dict[str, Any]) -> None:
    """Issue 16 defect 2, running: what the rendered indexer indexes lands in the rendered Chroma server (no
    ``chroma_db`` in any pod), and the rendered query pod answers from it."""
    indexer, query = tiers["indexer"], tiers["query"]
    repository = json.loads(rendered_objects("staging")["ConfigMap/kga-staging-agent"]["data"]["appSettings.json"])[
        "repositories"
    ][0]
    status, body = indexer.post("/api/v1/index/repository", {"repository_url": repository["url"], "incremental": True})
    assert status == 200, body
    assert wait_workflow(indexer, body["workflow_id"])["status"] == "completed", indexer.tail()
    collection = tiers["chroma"].client().get_collection(query.env["CHROMA_COLLECTION_NAME"])
    assert collection.count() > 0
    for pod in (indexer, query):
        assert not (Path(pod.pod.local(pod.container, pod.container["workingDir"])) / "chroma_db").exists()
    status, answer = query.post("/api/v1/query", {"query": "what does the agent index?"})
    assert status == 200, (answer, query.tail())
    assert answer["sources"], answer  # found in the shared server


def test_a_repeated_question_is_served_from_the_rendered_redis(tiers: dict[str, Any]) -> None:
    """Issue 16 defect 3, running: the rendered query pod reaches the rendered Redis as its ``app`` ACL user
    through the Secret's URL; the second identical question goes to neither the embeddings API nor the LLM,
    and the entries carry the rendered TTLs."""
    query, llm = tiers["query"], tiers["llm"]
    hits = query.metric("kga_cache_requests_total", cache="embeddings", result="hit")
    calls = []
    for _ in range(2):
        before = dict(llm.calls)
        status, answer = query.post("/api/v1/query", {"query": "which cache answers twice?"})
        assert status == 200, (answer, query.tail())
        calls.append({k: llm.calls[k] - before.get(k, 0) for k in ("embeddings", "chat")})
    assert calls == [{"embeddings": 1, "chat": 1}, {"embeddings": 0, "chat": 0}], calls
    assert query.metric("kga_cache_requests_total", cache="embeddings", result="hit") > hits
    client = tiers["redis"].client("app")
    ttls = [client.ttl(key) for key in client.scan_iter()]
    for setting in ("KGA_CACHE_LLM_TTL_SECONDS", "KGA_CACHE_EMBEDDINGS_TTL_SECONDS"):
        limit = int(query.env[setting])
        assert any(limit - 300 < ttl <= limit for ttl in ttls), (setting, limit, ttls)
