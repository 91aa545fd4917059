"""Each component starts with its rendered configuration, against the real software (issue 9).

Everything started here is read from the committed ``dist/<env>/`` (what Argo CD
applies), for every environment where the component exists, through
tests/rendered.py: ConfigMaps and Secrets become files (Secrets with made-up
values), mount paths and ports are remapped to loopback, and the real binaries
run with the containers' rendered commands and environments:

* redis-server with our redis.conf and the ACL file the init container renders,
  then redis_exporter (Debian ``prometheus-redis-exporter``) with the sidecar's
  settings: the ServiceMonitor's scrape shows ``redis_up 1``;
* the blackbox exporter (Debian ``prometheus-blackbox-exporter``) with the modules
  the platform layer installs (the `config` of its blackbox release in
  dist/argocd/<cluster>/), running every Probe against
  a local ``/health`` that answers 200, then 503;
* kgbackup with each backup CronJob's args, env and mounted Secrets, against the
  Redis and Chroma pods of dist/ (Chroma's StatefulSet through tests/rendered.py),
  into moto standing in for the rendered bucket;
* the alertmanager.yml that prometheus-operator builds from our AlertmanagerConfig,
  checked by ``amtool check-config`` and routed by ``amtool config routes test``.

A missing binary skips locally and fails in CI (tests/tools.py).
"""

from __future__ import annotations

import http.server
import json
import os
import re
import socket
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from backup_servers import IndexerApi, s3_endpoint, wait_for  # noqa: F401 (a fixture)
from conftest import ENV_DIRS
from rendered import (
    LocalPod,
    Obj,
    envs_with,
    http_get,
    made_up,
    objects,
    of_kind,
    run_chroma,
    run_exporter,
    run_redis,
    wait_until,
)
from tools import ROOT, free_port, require_tool, stop

BLACKBOX_VALUES = sorted((ROOT / "dist" / "argocd").glob("*/application-*-blackbox-exporter.yaml"))
"""The platform layer's blackbox release of every cluster (kgstack.cluster_platform): its values' config."""


def _blackbox_config() -> dict[str, Any]:
    """The one exporter config every cluster's platform installs."""
    configs = [
        yaml.safe_load(p.read_text())["spec"]["source"]["helm"]["valuesObject"]["config"] for p in BLACKBOX_VALUES
    ]
    assert configs and all(c == configs[0] for c in configs), BLACKBOX_VALUES
    return configs[0]  # type: ignore[no-any-return]


SECRETS_DOC = ROOT / "docs" / "secrets.md"


# ---------------------------------------------------------------- redis + exporter


def _scrape(env: str, component: str) -> tuple[str, str]:
    """``(path, container port name)`` Prometheus scrapes, followed from ServiceMonitor through Service."""
    (monitor,) = [
        m
        for m in of_kind(env, "ServiceMonitor")
        if m["spec"]["selector"]["matchLabels"].get("app.kubernetes.io/component") == component
    ]
    (endpoint,) = monitor["spec"]["endpoints"]
    (service,) = [
        s for s in of_kind(env, "Service") if s["spec"].get("selector") == monitor["spec"]["selector"]["matchLabels"]
    ]
    (port,) = [p for p in service["spec"]["ports"] if p["name"] == endpoint["port"]]
    return endpoint.get("path", "/metrics"), str(port.get("targetPort", port["name"]))


@pytest.mark.parametrize("env", envs_with("redis"))
def test_redis_pod_becomes_ready_and_its_exporter_reports_redis_up(env: str, tmp_path: Path) -> None:
    """Issue 9 defect 1: a plain file in REDIS_PASSWORD_FILE made redis_exporter exit."""
    redis_cli = require_tool("redis-cli", hint="apt-get install redis-server")
    with run_redis(env, tmp_path) as redis_pod:
        # The server's readiness probe as rendered, pointed at the loopback port.
        probe = redis_pod.redis["readinessProbe"]["exec"]["command"]
        command = redis_pod.pod.local(redis_pod.redis, probe[-1])
        command = command.replace("redis-cli", f"{redis_cli} -p {redis_pod.port}")
        env_vars = {k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"}
        assert subprocess.run([*probe[:-1], command], env=env_vars, timeout=20).returncode == 0

        with run_exporter(redis_pod) as exporter:  # up once its rendered readiness probe answers 200
            path, port_name = _scrape(env, "redis")
            status, body = http_get(f"http://127.0.0.1:{redis_pod.pod.port(exporter, port_name)}{path}")
            assert status == 200
            assert re.search(r"^redis_up 1$", body, re.M), [ln for ln in body.splitlines() if "redis_up" in ln]
            # Authenticated as the exporter user, reading the server that loaded our redis.conf.
            (config_map,) = [v["configMap"]["name"] for v in redis_pod.pod.spec["volumes"] if "configMap" in v]
            rendered = objects(env)[f"ConfigMap/{config_map}"]["data"]["redis.conf"]
            maxmemory = re.search(r"^maxmemory (\d+)$", rendered, re.M)
            exported = re.search(r"^redis_memory_max_bytes (\S+)$", body, re.M)
            assert maxmemory and exported and float(exported[1]) == int(maxmemory[1])


def _service_port(env: str, host: str, port: int) -> None:
    """``host:port`` names a Service of dist/<env> and one of its ports (the test then dials loopback)."""
    service = objects(env)[f"Service/{host}"]
    assert port in [p["port"] for p in service["spec"]["ports"]], f"{host} has no port {port}"


def _run_backup_cronjob(
    env: str, store: str, root: Path, s3_url: str, to_loopback: Callable[[dict[str, str]], None]
) -> dict[str, Any]:
    """kgbackup with the CronJob's own args, env and mounted Secrets, into moto with the rendered bucket.

    ``to_loopback`` rewrites the store's address in the rendered env, after checking it names the
    store's Service; it is the only change to what dist/ says.
    """
    import boto3

    cron = objects(env)[f"CronJob/kga-{env}-backup-{store}"]
    job = {"metadata": cron["metadata"], "spec": cron["spec"]["jobTemplate"]["spec"]}
    credentials = "[default]\naws_access_key_id = testing\naws_secret_access_key = testing\n"
    pod = LocalPod(env, job, root, secrets={"kga-backup": {"credentials": credentials}})
    (container,) = pod.spec["containers"]
    rendered = pod.env(container)
    to_loopback(rendered)
    rendered["KGB_S3_ENDPOINT_URL"] = s3_url
    if "AWS_SHARED_CREDENTIALS_FILE" not in rendered:  # workload identity: the role's credentials
        rendered |= {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    target = urllib.parse.urlsplit(rendered["KGB_TARGET"])
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    s3.create_bucket(Bucket=target.hostname)
    run = subprocess.run(
        [sys.executable, "-m", "kgbackup", *pod.command(container)],
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT / "docker" / "backup"), **rendered},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    stored = s3.list_objects_v2(Bucket=target.hostname, Prefix=f"{target.path.strip('/')}/{store}/")
    manifest = max(o["Key"] for o in stored.get("Contents", []) if o["Key"].endswith("/manifest.json"))
    loaded: dict[str, Any] = json.loads(s3.get_object(Bucket=target.hostname, Key=manifest)["Body"].read())
    return loaded


@pytest.mark.parametrize("env", envs_with("redis"))
def test_the_redis_backup_cronjob_as_rendered_backs_up_the_redis_pod(
    env: str,
    tmp_path: Path,
    s3_endpoint: str,  # noqa: F811 (the fixture imported above)
) -> None:
    """kgbackup with the CronJob's own args, env and mounted Secrets, against the Redis pod of dist/."""
    with run_redis(env, tmp_path / "redis") as redis_pod:
        redis_pod.client("app").set("kept", "across the backup")

        def to_loopback(rendered: dict[str, str]) -> None:
            url = urllib.parse.urlsplit(rendered["KGB_REDIS_URL"])
            _service_port(env, str(url.hostname), int(url.port or 0))
            rendered["KGB_REDIS_URL"] = url._replace(netloc=f"{url.username}@127.0.0.1:{redis_pod.port}").geturl()

        _run_backup_cronjob(env, "redis", tmp_path / "job", s3_endpoint, to_loopback)


@pytest.mark.parametrize("env", envs_with("chroma"))
def test_the_chroma_backup_cronjob_as_rendered_backs_up_the_chroma_pod(
    env: str,
    tmp_path: Path,
    s3_endpoint: str,  # noqa: F811 (the fixture imported above)
) -> None:
    """kgbackup with the CronJob's own args, env and mounted Secrets, against the Chroma pod of dist/."""
    import chromadb
    from chromadb.config import Settings

    with run_chroma(env, tmp_path / "chroma") as chroma:
        client = chromadb.HttpClient(host="127.0.0.1", port=chroma.port, settings=Settings(anonymized_telemetry=False))
        client.create_collection("kept").add(ids=["a"], embeddings=[[0.1, 0.2, 0.3]], documents=["across the backup"])

        # The indexer's API: the backup records its commit tracker (and waits while it indexes).
        tracker = {"acme/shop#main": {"repository": "acme/shop", "branch": "main", "last_commit": "abc123"}}
        indexer = IndexerApi(lambda: tracker)

        def to_loopback(rendered: dict[str, str]) -> None:
            _service_port(env, rendered["CHROMA_HOST"], int(rendered["CHROMA_PORT"]))
            rendered |= {"CHROMA_HOST": "127.0.0.1", "CHROMA_PORT": str(chroma.port)}
            url = urllib.parse.urlsplit(rendered["KGB_INDEXER_URL"])
            _service_port(env, str(url.hostname), int(url.port or 0))
            rendered["KGB_INDEXER_URL"] = indexer.url

        try:
            manifest = _run_backup_cronjob(env, "chroma", tmp_path / "job", s3_endpoint, to_loopback)
        finally:
            indexer.close()
        assert manifest["source"]["indexed_commits"] == tracker


# ---------------------------------------------------------------- blackbox exporter


class Health:
    """A local HTTP server answering every path with ``status`` (the agent's /health stand-in)."""

    def __init__(self) -> None:
        self.status = 200
        self.paths: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            # As uvicorn answers; http_2xx accepts only HTTP/1.1 and HTTP/2.0 responses.
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                outer.paths.append(self.path)
                body = b'{"status":"healthy"}' if outer.status == 200 else b'{"status":"unhealthy"}'
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def blackbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, Any]]]:
    """The Debian blackbox exporter with the documented modules; yields (base URL, modules)."""
    binary = require_tool("prometheus-blackbox-exporter", hint="apt-get install prometheus-blackbox-exporter")
    config = _blackbox_config()
    path = tmp_path_factory.mktemp("blackbox") / "blackbox.yml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    check = subprocess.run([binary, f"--config.file={path}", "--config.check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    port = free_port()
    proc = subprocess.Popen(
        [binary, f"--config.file={path}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: http_get(f"{url}/-/healthy")[0] == 200, "blackbox exporter", proc, 30)
        yield url, config["modules"]
    finally:
        stop(proc)


PROBES = [(env, p["metadata"]["name"]) for env in ENV_DIRS for p in of_kind(env, "Probe")]


def _probe_success(blackbox_url: str, prober_path: str, module: str, target: str) -> float:
    query = urllib.parse.urlencode({"module": module, "target": target})
    status, body = http_get(f"{blackbox_url}{prober_path}?{query}", timeout=15)
    assert status == 200, body
    match = re.search(r"^probe_success (\S+)$", body, re.M)
    assert match, body
    return float(match.group(1))


@pytest.mark.parametrize(("env", "name"), PROBES, ids=[f"{e}-{n}" for e, n in PROBES])
def test_probe_runs_on_the_documented_blackbox_module(
    env: str, name: str, blackbox: tuple[str, dict[str, Any]]
) -> None:
    url, modules = blackbox
    spec = objects(env)[f"Probe/{name}"]["spec"]
    module, prober_path = spec["module"], spec["prober"].get("path", "/probe")
    assert module in modules, (
        f"Probe {name} uses module {module!r}, which the platform's blackbox release does not define"
    )
    for target in spec["targets"]["staticConfig"]["static"]:
        if "://" in target:
            # The target's scheme and path as rendered; host and port become the local stand-in.
            parts = urllib.parse.urlsplit(target)
            health = Health()
            try:
                local = urllib.parse.urlunsplit(parts._replace(netloc=f"127.0.0.1:{health.port}"))
                assert _probe_success(url, prober_path, module, local) == 1
                assert health.paths[-1] == parts.path
                health.status = 503  # the agent's /health when its settings do not load
                assert _probe_success(url, prober_path, module, local) == 0
            finally:
                health.close()
        else:
            with socket.create_server(("127.0.0.1", 0)) as listener:
                local = f"127.0.0.1:{listener.getsockname()[1]}"
                assert _probe_success(url, prober_path, module, local) == 1
            assert _probe_success(url, prober_path, module, local) == 0  # nothing listens any more


# ---------------------------------------------------------------- alertmanager

# AlertmanagerConfig (monitoring.coreos.com/v1alpha1) fields -> alertmanager.yml, as
# prometheus-operator's pkg/alertmanager/amcfg.go converts them. A field not listed
# fails the test, so a new one is added here consciously. SECRET: a SecretKeySelector
# the operator resolves to the Secret's value.
SECRET = object()
RECEIVER_FIELDS: dict[str, tuple[str, dict[str, Any]]] = {
    "pagerdutyConfigs": (
        "pagerduty_configs",
        {
            "routingKey": ("routing_key", SECRET),
            "serviceKey": ("service_key", SECRET),
            "url": "url",
            "client": "client",
            "clientURL": "client_url",
            "description": "description",
            "severity": "severity",
            "class": "class",
            "group": "group",
            "component": "component",
            "sendResolved": "send_resolved",
        },
    ),
    "slackConfigs": (
        "slack_configs",
        {
            "apiURL": ("api_url", SECRET),
            "channel": "channel",
            "username": "username",
            "color": "color",
            "title": "title",
            "titleLink": "title_link",
            "pretext": "pretext",
            "text": "text",
            "footer": "footer",
            "fallback": "fallback",
            "iconEmoji": "icon_emoji",
            "iconURL": "icon_url",
            "sendResolved": "send_resolved",
        },
    ),
    "webhookConfigs": (
        "webhook_configs",
        {"url": "url", "urlSecret": ("url", SECRET), "maxAlerts": "max_alerts", "sendResolved": "send_resolved"},
    ),
}
ROUTE_FIELDS = {"groupBy": "group_by", "groupWait": "group_wait", "groupInterval": "group_interval"}
ROUTE_FIELDS |= {"repeatInterval": "repeat_interval"}


def _matcher(m: Obj) -> str:
    # monitoringv1alpha1.Matcher.String(): name, operator, Go-quoted value.
    op = m.get("matchType") or ("=~" if m.get("regex") else "=")
    return f"{m['name']}{op}{json.dumps(m['value'])}"


def secret_value(secret: str, key: str) -> str:
    """Made-up Secret data; URL-valued keys get a URL (amtool validates them)."""
    return f"https://hooks.example.com/{secret}/{key}" if "url" in key.lower() else made_up(secret, key)


def _receiver(receiver: Obj, prefix: str) -> Obj:
    out: Obj = {"name": prefix + receiver["name"]}
    for field, configs in receiver.items():
        if field == "name":
            continue
        if field not in RECEIVER_FIELDS:
            raise NotImplementedError(f"receiver field {field}: add its conversion to RECEIVER_FIELDS")
        am_field, mapping = RECEIVER_FIELDS[field]
        converted = []
        for config in configs:
            item: Obj = {}
            for key, value in config.items():
                if key not in mapping:
                    raise NotImplementedError(f"{field}.{key}: add its conversion to RECEIVER_FIELDS")
                target = mapping[key]
                if isinstance(target, tuple):
                    item[target[0]] = secret_value(value["name"], value["key"])
                else:
                    item[target] = value
            converted.append(item)
        out[am_field] = converted
    return out


def _route(route: Obj, prefix: str, namespace: str | None) -> Obj:
    out: Obj = {}
    matchers = [_matcher(m) for m in route.get("matchers", [])]
    if namespace is not None:
        # The operator confines each AlertmanagerConfig to alerts of its namespace and
        # lets evaluation continue to the next one.
        matchers.insert(0, f'namespace="{namespace}"')
    for key, value in route.items():
        if key == "receiver":
            out["receiver"] = prefix + value
        elif key in ROUTE_FIELDS:
            out[ROUTE_FIELDS[key]] = value
        elif key == "continue":
            out["continue"] = value
        elif key not in ("matchers", "routes"):
            raise NotImplementedError(f"route field {key}: add its conversion")
    if matchers:
        out["matchers"] = matchers
    if namespace is not None:
        out["continue"] = True
    if route.get("routes"):
        out["routes"] = [_route(child, prefix, None) for child in route["routes"]]
    return out


def _inhibit_rule(rule: Obj, namespace: str) -> Obj:
    scope = f'namespace="{namespace}"'
    return {
        "source_matchers": [_matcher(m) for m in rule.get("sourceMatch", [])] + [scope],
        "target_matchers": [_matcher(m) for m in rule.get("targetMatch", [])] + [scope],
        **({"equal": rule["equal"]} if rule.get("equal") else {}),
    }


def alertmanager_config(configs: list[Obj]) -> Obj:
    """The alertmanager.yml the operator generates from ``configs`` on kube-prometheus-stack's base config."""
    out: Obj = {
        "global": {"resolve_timeout": "5m"},
        "route": {"receiver": "null", "group_by": ["namespace"], "routes": []},
        "receivers": [{"name": "null"}],
        "inhibit_rules": [],
    }
    for amc in configs:
        namespace, name = amc["metadata"]["namespace"], amc["metadata"]["name"]
        prefix = f"{namespace}/{name}/"
        spec = amc["spec"]
        out["route"]["routes"].append(_route(spec["route"], prefix, namespace))
        out["receivers"] += [_receiver(r, prefix) for r in spec.get("receivers", [])]
        out["inhibit_rules"] += [_inhibit_rule(r, namespace) for r in spec.get("inhibitRules", [])]
    return out


ALERTING_ENVS = [env for env in ENV_DIRS if of_kind(env, "AlertmanagerConfig")]


def _amtool() -> str:
    return require_tool("amtool", hint="apt-get install prometheus-alertmanager")


def _routes(amtool: str, config: Path, labels: dict[str, str]) -> set[str]:
    argv = [amtool, "config", "routes", "test", f"--config.file={config}", *(f"{k}={v}" for k, v in labels.items())]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stdout + res.stderr
    return set(res.stdout.strip().split(","))


@pytest.mark.parametrize("env", ALERTING_ENVS)
def test_alertmanager_accepts_and_routes_the_configuration(env: str, tmp_path: Path) -> None:
    amtool = _amtool()
    configs = of_kind(env, "AlertmanagerConfig")
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(alertmanager_config(configs), sort_keys=False), encoding="utf-8")
    check = subprocess.run([amtool, "check-config", str(path)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr

    # docs/observability.md: critical pages and continues, so critical and warning reach chat.
    ((namespace, prefix, spec),) = [
        (c["metadata"]["namespace"], f"{c['metadata']['namespace']}/{c['metadata']['name']}/", c["spec"])
        for c in configs
    ]
    paging = {prefix + r["name"] for r in spec["receivers"] if "pagerdutyConfigs" in r}
    chat = {prefix + r["name"] for r in spec["receivers"] if "slackConfigs" in r}
    assert chat, "no chat receiver"
    alert = {"alertname": "KgaTest", "namespace": namespace}
    assert _routes(amtool, path, {**alert, "severity": "critical"}) == paging | chat
    assert _routes(amtool, path, {**alert, "severity": "warning"}) == chat
    assert _routes(amtool, path, {**alert, "namespace": "someone-else", "severity": "critical"}) == {"null"}


def _secret_refs(node: Any) -> set[tuple[str, str]]:
    """Every SecretKeySelector (``{name, key}``) under ``node``."""
    if isinstance(node, dict):
        if set(node) - {"optional"} == {"name", "key"}:
            return {(node["name"], node["key"])}
        return set().union(*(_secret_refs(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_secret_refs(v) for v in node))
    return set()


def produced_by_external_secrets(env: str) -> dict[str, set[str] | None]:
    """``{Secret: keys}`` the ExternalSecrets in dist/<env> produce (``None``: any key, from dataFrom)."""
    out: dict[str, set[str] | None] = {}
    for es in of_kind(env, "ExternalSecret"):
        spec = es["spec"]
        name = spec.get("target", {}).get("name", es["metadata"]["name"])
        keys = {d["secretKey"] for d in spec.get("data", [])}
        keys |= set(spec.get("target", {}).get("template", {}).get("data", {}))
        out[name] = None if spec.get("dataFrom") else keys
    return out


def documented_prerequisites() -> dict[str, set[str]]:
    """``{Secret: keys}`` from the table in docs/secrets.md (a backticked name, then its backticked keys)."""
    out: dict[str, set[str]] = {}
    for line in SECRETS_DOC.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and (name := re.fullmatch(r"`([a-z0-9.-]+)`", cells[0])):
            out.setdefault(name.group(1), set()).update(re.findall(r"`([^`]+)`", cells[1]))
    return out


@pytest.mark.parametrize("env", ALERTING_ENVS)
def test_every_alerting_secret_is_produced_or_documented(env: str) -> None:
    """Issue 9 defect 2: the receivers read Secret kga-alerting, which nothing produced."""
    produced, documented = produced_by_external_secrets(env), documented_prerequisites()
    missing = []
    for amc in of_kind(env, "AlertmanagerConfig"):
        for secret, key in sorted(_secret_refs(amc["spec"])):
            by_external_secret = secret in produced and (produced[secret] is None or key in produced[secret])
            if not by_external_secret and key not in documented.get(secret, set()):
                missing.append(f"AlertmanagerConfig/{amc['metadata']['name']}: Secret {secret} key {key}")
    assert not missing, "neither produced by an ExternalSecret nor in docs/secrets.md:\n" + "\n".join(missing)


def _rule_labels(env: str) -> dict[str, dict[str, str]]:
    """``{alert: labels}`` of the PrometheusRules in dist/<env>, with their own namespace label."""
    out = {}
    for rule_object in of_kind(env, "PrometheusRule"):
        for group in rule_object["spec"]["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    out[rule["alert"]] = {"alertname": rule["alert"], **rule.get("labels", {})}
    return out


@pytest.mark.parametrize("env", ALERTING_ENVS)
def test_a_critical_burn_rate_inhibits_the_warning_of_its_slo_on_a_real_alertmanager(env: str, tmp_path: Path) -> None:
    """docs/observability.md: the critical burn-rate alert silences the warning of the same SLO, not of others."""
    binary = require_tool("prometheus-alertmanager", hint="apt-get install prometheus-alertmanager")
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(alertmanager_config(of_kind(env, "AlertmanagerConfig"))), encoding="utf-8")
    port = free_port()
    argv = [binary, f"--config.file={path}", f"--storage.path={tmp_path / 'data'}"]
    argv += [f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/api/v2"
        wait_for(lambda: http_get(f"{url}/status")[0] == 200, "alertmanager", proc, 30)
        rules = _rule_labels(env)
        sent = ["KgaAvailabilityBurnRateCritical", "KgaAvailabilityBurnRateWarning", "KgaLatencyBurnRateWarning"]
        body = json.dumps([{"labels": rules[name]} for name in sent]).encode()
        request = urllib.request.Request(f"{url}/alerts", body, {"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200

        def states() -> dict[str, str]:
            alerts = json.loads(http_get(f"{url}/alerts")[1])
            return {a["labels"]["alertname"]: a["status"]["state"] for a in alerts}

        expected = {sent[0]: "active", sent[1]: "suppressed", sent[2]: "active"}
        wait_until(lambda: states() == expected, f"alert states {expected} (now {states()})")
    finally:
        stop(proc)
