"""The Compose target: rendered from the same declarations as the Kubernetes stack, checked by its own gate
(which reads the rendered files) and by the real Compose binary (``docker compose config -q``)."""

from __future__ import annotations

import copy
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import DELETE, ENVIRONMENTS, ROOT, env_data
from tools import missing

from kgstack.agent_config import HTTP_PORT, READY_PATH, RUNTIME_PORT
from kgstack.compose_gate import ComposeGate
from kgstack.compose_project import ComposeError, ComposeProject
from kgstack.edge.common import AUTH_PORT, DENY_PORT, INDEXER_PATHS
from kgstack.environment import EnvironmentFileError, load_environment, parse_environment

pytestmark = pytest.mark.go_build("compose")

COMPOSE_ENVS = sorted(p.parent.parent.name for p in (ROOT / "dist").glob("*/compose/compose.yaml"))
COMPOSE_PLUGIN = ROOT / ".tools" / "compose" / "docker-compose"


def rendered(env: str) -> dict[str, str]:
    """``dist/<env>/compose/`` as the gate reads it: file name (``config/<name>``) to text."""
    folder = ROOT / "dist" / env / "compose"
    return {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


def project(env: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "dist" / env / "compose" / "compose.yaml").read_text())  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def single() -> ComposeProject:
    return ComposeProject(load_environment(ENVIRONMENTS / "single.yaml"))


def test_a_compose_environment_is_rendered() -> None:
    assert COMPOSE_ENVS == ["single"]
    assert not (ROOT / "dist" / "single" / "kustomization.yaml").exists(), "Compose only: no Kubernetes manifests"


def test_dist_is_what_the_renderer_writes(single: ComposeProject) -> None:
    assert rendered("single") == single.files()


def test_every_component_becomes_a_service() -> None:
    services = project("single")["services"]
    for name in ("query", "indexer", "web", "auth", "edge", "redis", "chroma", "volumes"):
        assert name in services, sorted(services)
    assert "memgraph" not in services, "graph features are off in single"
    assert services["query"]["deploy"]["replicas"] == 2
    assert {"backup-redis", "backup-chroma", "restore-redis", "restore-chroma", "reindex"} <= set(services)
    assert services["backup-redis"]["profiles"] == ["backup"]
    assert services["restore-chroma"]["profiles"] == ["restore"]


def test_settings_ports_and_limits_come_from_the_kubernetes_declarations(single: ComposeProject) -> None:
    query = project("single")["services"]["query"]
    deployment = single.objects["Deployment/kga-single-query"]["spec"]["template"]["spec"]["containers"][0]
    assert query["image"] == deployment["image"]
    assert query["expose"] == [str(HTTP_PORT), str(RUNTIME_PORT)]
    assert query["environment"]["CHROMA_HOST"] == "kga-single-chroma"
    assert query["deploy"]["resources"]["limits"] == {"cpus": "2", "memory": "3g", "pids": 512}
    assert query["deploy"]["resources"]["reservations"] == {"cpus": "0.5", "memory": "1g"}
    assert f"http://127.0.0.1:{RUNTIME_PORT}{READY_PATH}" in " ".join(query["healthcheck"]["test"])
    grace = single.objects["Deployment/kga-single-query"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert query["stop_grace_period"] == f"{grace}s"


def test_credentials_are_docker_secrets_never_values() -> None:
    compose = project("single")
    text = (ROOT / "dist" / "single" / "compose" / "compose.yaml").read_text()
    from_secrets = {"OPENAI_API_KEY", "GITHUB_TOKEN", "EMBEDDING_API_KEY", "REDIS_URL", "REDIS_PASSWORD"}
    for service in compose["services"].values():
        assert not from_secrets & set(service.get("environment", {})), service["image"]
    for name, secret in compose["secrets"].items():
        assert secret["file"].startswith("${KGA_SECRETS:-/etc/kga/single/secrets}/"), name
    query = compose["services"]["query"]
    script = query["entrypoint"][query["entrypoint"].index("-c") + 1]
    # Compose reads $$ as a literal $ (a single $ would be its own interpolation).
    assert 'export OPENAI_API_KEY="$$(cat /run/secrets/kga-agent-openai_api_key)"' in script
    assert 'export REDIS_URL="$$(cat /run/secrets/kga-redis-url)"' in script
    assert query["entrypoint"][:2] == ["/usr/bin/tini", "--"], "the image's init stays PID 1"
    assert query["command"] == ["python", "-m", "kga_runtime"]
    assert "OPENAI_API_KEY:" not in text and "sk-" not in text


def test_the_agent_wrapper_keeps_the_images_entrypoint() -> None:
    # ComposeProject.ENTRYPOINT states the agent image's ENTRYPOINT; the Dockerfile is the proof.
    dockerfile = (ROOT / "docker" / "agent" / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["/usr/bin/tini", "--"]' in dockerfile


def test_every_service_is_hardened_and_only_the_edge_publishes() -> None:
    for name, service in project("single")["services"].items():
        assert service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
        assert service["logging"]["options"]["max-size"], name
        assert "limits" in service["deploy"]["resources"], name
        if name == "volumes":
            assert service["user"] == "0:0" and service["cap_add"] == ["CHOWN"] and service["network_mode"] == "none"
        else:
            assert not service["user"].startswith("0:"), name
        assert ("ports" in service) == (name == "edge"), name


def test_stores_are_on_internal_networks_with_only_their_declared_clients() -> None:
    compose = project("single")
    members = {
        network: sorted(n for n, s in compose["services"].items() if network in (s.get("networks") or {}))
        for network in compose["networks"]
    }
    assert compose["networks"]["redis"] == {"internal": True}
    assert members["redis"] == ["backup-redis", "indexer", "query", "redis", "redis-exporter", "restore-redis"]
    assert members["chroma"] == ["backup-chroma", "chroma", "indexer", "query", "restore-chroma"]
    assert "edge" not in members["redis"] + members["chroma"]
    assert members["public"] == ["edge"]
    assert "redis" not in members["egress"] and "chroma" not in members["egress"]
    assert compose["services"]["redis"]["networks"]["redis"]["aliases"] == ["kga-single-redis"]


def test_the_redis_exporter_is_a_service_of_its_own_with_the_kubernetes_acl_user(single: ComposeProject) -> None:
    """The sidecar shares the pod's 127.0.0.1 on Kubernetes; here it reaches Redis by the Service name, as the
    same ACL user, its password from a Docker secret (the image has no shell to export one)."""
    exporter = project("single")["services"]["redis-exporter"]
    pod = single.objects["StatefulSet/kga-single-redis"]["spec"]["template"]["spec"]
    (sidecar,) = [c for c in pod["containers"] if c["name"] == "exporter"]
    kubernetes_env = {e["name"]: e.get("value") for e in sidecar["env"]}
    assert exporter["image"] == sidecar["image"]
    assert exporter["environment"]["REDIS_USER"] == kubernetes_env["REDIS_USER"] == "exporter"
    in_pod = kubernetes_env["REDIS_ADDR"]
    assert exporter["environment"]["REDIS_ADDR"] == in_pod.replace("127.0.0.1", "kga-single-redis")
    assert exporter["expose"] == [str(p["containerPort"]) for p in sidecar["ports"]]
    (secret,) = exporter["secrets"]
    assert secret["target"] == exporter["environment"]["REDIS_PASSWORD_FILE"]
    assert "kga-redis/exporter-password.json" in single.secret_files
    assert exporter["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "healthcheck" not in exporter, "FROM scratch: nothing in the image can run a check"


def test_the_scrape_targets_share_an_internal_metrics_network(single: ComposeProject) -> None:
    """Prometheus's declared targets (the flows from the scraper) and nothing else: the exporter, not Redis."""
    compose = project("single")
    assert compose["networks"]["metrics"] == {"internal": True}
    members = sorted(n for n, s in compose["services"].items() if "metrics" in (s.get("networks") or {}))
    assert members == ["indexer", "query", "redis-exporter"]
    scraped = {
        f.destination.component  # type: ignore[union-attr]
        for f in single.stack.network.props.flows
        if "Prometheus scrapes" in f.purpose
    }
    assert scraped == {"redis", "query", "indexer"}


def test_start_order_waits_for_healthy_stores() -> None:
    services = project("single")["services"]
    assert services["query"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["query"]["depends_on"]["chroma"]["condition"] == "service_healthy"
    assert services["redis"]["depends_on"]["volumes"]["condition"] == "service_completed_successfully"
    assert set(services["edge"]["depends_on"]) == {"auth", "indexer", "query", "web"}


def test_the_edge_routes_checks_keys_and_limits_like_the_kubernetes_edge() -> None:
    conf = (ROOT / "dist" / "single" / "compose" / "config" / "edge" / "nginx.conf").read_text()
    for path in INDEXER_PATHS:
        assert f"location {path} {{" in conf
    assert f"set $kga_verifier auth:{AUTH_PORT};" in conf
    assert f"set $kga_upstream auth:{DENY_PORT};" in conf, "blocked paths go to the deny port"
    assert "auth_request /_verify;" in conf
    assert 'proxy_set_header X-API-Key "";' in conf and 'proxy_set_header Authorization "";' in conf
    assert "limit_req_zone $binary_remote_addr zone=api:10m rate=5r/s;" in conf
    assert 'add_header Strict-Transport-Security "max-age=31536000; includeSubDomains" always;' in conf
    assert "ssl_certificate /run/secrets/tls.crt;" in conf
    assert "return 301 https://kga.acme.example.com$request_uri;" in conf


def test_crontab_runs_the_backups_and_reindex_on_the_kubernetes_schedule(single: ComposeProject) -> None:
    crontab = (ROOT / "dist" / "single" / "compose" / "crontab").read_text()
    for kind, name in (("CronJob", "backup-redis"), ("CronJob", "backup-chroma"), ("CronJob", "reindex")):
        schedule = single.objects[f"{kind}/kga-single-{name}"]["spec"]["schedule"]
        assert f"{schedule} docker compose --project-directory /srv/kga/single run --rm --no-deps {name} " in crontab
    backup = project("single")["services"]["backup-redis"]
    assert backup["environment"]["KGB_KEEP_DAILY"] == "7" and backup["environment"]["KGB_KEEP_WEEKLY"] == "4"


# ---------------------------------------------------------------- the gate reads the rendered file


def test_the_gate_passes_every_rendered_project() -> None:
    for env in COMPOSE_ENVS:
        assert ComposeGate(rendered(env)).problems() == [], env


def _mutated(change: Any) -> list[str]:
    files = rendered("single")
    compose = yaml.safe_load(files["compose.yaml"])
    change(compose)
    files["compose.yaml"] = yaml.safe_dump(compose)
    return ComposeGate(files).problems()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        pytest.param(
            lambda c: c["secrets"].pop("kga-redis-url"),
            "services.query.secrets[",
            id="undeclared-secret",
        ),
        pytest.param(lambda c: c["networks"].pop("chroma"), "services.chroma.networks.chroma: not declared", id="net"),
        pytest.param(
            lambda c: c["volumes"].pop("redis-data"), "named volume 'redis-data' is not declared", id="volume"
        ),
        pytest.param(
            lambda c: c["services"]["redis"].pop("healthcheck"),
            "depends_on.redis: service_healthy, but redis has no healthcheck",
            id="healthy-without-check",
        ),
        pytest.param(
            lambda c: c["services"]["query"].__setitem__("expose", ["8000"]),
            "services.query.healthcheck: probes port 8001, which the service does not expose",
            id="health-port",
        ),
        pytest.param(
            lambda c: c["services"]["query"]["networks"].pop("chroma"),
            "services.query.environment.CHROMA_HOST: kga-single-chroma:8000: query and chroma share no network",
            id="unreachable-store",
        ),
        pytest.param(
            lambda c: c["services"]["chroma"].__setitem__("expose", ["8001"]),
            "chroma does not expose 8000",
            id="wrong-port",
        ),
        pytest.param(
            lambda c: c["services"]["redis"].__setitem__("ports", ["6379:6379"]),
            "services.redis.ports: only the edge publishes ports",
            id="published-store",
        ),
        pytest.param(lambda c: c["services"]["web"].__setitem__("user", "0:0"), "services.web.user: 0:0", id="root"),
        pytest.param(
            lambda c: c["networks"].__setitem__("redis", {}),
            "networks.redis: a service's own network must be internal",
            id="open-store-network",
        ),
        pytest.param(
            lambda c: c["secrets"]["kga-redis-url"].__setitem__("file", "./redis-url"),
            "secrets.kga-redis-url: './redis-url' lies in the project",
            id="secret-in-dist",
        ),
        pytest.param(
            lambda c: c["services"]["edge"]["networks"].pop("auth"),
            "services.edge: ./config/edge/nginx.conf: upstream auth:8080: edge and auth share no network",
            id="edge-upstream",
        ),
    ],
)
def test_the_gate_finds_each_broken_reference(change: Any, expected: str) -> None:
    problems = _mutated(change)
    assert any(expected in p for p in problems), problems


# ---------------------------------------------------------------- bad input


def test_a_compose_environment_needs_no_kubernetes_fields() -> None:
    env = parse_environment(env_data("single"), source="environments/single.yaml")
    assert env.namespace is None and env.cluster is None and env.quota is None


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        pytest.param(
            {"query__autoscaling__maxReplicas": 4},
            "environments/single.yaml: query.autoscaling: Compose does not autoscale",
            id="autoscaling",
        ),
        pytest.param(
            {"edge": {"controller": "ingress-nginx"}},
            "environments/single.yaml: edge.controller: the Compose edge is nginx of its own",
            id="edge-controller",
        ),
        pytest.param(
            {"backup__credentialsSecret": None},
            "environments/single.yaml: backup.credentialsSecret: is null, but the compose target has no workload",
            id="identity",
        ),
        pytest.param(
            {"namespace": "kga-single"},
            "environments/single.yaml: namespace: Kubernetes only, and targets (compose) has no kubernetes",
            id="k8s-field",
        ),
    ],
)
def test_bad_compose_input_is_refused_with_file_field_reason(
    tmp_path: Path, changes: dict[str, object], expected: str
) -> None:
    folder = tmp_path / "environments"
    folder.mkdir()
    (folder / "releases").mkdir()
    (folder / "releases" / "images.yaml").write_text((ENVIRONMENTS / "releases" / "images.yaml").read_text())
    (folder / "single.yaml").write_text(yaml.safe_dump(env_data("single", **changes)))
    outdir = tmp_path / "dist"
    result = subprocess.run(
        [
            str(ROOT / ".venv" / "bin" / "python"),
            "-O",
            str(ROOT / "app.py"),
            "--environments",
            str(folder),
            "--outdir",
            str(outdir),
            "--docs",
            str(tmp_path / "docs"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    shown = result.stdout + result.stderr
    assert expected.removeprefix("environments/") in shown, shown
    assert shown.startswith("error: ") and "single.yaml: " in shown, shown
    assert not outdir.exists(), "nothing written"


def test_compose_refusals_are_raised_before_any_rendering() -> None:
    data = env_data("single", query__autoscaling__maxReplicas=3)
    env = parse_environment(data, source="environments/single.yaml")
    with pytest.raises(ComposeError) as caught:
        ComposeProject(env)
    assert caught.value.problems[0].startswith("query.autoscaling:")


def test_a_compose_environment_without_a_domain_is_refused() -> None:
    with pytest.raises(EnvironmentFileError) as caught:
        parse_environment(env_data("single", domain=DELETE), source="environments/single.yaml")
    assert caught.value.problems[0].startswith("environments/single.yaml: domain: required field is missing")


# ---------------------------------------------------------------- the real Compose binary


def compose_binary() -> Path:
    if not os.access(COMPOSE_PLUGIN, os.X_OK):
        missing(f"{COMPOSE_PLUGIN.relative_to(ROOT)} missing: run scripts/setup.sh test (builds Docker Compose)")
    return COMPOSE_PLUGIN


@pytest.mark.parametrize("env", COMPOSE_ENVS)
def test_docker_compose_config_accepts_every_rendered_file(env: str, tmp_path: Path) -> None:
    compose = compose_binary()
    folder = ROOT / "dist" / env / "compose"
    result = subprocess.run(
        [
            str(compose),
            "--project-directory",
            str(folder),
            "-f",
            str(folder / "compose.yaml"),
            "--profile",
            "backup",
            "--profile",
            "restore",
            "--profile",
            "jobs",
            "config",
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "KGA_SECRETS": str(tmp_path), "DOCKER_CONFIG": str(tmp_path / "docker")},
    )
    assert result.returncode == 0, result.stderr
    assert "warn" not in result.stderr.lower(), result.stderr


def test_docker_compose_config_refuses_a_broken_file(tmp_path: Path) -> None:
    """The check can fail: an unknown key and an undeclared secret are refused by the real parser."""
    compose = compose_binary()
    data = copy.deepcopy(project("single"))
    data["services"]["query"]["restart_policy"] = "always"
    broken = tmp_path / "compose.yaml"
    broken.write_text(yaml.safe_dump(data))
    (tmp_path / "config").symlink_to(ROOT / "dist" / "single" / "compose" / "config")
    result = subprocess.run(
        [str(compose), "--project-directory", str(tmp_path), "-f", str(broken), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "KGA_SECRETS": str(tmp_path), "DOCKER_CONFIG": str(tmp_path / "docker")},
    )
    assert result.returncode != 0
    assert "restart_policy" in result.stderr
