"""AgentTier: probes, rollout safety, security, state, autoscaling and the PDB invariant."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import cdk8s
import pytest
from conftest import ROOT, build, env_data
from rendered import AgentPod, run_agent, run_chroma, run_redis
from rendered import objects as rendered_objects
from tools import missing

from kgstack import AgentTier, AgentTierProps, PersistentState
from kgstack.agent_config import AgentConfig, AgentConfigProps
from kgstack.agent_tier import prometheus_adapter_rules
from kgstack.connections import Endpoint
from kgstack.environment import AgentSettings, EnvironmentFileError, Repository, parse_environment
from kgstack.model import Autoscaling, Disruption, ImageRef, Resources
from kgstack.naming import Identity
from kgstack.publish import SynthError, synth
from kgstack.validation import collect_errors

Manifests = dict[str, dict[str, dict[str, Any]]]
RESOURCES = Resources.model_validate(
    {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}
)


def pod(manifests: Manifests, env: str, tier: str) -> dict[str, Any]:
    return manifests[env][f"Deployment/kga-{env}-{tier}"]["spec"]["template"]  # type: ignore[no-any-return]


def runtime_port(container: dict[str, Any], config: dict[str, str]) -> int:
    """The port the runtime layer listens on, as the pod's environment tells it (``KGA_RUNTIME_PORT``)."""
    env = {**config, **{e["name"]: e["value"] for e in container["env"] if "value" in e}}
    return int(env["KGA_RUNTIME_PORT"])


@pytest.mark.parametrize("env", ["dev", "staging", "prod"])
@pytest.mark.parametrize("tier", ["query", "indexer"])
def test_probes_ask_the_runtime_side_port(manifests: Manifests, env: str, tier: str) -> None:
    """Issue 16 defect 4: every probe asked the app's /health (or its TCP port) on the app's event loop, which
    synchronous work blocks for seconds (a query) or a whole run (indexing): liveness killed busy pods. The
    probes now ask the runtime's side server, on the port the runtime is told to listen on, never the app's."""
    (container,) = pod(manifests, env, tier)["spec"]["containers"]
    config = manifests[env][f"ConfigMap/kga-{env}-agent"]["data"]
    assert container["args"] == ["python", "-m", "kga_runtime"]  # the launcher that serves the side port
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    paths = {"startupProbe": "/livez", "livenessProbe": "/livez", "readinessProbe": "/readyz"}
    for probe, path in paths.items():
        get = container[probe]["httpGet"]
        assert get["path"] == path and "tcpSocket" not in container[probe]
        assert ports[get["port"]] == runtime_port(container, config) != ports["http"]
    # Alive but busy: /livez fails only after the stall limit; three misses 20 s apart come on top.
    live = container["livenessProbe"]
    assert live["periodSeconds"] * live["failureThreshold"] >= 60
    # The Service carries the side port too (the ServiceMonitor scrapes through it).
    service = manifests[env][f"Service/kga-{env}-{tier}"]["spec"]["ports"]
    assert runtime_port(container, config) in [p["port"] for p in service]
    assert "/api/v1/health" not in str(manifests[env])


def test_the_indexer_tolerates_a_whole_run_on_its_loop(manifests: Manifests, environments: dict) -> None:  # type: ignore[type-arg]
    """A workflow runs on the indexer's event loop until it ends: its stall and lag limits outlast the workflow
    timeout, so a running index is neither restarted nor taken out of its Service; the query tier keeps the
    environment's tight limits, so a blocked query pod leaves rotation."""
    for env, objects in manifests.items():
        timeout = environments[env].agent.workflow.timeout_seconds
        config = objects[f"ConfigMap/kga-{env}-agent"]["data"]
        (indexer,) = objects[f"Deployment/kga-{env}-indexer"]["spec"]["template"]["spec"]["containers"]
        own = {e["name"]: e["value"] for e in indexer["env"] if "value" in e}
        for key in ("KGA_LIVENESS_STALL_SECONDS", "KGA_READY_MAX_LOOP_LAG_SECONDS", "KGA_READY_HEALTH_MAX_AGE_SECONDS"):
            assert float(own[key]) > timeout, (env, key)
        (query,) = objects[f"Deployment/kga-{env}-query"]["spec"]["template"]["spec"]["containers"]
        assert not {e["name"] for e in query["env"]} & {"KGA_LIVENESS_STALL_SECONDS", "KGA_READY_MAX_LOOP_LAG_SECONDS"}
        assert float(config["KGA_READY_MAX_LOOP_LAG_SECONDS"]) <= 5


@pytest.mark.parametrize("tier", ["query", "indexer"])
def test_restricted_security_context(manifests: Manifests, tier: str) -> None:
    spec = pod(manifests, "prod", tier)["spec"]
    (container,) = spec["containers"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsUser"] >= 10000
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container["securityContext"]
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["runAsNonRoot"] is True


def test_query_rollouts_never_drop_below_desired(manifests: Manifests) -> None:
    strategy = manifests["prod"]["Deployment/kga-prod-query"]["spec"]["strategy"]
    assert strategy == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}


@pytest.mark.parametrize("env", ["dev", "staging", "prod"])
def test_indexer_recreates_and_is_never_pinned_to_its_old_node(manifests: Manifests, env: str) -> None:
    """Issue 9 defect 6: a surge pod with a required self-affinity followed the old pod onto a
    cordoned node during a drain. The single-replica indexer on a ReadWriteOnce volume recreates
    instead, and nothing ties a replacement to the node (or zone) of the old pod."""
    spec = manifests[env][f"Deployment/kga-{env}-indexer"]["spec"]
    assert spec["strategy"] == {"type": "Recreate"}
    affinity = spec["template"]["spec"].get("affinity", {})
    assert "podAffinity" not in affinity
    assert "nodeAffinity" not in affinity


def test_graceful_shutdown_covers_inflight_work(manifests: Manifests, environments: dict) -> None:  # type: ignore[type-arg]
    query = pod(manifests, "prod", "query")["spec"]
    indexer = pod(manifests, "prod", "indexer")["spec"]
    assert query["containers"][0]["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "10"]
    # The edge waits 180 s for an answer; preStop 10 s and a 10 s margin on top (agent_stack._query_grace).
    assert query["terminationGracePeriodSeconds"] == 180 + 10 + 10
    timeout = environments["prod"].agent.workflow.timeout_seconds
    assert indexer["terminationGracePeriodSeconds"] == timeout + 60


def test_indexer_keeps_state_on_a_pvc(manifests: Manifests) -> None:
    spec = pod(manifests, "prod", "indexer")["spec"]
    data = next(v for v in spec["volumes"] if v["name"] == "data")
    assert data["persistentVolumeClaim"] == {"claimName": "kga-prod-indexer"}
    pvc = manifests["prod"]["PersistentVolumeClaim/kga-prod-indexer"]
    assert pvc["spec"]["storageClassName"] == "gp3"
    assert pvc["spec"]["resources"]["requests"]["storage"] == "50Gi"
    # Issue 24: Delete=false alone protected the claim only when the Application is deleted; a prune (the claim
    # renamed or dropped from dist/) is governed by Prune=false.
    options = pvc["metadata"]["annotations"]["argocd.argoproj.io/sync-options"].split(",")
    assert sorted(o.strip() for o in options) == ["Delete=false", "Prune=false"]
    assert pvc["metadata"]["annotations"]["kustomize.toolkit.fluxcd.io/prune"] == "disabled"
    # Kept out of the zones of the other stateful components (docs/operations.md).
    (term,) = spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "topology.kubernetes.io/zone"
    assert manifests["prod"]["Deployment/kga-prod-indexer"]["spec"]["replicas"] == 1


def test_query_tier_runs_from_a_scratch_working_dir(manifests: Manifests) -> None:
    spec = pod(manifests, "prod", "query")["spec"]
    (container,) = spec["containers"]
    assert "command" not in container  # the image's entrypoint (tini) stays PID 1
    assert container["workingDir"] == "/data"
    data = next(v for v in spec["volumes"] if v["name"] == "data")
    # Logs and workflow states only: the vector store is the Chroma server, not chroma_db in the working dir.
    assert data["emptyDir"] == {"sizeLimit": "1Gi"}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/data/appSettings.json"]["subPath"] == "appSettings.json"
    assert set(mounts) == {"/data", "/data/appSettings.json", "/tmp"}


def test_hpa_scales_query_tier_only(manifests: Manifests) -> None:
    hpa = manifests["prod"]["HorizontalPodAutoscaler/kga-prod-query"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 10)
    assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300
    assert hpa["behavior"]["scaleDown"]["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 60}]
    # GitOps must not fight the HPA over the replica count.
    assert "replicas" not in manifests["prod"]["Deployment/kga-prod-query"]["spec"]
    assert "HorizontalPodAutoscaler/kga-prod-indexer" not in manifests["prod"]


def in_flight_metric(hpa: dict[str, Any]) -> dict[str, Any]:
    (pods,) = [m["pods"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    return pods  # type: ignore[no-any-return]


@pytest.mark.parametrize("env", ["dev", "staging", "prod"])
def test_hpa_scales_on_requests_waiting_on_the_llm(manifests: Manifests, environments: dict, env: str) -> None:  # type: ignore[type-arg]
    """Issue 16 defect 4: CPU alone stayed idle while pods waited on the LLM. The HPA also reads the runtime's
    in-flight gauge per pod (custom metrics API), with the environment's target, below the readiness cut-off."""
    objects = manifests[env]
    hpa = objects[f"HorizontalPodAutoscaler/kga-{env}-query"]
    pods = in_flight_metric(hpa)
    autoscaling, runtime = environments[env].query.autoscaling, environments[env].agent.runtime
    assert pods["target"] == {"type": "AverageValue", "averageValue": autoscaling.target_in_flight}
    assert pods["target"]["averageValue"] < int(objects[f"ConfigMap/kga-{env}-agent"]["data"]["KGA_MAX_IN_FLIGHT"])
    assert runtime.max_in_flight == int(objects[f"ConfigMap/kga-{env}-agent"]["data"]["KGA_MAX_IN_FLIGHT"])
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Resource"] == ["cpu"]
    # prometheus-adapter serves that metric from the scraped series, per pod and namespace.
    (rule,) = prometheus_adapter_rules()
    assert rule["seriesQuery"].startswith(pods["metric"]["name"] + "{") and rule["name"]["as"] == pods["metric"]["name"]
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}


@pytest.mark.parametrize("env", ["dev", "staging", "prod"])
def test_prometheus_scrapes_the_runtime_port_of_both_tiers(manifests: Manifests, env: str) -> None:
    """The series the HPA reads exist only if Prometheus scrapes each query pod's side port: the ServiceMonitor
    selects the tier's Service, names its runtime port, and the policies let Prometheus in (the gate)."""
    objects = manifests[env]
    config = objects[f"ConfigMap/kga-{env}-agent"]["data"]
    for tier in ("query", "indexer"):
        monitor = objects[f"ServiceMonitor/kga-{env}-{tier}"]["spec"]
        (endpoint,) = monitor["endpoints"]
        assert endpoint["path"] == "/metrics"
        service = objects[f"Service/kga-{env}-{tier}"]
        assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
        (port,) = [p for p in service["spec"]["ports"] if p["name"] == endpoint["port"]]
        (container,) = objects[f"Deployment/kga-{env}-{tier}"]["spec"]["template"]["spec"]["containers"]
        assert port["port"] == runtime_port(container, config)
        ingress = objects[f"NetworkPolicy/kga-{env}-{tier}"]["spec"]["ingress"]
        assert any(
            {"port": port["port"], "protocol": "TCP"} in rule["ports"]
            and any(
                peer.get("podSelector", {}).get("matchLabels") == {"app.kubernetes.io/name": "prometheus"}
                for peer in rule["from"]
            )
            for rule in ingress
        )


def test_the_hpa_target_must_stay_below_the_readiness_cut_off() -> None:
    data = env_data("prod", query__autoscaling__targetInFlight=8, agent__runtime={"maxInFlight": 8})
    with pytest.raises(EnvironmentFileError) as caught:
        parse_environment(data, source="prod.yaml")
    assert caught.value.problems == [
        "prod.yaml: query.autoscaling.targetInFlight: is 8 but agent.runtime.maxInFlight is 8: pods would leave "
        "their Service (readiness) before the HPA adds any; set it below 8 "
        "(see docs/environment-reference.md#autoscaling)"
    ]


def test_spread_over_zones_and_nodes(manifests: Manifests) -> None:
    spread = pod(manifests, "prod", "query")["spec"]["topologySpreadConstraints"]
    assert [c["topologyKey"] for c in spread] == ["topology.kubernetes.io/zone", "kubernetes.io/hostname"]
    assert all("app.kubernetes.io/version" not in c["labelSelector"]["matchLabels"] for c in spread)


def test_config_checksum_rolls_pods_when_settings_change() -> None:
    def checksum(level: str) -> str:
        env = parse_environment(env_data("dev", agent__logLevel=level), source="dev.yaml")
        _, stack = build(env)
        files = synth([stack])["dev"]
        return next(line for line in files["deployment-kga-dev-query.yaml"].splitlines() if "checksum/config" in line)

    assert checksum("INFO") != checksum("WARNING")
    assert checksum("INFO") == checksum("INFO")


def _tier(**props: Any) -> tuple[cdk8s.App, AgentTier]:
    app = cdk8s.App()
    chart = cdk8s.Chart(app, "t")
    identity = Identity(name="kga", instance="kga-t", version="1")
    config = AgentConfig(
        chart,
        "Config",
        props=AgentConfigProps(
            identity=identity.of("agent"),
            namespace="t",
            settings=AgentSettings(github_file_extensions=[".py"]),
            repositories=[Repository(name="r", url="https://github.com/a/b")],
            chroma=Endpoint.serving(identity.of("chroma"), "t", 8000, "http"),
            production=False,
            api_base_url="https://t.example.com/api/v1",
        ),
    )
    defaults: dict[str, Any] = {
        "identity": identity.of("query"),
        "namespace": "t",
        "service_account": "sa",
        "image": ImageRef(repository="ghcr.io/acme/agent", tag="1"),
        "resources": RESOURCES,
    }
    return app, AgentTier(chart, "Tier", config=config, props=AgentTierProps(**{**defaults, **props}))


def test_pdb_must_allow_a_disruption_at_minimum_scale() -> None:
    app, tier = _tier(
        autoscaling=Autoscaling(min_replicas=2, max_replicas=4),
        disruption=Disruption(max_unavailable=None, min_available=2),
    )
    (error,) = collect_errors(app)
    assert "PodDisruptionBudget/kga-t-query allows 0 voluntary disruptions" in error
    assert "minimum scale of 2 (Deployment/kga-t-query)" in error
    with pytest.raises(SynthError) as caught:
        synth([cdk8s.Chart.of(tier)])
    assert caught.value.problems == [error]


def test_pdb_with_headroom_passes() -> None:
    app, _ = _tier(
        autoscaling=Autoscaling(min_replicas=3, max_replicas=4),
        disruption=Disruption(max_unavailable=None, min_available=2),
    )
    assert collect_errors(app) == []


def test_props_quote_the_field_at_construction() -> None:
    with pytest.raises(ValueError, match=r"terminationGraceSeconds \(10\) must exceed"):
        _tier(termination_grace_seconds=10, pre_stop_seconds=10)
    with pytest.raises(ValueError, match="cannot autoscale"):
        _tier(autoscaling=Autoscaling(), state=PersistentState(size="1Gi"))
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        AgentTierProps(replica=2)  # type: ignore[call-arg]


def test_footprint_counts_max_scale_and_surge() -> None:
    _, tier = _tier(autoscaling=Autoscaling(min_replicas=2, max_replicas=5))
    footprint = tier.footprint()
    assert footprint.pods == 6
    assert footprint.total("limits", "memory") == 6 * 2**30


# --- the rendered pods, started with the real runtime layer (docker/agent/runtime) ------------------------


@pytest.fixture(scope="module", params=["query", "indexer"])
def running(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentPod]:
    """dist/prod's pod of the tier with the real runtime around the stand-in app, next to dist/prod's Redis
    and Chroma (tests/rendered.py) and a fake LLM."""
    if not (ROOT / "tests" / "fake_openai.py").exists():
        missing("tests/fake_openai.py missing (the runtime layer of issue 16)")
    from fake_openai import FakeOpenAI

    root = tmp_path_factory.mktemp(request.param)
    llm = FakeOpenAI().start()
    try:
        with (
            run_redis("prod", root / "redis") as redis,
            run_chroma("prod", root / "chroma") as chroma,
            run_agent("prod", request.param, root / "agent", redis=redis, chroma=chroma, llm_url=llm.base_url) as pod,
        ):
            pod.llm = llm
            yield pod
    finally:
        llm.stop()


def wait_for_200(pod: AgentPod, port: str, path: str, timeout: float = 60) -> tuple[int, str]:
    """The answer of ``path`` on the container port ``port``, once it is 200 (or the last one)."""
    deadline = time.monotonic() + timeout
    while True:
        status, body = pod.get(port, path)
        if status == 200 or time.monotonic() > deadline:
            return status, body
        time.sleep(0.5)


def test_the_runtime_answers_every_probe_where_the_pod_asks(running: AgentPod) -> None:
    """Issue 16 defect 4, with the real runtime: each probe of the rendered container, on the port it names,
    answers 200 once the app is up (a wrong port or path would never pass startup)."""
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = running.container[probe]["httpGet"]
        status, body = wait_for_200(running, get["port"], get["path"])
        assert status == 200, (probe, get, body, running.tail())


def test_the_hpa_metric_is_one_the_runtime_exports(running: AgentPod) -> None:
    """The HPA's Pods metric (read from dist/) is a gauge on the runtime's /metrics, scraped where the
    ServiceMonitor points: its Service port, by name, to the container port."""
    objects = rendered_objects("prod")
    tier = running.tier
    monitor = objects[f"ServiceMonitor/kga-prod-{tier}"]["spec"]
    (endpoint,) = monitor["endpoints"]
    (service_port,) = [p for p in objects[f"Service/kga-prod-{tier}"]["spec"]["ports"] if p["name"] == endpoint["port"]]
    status, text = wait_for_200(running, service_port["targetPort"], endpoint["path"])
    assert status == 200, text
    metric = in_flight_metric(objects["HorizontalPodAutoscaler/kga-prod-query"])["metric"]["name"]
    assert f"# TYPE {metric} gauge" in text.splitlines()
    assert any(line.startswith(f"{metric} ") for line in text.splitlines())


def test_a_blocked_loop_takes_a_query_pod_out_of_rotation_and_never_restarts_either_tier(running: AgentPod) -> None:
    """Alive but busy, with the rendered limits: a query whose LLM call holds the app's loop for 6 s makes the
    query pod fail readiness (loop lag over ``agent.runtime.readyMaxLoopLagSeconds``), not liveness; the
    indexer, whose loop runs whole indexing runs, stays ready and alive."""
    container = running.container
    ready, live = container["readinessProbe"]["httpGet"], container["livenessProbe"]["httpGet"]
    assert wait_for_200(running, ready["port"], ready["path"])[0] == 200, running.tail()
    llm = running.llm
    llm.chat_delay = 6
    before = llm.calls["chat"]
    query = threading.Thread(target=running.post, args=("/api/v1/query", {"query": "alive but busy?"}), daemon=True)
    query.start()
    try:
        deadline = time.monotonic() + 30
        while llm.calls["chat"] == before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert llm.calls["chat"] > before, running.tail()
        readiness, liveness = [], []
        while query.is_alive():
            readiness.append(running.get(ready["port"], ready["path"])[0])
            liveness.append(running.get(live["port"], live["path"])[0])
            time.sleep(0.5)
    finally:
        query.join(30)
        llm.chat_delay = 0
    assert set(liveness) == {200}, liveness
    if running.tier == "query":
        assert 503 in readiness, readiness
    else:
        assert set(readiness) == {200}, readiness
