"""dist/ against a real control plane (tests/control_plane.py): apply, admission, scheduling,
disruption budgets under eviction, a zone loss, a node drain. Issue 10, tests 1-6.

The tests share one control plane and run in file order: the drain and the zone loss come last.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import DRILLED, ENV_DIRS, ROOT
from control_plane import (
    BIN,
    ZONE,
    ControlPlane,
    apply_environment,
    blocked_evictions,
    drain,
    drill_table,
    pods_per_zone,
    restore_into_live_zone,
    scale_to_hpa_max,
    wait_all_ready,
    zone_loss_drill,
)

pytestmark = [pytest.mark.slow, pytest.mark.go_build("control-plane", "kwok")]
DIST = ROOT / "dist"
ARGOCD_DIRS = sorted(p.relative_to(DIST).as_posix() for p in (DIST / "argocd").rglob("*") if p.is_dir())
"""Each cluster's bundle ``argocd/<cluster>`` and its platform objects ``argocd/<cluster>/platform``."""


@pytest.fixture(scope="module")
def applied(cp: ControlPlane) -> dict[str, list[str]]:
    """Every environment and every cluster's platform layer, applied: ``{folder: warnings and rejections}``."""
    return {name: apply_environment(cp, DIST / name) for name in [*ARGOCD_DIRS, *ENV_DIRS]}


def namespace(env: str) -> str:
    return yaml.safe_load(next((DIST / env).glob("namespace-*.yaml")).read_text())["metadata"]["name"]  # type: ignore[no-any-return]


# 1 -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("folder", [*ENV_DIRS, *ARGOCD_DIRS])
def test_applies_server_side_with_no_warning_or_rejection(applied: dict[str, list[str]], folder: str) -> None:
    assert applied[folder] == []


# 2 -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("env", ENV_DIRS)
def test_every_workload_reaches_its_replicas_under_quota_and_pod_security(
    cp: ControlPlane, applied: dict[str, list[str]], env: str
) -> None:
    ns = namespace(env)
    labels = cp.get(f"/api/v1/namespaces/{ns}")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    wait_all_ready(cp, ns)
    # Then every HPA target at its ceiling, still under the quota (the other tests and the drill
    # run at this scale too: the worst case for capacity and for a zone loss).
    scale_to_hpa_max(cp, ns)
    (quota,) = cp.items(f"/api/v1/namespaces/{ns}/resourcequotas")
    used, hard = quota["status"]["used"], quota["status"]["hard"]
    print(f"\n{ns} at HPA maximum: CPU requests {used['requests.cpu']} of {hard['requests.cpu']}")


# 3 -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("env", ENV_DIRS)
def test_topology_spread_holds(cp: ControlPlane, applied: dict[str, list[str]], env: str) -> None:
    ns = namespace(env)
    wait_all_ready(cp, ns)
    for key, workload in cp.workloads(ns).items():
        if workload["spec"].get("replicas", 1) < 2:
            continue
        per_zone = pods_per_zone(cp, ns, workload)
        counts = [per_zone.get(z, 0) for z in ("zone-a", "zone-b", "zone-c")]
        assert max(counts) - min(counts) <= 1, f"{key}: {dict(per_zone)}"


def test_zonal_state_is_spread_over_zones(cp: ControlPlane, applied: dict[str, list[str]]) -> None:
    """The indexer and the stores sit in different zones, so one zone loss takes one of them."""
    ns = namespace(DRILLED)
    wait_all_ready(cp, ns)
    zones = {
        key: next(iter(pods_per_zone(cp, ns, w)))
        for key, w in cp.workloads(ns).items()
        if "kgstack/zonal-state" in w["spec"]["template"]["metadata"]["labels"]
    }
    assert len(zones) >= 3
    assert len(set(zones.values())) == min(len(zones), 3), zones


# Issue 25 ----------------------------------------------------------------------------------------
NEEDS_A_KUBELET = (" exec ", " logs ", " port-forward ")
"""Plan commands that reach a pod (kwok runs none): the tracker's run with local stand-ins in
tests/test_app.py and tests/test_backup_indexer.py; the others follow a Job's log."""


def _commands(line: str) -> list[str]:
    """The commands of one plan line: a line that is a command, or the command after a step's label."""
    text = line.strip()
    if not text.startswith(("kubectl ", "make restore ")):
        text = text.rsplit(": ", 1)[-1]
        if not text.startswith("kubectl "):
            return []
    return text.split(" && ")


def test_the_restore_plan_runs_as_printed_against_dist_on_the_api_server(
    cp: ControlPlane, applied: dict[str, list[str]], tmp_path: Path
) -> None:
    """`make restore`'s procedure for the drilled environment's Chroma, each kubectl command exactly as
    printed, against dist/ on the real API server: every backup and re-index CronJob is suspended
    before the restore Job is applied and resumed after; the indexer is stopped while it runs; the Job
    is admitted (quota, Pod Security) and completes; the API tiers are restarted; the re-index Job is
    made from its CronJob. Leaves the namespace as it found it."""
    ns = namespace(DRILLED)
    wait_all_ready(cp, ns)
    printed = subprocess.run(
        [sys.executable, str(ROOT / "app.py"), "restore", DRILLED, "chroma", "--force"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert printed.returncode == 0, printed.stderr
    plan = [line.removeprefix("# ") for line in printed.stderr.splitlines() if line.startswith("# ")]
    job = yaml.safe_load(printed.stdout)["metadata"]["name"]
    batch, apps = f"/apis/batch/v1/namespaces/{ns}", f"/apis/apps/v1/namespaces/{ns}"
    cronjobs = {c["metadata"]["name"] for c in cp.items(f"{batch}/cronjobs")}
    indexer, query = f"{ns}-indexer", f"{ns}-query"

    def suspended() -> dict[str, bool]:
        return {c["metadata"]["name"]: bool(c["spec"].get("suspend")) for c in cp.items(f"{batch}/cronjobs")}

    def replicas(name: str) -> int:
        return int(cp.get(f"{apps}/deployments/{name}")["spec"]["replicas"])

    def complete(name: str) -> bool:
        conditions = cp.get(f"{batch}/jobs/{name}").get("status", {}).get("conditions", [])
        return any(c["type"] == "Complete" and c["status"] == "True" for c in conditions)

    env = {**os.environ, "KUBECONFIG": str(cp.kubectl.kubeconfig), "PATH": f"{BIN}:{os.environ['PATH']}"}
    ran, reach_pods = [], []
    at_restore: dict[str, Any] = {}
    try:
        for line in plan:
            for command in _commands(line):
                if any(word in f" {command} " for word in NEEDS_A_KUBELET):
                    reach_pods.append(command)
                    continue
                shell, stdin = command, None
                if command.startswith("make restore "):  # `make restore ... | kubectl apply -f -`: its output
                    shell, stdin = command.split(" | ", 1)[1], printed.stdout
                    at_restore = {"suspended": suspended(), "indexer": replicas(indexer)}
                out = subprocess.run(["bash", "-c", shell], input=stdin, env=env, cwd=tmp_path,
                                     capture_output=True, text=True, timeout=180)  # fmt: skip
                assert out.returncode == 0, f"{command}\n{out.stdout}{out.stderr}"
                ran.append(command)
                if stdin is not None:  # the plan: done when the Job shows Complete
                    cp.wait(f"restore Job {job} to complete", lambda: complete(job), timeout=120)
        assert at_restore == {"suspended": dict.fromkeys(cronjobs, True), "indexer": 0}, at_restore
        assert suspended() == dict.fromkeys(cronjobs, False)
        assert replicas(indexer) == 1
        for name in (indexer, query):
            template = cp.get(f"{apps}/deployments/{name}")["spec"]["template"]["metadata"]
            assert "kubectl.kubernetes.io/restartedAt" in template.get("annotations", {}), name
        (reindex,) = [c for c in cronjobs if c.endswith("-reindex")]
        made = cp.get(f"{batch}/jobs/{reindex}-after-restore")
        assert made["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"] == "manual"
        # Exactly the steps that read a Job's log or run in the indexer's pod were left to the stand-ins.
        assert [c.split()[3] for c in reach_pods] == ["exec", "logs", "logs", "exec", "logs"], reach_pods
        print(f"\nrestore plan for {DRILLED}/chroma: {len(ran)} commands run as printed")
    finally:
        for name in (job, f"{ns}-reindex-after-restore"):
            cp.kubectl.run("-n", ns, "delete", "job", name, "--ignore-not-found", "--cascade=foreground")
        for name in cronjobs:
            cp.kubectl.run("-n", ns, "patch", "cronjob", name, "--type=merge", "-p", '{"spec":{"suspend":false}}')
        cp.kubectl.run("-n", ns, "scale", f"deploy/{indexer}", "--replicas=1")
    wait_all_ready(cp, ns)
    # The restarts' old pods gone too: the drain test below expects the indexer's one pod.
    cp.wait(
        f"no terminating pod in {ns}",
        lambda: not any(p["metadata"].get("deletionTimestamp") for p in cp.items(f"/api/v1/namespaces/{ns}/pods")),
    )


# 5 -----------------------------------------------------------------------------------------------
def test_a_single_node_drain_completes_and_the_indexer_moves(cp: ControlPlane, applied: dict[str, list[str]]) -> None:
    ns = namespace(DRILLED)
    for env in ENV_DIRS:
        wait_all_ready(cp, namespace(env))
    indexer = cp.workloads(ns)[f"Deployment/{ns}-indexer"]
    (pod,) = cp.pods_of(ns, indexer)
    node = pod["spec"]["nodeName"]
    start = time.monotonic()
    out = drain(cp, [node], timeout="90s")
    assert out.returncode == 0, f"drain of {node} did not complete:\n{out.stderr[-3000:]}"
    for env in ENV_DIRS:
        wait_all_ready(cp, namespace(env))
    (moved,) = [p for p in cp.pods_of(ns, indexer) if not p["metadata"].get("deletionTimestamp")]
    assert moved["spec"]["nodeName"] != node
    print(f"\ndrain of {node}: {time.monotonic() - start:.1f} s until every workload was Ready again")
    cp.kubectl.ok("uncordon", node)


# 4 -----------------------------------------------------------------------------------------------
def test_zone_loss_drill(cp: ControlPlane, applied: dict[str, list[str]]) -> None:
    ns = namespace(DRILLED)
    wait_all_ready(cp, ns)
    rows, restored = zone_loss_drill(cp, DRILLED)
    print("\n" + drill_table(rows))
    by = {r.component: r for r in rows}
    # Every workload back at its desired replicas, in the zones that are left (the other
    # environments' stores in the lost zone go through the same runbook).
    for env in ENV_DIRS:
        if env != DRILLED:
            restore_into_live_zone(cp, namespace(env), DIST / env, "zone-a")
        wait_all_ready(cp, namespace(env), timeout=120)
    live = {n for n, z in cp.node_zones().items() if z != "zone-a"}
    for workload in cp.workloads(ns).values():
        for pod in cp.pods_of(ns, workload):
            assert pod["spec"]["nodeName"] in live
    # The query tier never fell below its PDB's floor.
    pdb = cp.get(f"/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets/{ns}-query")["spec"]
    query = by[f"Deployment/{ns}-query"]
    assert query.fewest_ready >= query.replicas - int(pdb["maxUnavailable"])
    assert not any(node["metadata"]["labels"][ZONE] == "zone-a" for node in cp.nodes())
    # Zonal state was spread (test above): the lost zone held at most one store's volume, which
    # the runbook restored into a live zone; nothing else needed a restore.
    assert len(restored) <= 1, restored


# 6 -----------------------------------------------------------------------------------------------
def _mutated(tmp_path: Path, source: str, change: Any) -> Path:
    obj = change(yaml.safe_load((DIST / DRILLED / source).read_text()))
    obj["metadata"]["name"] += "-mutated"
    path = tmp_path / source
    path.write_text(yaml.safe_dump(obj))
    return path


def _bad_schedule(obj: dict[str, Any]) -> dict[str, Any]:
    obj["spec"]["schedule"] = "61 * * * *"
    return obj


def _host_network_pod(deployment: dict[str, Any]) -> dict[str, Any]:
    template = deployment["spec"]["template"]
    template["spec"]["hostNetwork"] = True
    meta = {"name": deployment["metadata"]["name"], "namespace": deployment["metadata"]["namespace"]}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template["spec"]}


def _foreign_selector(obj: dict[str, Any]) -> dict[str, Any]:
    obj["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] = "nope"
    return obj


def _backend_timeout_over_request(route: dict[str, Any]) -> dict[str, Any]:
    # A CEL rule of the vendored Gateway API CRD, enforced by the API server, not by any schema.
    route["spec"]["rules"][0]["timeouts"]["backendRequest"] = "3600s"
    return route


@pytest.mark.parametrize(
    ("source", "change", "message"),
    [
        (f"cronjob-kga-{DRILLED}-backup-redis.yaml", _bad_schedule, 'spec.schedule: Invalid value: "61 * * * *"'),
        # Pod Security enforces on pods (on workloads it only warns): the web tier's pod on the host network.
        (f"deployment-kga-{DRILLED}-web.yaml", _host_network_pod, "host namespaces (hostNetwork=true)"),
        (f"deployment-kga-{DRILLED}-web.yaml", _foreign_selector, "`selector` does not match template `labels`"),
        (
            f"httproute-kga-{DRILLED}-api.yaml",
            _backend_timeout_over_request,
            "backendRequest timeout cannot be longer than request timeout",
        ),
    ],
    ids=["impossible-cron-schedule", "pod-security-violation", "selector-mismatch", "crd-cel-rule"],
)
@pytest.mark.usefixtures("applied")
def test_the_real_server_rejects_a_broken_manifest(
    cp: ControlPlane, tmp_path: Path, source: str, change: Any, message: str
) -> None:
    path = _mutated(tmp_path, source, change)
    out = cp.kubectl.run("apply", "--server-side", "--dry-run=server", "-f", str(path))
    print(out.stderr)
    assert out.returncode != 0
    assert message in out.stderr
    if change is _host_network_pod:
        version = yaml.safe_load((ROOT / "environments" / f"{DRILLED}.yaml").read_text())["kubernetesVersion"]
        assert f'is forbidden: violates PodSecurity "restricted:v{version}"' in out.stderr


def test_blocked_evictions_are_read_from_kubectl_drain() -> None:
    log = (
        'error when evicting pods/"kga-prod-query-1" -n "kga-prod" (will retry after 5s): '
        "Cannot evict pod as it would violate the pod's disruption budget.\n"
        "evicting pod kga-prod/kga-prod-query-2\n"
    )
    assert blocked_evictions(log, {"kga-prod-query-1": "Deployment/kga-prod-query"}) == {"Deployment/kga-prod-query": 1}


def test_the_control_plane_is_built_at_the_newest_targeted_kubernetes(environments: dict[str, Any]) -> None:
    gomod = (ROOT / "scripts" / "control-plane" / "go.mod").read_text()
    (version,) = re.findall(r"^\s*(?:require )?k8s\.io/kubernetes v1\.(\d+)\.(\d+)(?: //.*)?$", gomod, re.MULTILINE)
    newest = max((env.kubernetes_version for env in environments.values()), key=lambda v: int(v.split(".")[1]))
    assert f"1.{version[0]}" == newest
    staging = re.findall(r"^\t(k8s\.io/[\w-]+) => (k8s\.io/[\w-]+) (v\S+)$", gomod, re.MULTILINE)
    assert len(staging) >= 30
    assert {(a == b, v) for a, b, v in staging} == {(True, f"v0.{version[0]}.{version[1]}")}


@pytest.mark.usefixtures("applied")
def test_the_limit_range_fills_in_a_container_without_resources(cp: ControlPlane, tmp_path: Path) -> None:
    """LimitRange admission on a real server: a container without resources gets the rendered defaults."""
    (limit,) = yaml.safe_load(next((DIST / DRILLED).glob("limitrange-*.yaml")).read_text())["spec"]["limits"]

    def bare_pod(deployment: dict[str, Any]) -> dict[str, Any]:
        pod = _host_network_pod(deployment)
        pod["spec"].pop("hostNetwork")
        for container in pod["spec"]["containers"]:
            container.pop("resources", None)
        return pod

    path = _mutated(tmp_path, f"deployment-kga-{DRILLED}-web.yaml", bare_pod)
    out = cp.kubectl.run("apply", "--server-side", "--dry-run=server", "-o", "json", "-f", str(path))
    assert out.returncode == 0, out.stderr
    for container in json.loads(out.stdout)["spec"]["containers"]:
        assert container["resources"] == {"limits": limit["default"], "requests": limit["defaultRequest"]}


# Issue 24: the signed-images admission policy of each cluster ---------------------------------------
POLICIES = sorted((DIST / "argocd").glob("*/platform/clusterpolicy-*.yaml"))


def _contains(stored: Any, rendered: Any) -> bool:
    """Everything rendered is stored unchanged (the server may add defaults, never drop or alter ours)."""
    if isinstance(rendered, dict):
        return isinstance(stored, dict) and all(k in stored and _contains(stored[k], v) for k, v in rendered.items())
    if isinstance(rendered, list):
        return isinstance(stored, list) and len(stored) == len(rendered) and all(map(_contains, stored, rendered))
    return bool(stored == rendered)


@pytest.mark.usefixtures("applied")
def test_the_server_keeps_each_clusters_image_policy_as_rendered_and_refuses_a_bad_one(
    cp: ControlPlane, tmp_path: Path
) -> None:
    """Kyverno's CRD on the real server: each cluster's policy (test 1 applied them) is valid and stored
    without a field pruned; an action Kyverno does not know is refused by the server itself."""
    assert len(POLICIES) == len(list((DIST / "argocd").iterdir()))
    for path in POLICIES:
        args = ["apply", "--server-side", "--field-manager=kgstack-test", "--dry-run=server", "-o", "json"]
        out = cp.kubectl.run(*args, "-f", str(path))
        assert out.returncode == 0, out.stderr
        assert out.stderr == "", out.stderr  # no warning either (a deprecated API warns)
        assert _contains(json.loads(out.stdout)["spec"], yaml.safe_load(path.read_text())["spec"]), path
    bad = yaml.safe_load(POLICIES[0].read_text())
    bad["metadata"]["name"] += "-mutated"
    bad["spec"]["rules"][0]["verifyImages"][0]["failureAction"] = "Enforced"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    out = cp.kubectl.run("apply", "--server-side", "--dry-run=server", "-f", str(tmp_path / "bad.yaml"))
    assert out.returncode != 0
    assert 'Unsupported value: "Enforced"' in out.stderr


@pytest.mark.usefixtures("applied")
def test_the_break_glass_exception_of_the_operations_guide_is_accepted(cp: ControlPlane, tmp_path: Path) -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", (ROOT / "docs" / "operations.md").read_text(), re.DOTALL)
    (text,) = [b for b in blocks if "kind: PolicyException" in b]
    exception = yaml.safe_load(re.sub(r"^ {3}", "", text, flags=re.MULTILINE))
    namespace = exception["metadata"]["namespace"]
    if cp.api.get(f"/api/v1/namespaces/{namespace}").status_code == 404:
        cp.api.post("/api/v1/namespaces", json={"metadata": {"name": namespace}}).raise_for_status()
    (tmp_path / "exception.yaml").write_text(yaml.safe_dump(exception))
    out = cp.kubectl.run("apply", "--server-side", "--dry-run=server", "-f", str(tmp_path / "exception.yaml"))
    assert out.returncode == 0, out.stderr
    (policy,) = {yaml.safe_load(p.read_text())["metadata"]["name"] for p in POLICIES}
    (rule,) = {r["name"] for p in POLICIES for r in yaml.safe_load(p.read_text())["spec"]["rules"]}
    (entry,) = exception["spec"]["exceptions"]
    assert entry["policyName"] == policy
    assert rule in entry["ruleNames"] and f"autogen-{rule}" in entry["ruleNames"]
