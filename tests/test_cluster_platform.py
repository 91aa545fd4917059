"""The platform layer per cluster, read back from dist/, and the cross-namespace gate over both layers.

Each defect of issue 19 that the platform layer fixes has a test here that fails on the old
behaviour: the committed Probe URL against the Service the blackbox release creates (1), gp3 on
EKS (2), the Envoy PodMonitor and cert-manager's Gateway API flag (6). Mutating a name in either
layer fails the gate with the object and the field.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ROOT, env_data
from tools import missing

from kgstack.cluster_platform import (
    BLACKBOX_PROBER,
    IN_FLIGHT_METRIC,
    Cluster,
    HelmRelease,
    external_prerequisites,
    platform_releases,
)
from kgstack.cross_reference import ClusterGate, Platform, helm_fullname

pytestmark = pytest.mark.go_build("helm")

Obj = dict[str, Any]
DIST = ROOT / "dist"
ENVS = {
    p.stem: data
    for p in (ROOT / "environments").glob("*.yaml")
    # The environments on Kubernetes: the others have no cluster.
    if "kubernetes" in ((data := yaml.safe_load(p.read_text())).get("targets") or ["kubernetes"])
}


def folder(path: Path) -> dict[str, Obj]:
    return {
        p.name: yaml.safe_load(p.read_text()) for p in sorted(path.glob("*.yaml")) if p.name != "kustomization.yaml"
    }


def layer_files(cluster: str) -> dict[str, Obj]:
    """The cluster's bundle and platform objects as committed, keyed like the gate's messages."""
    base = DIST / "argocd" / cluster
    return {
        **{f"argocd/{cluster}/{n}": o for n, o in folder(base).items()},
        **{f"argocd/{cluster}/platform/{n}": o for n, o in folder(base / "platform").items()},
    }


def prerequisites(env: str) -> list[Obj]:
    data = ENVS[env]
    cluster = Cluster.model_validate(data["cluster"])
    return [p.model_dump() for p in external_prerequisites(cluster, data.get("cloud", {}).get("provider", "generic"))]


def gate(env: str, files: dict[str, Obj] | None = None, layer: dict[str, Obj] | None = None) -> list[str]:
    cluster = ENVS[env]["cluster"]["name"]
    platform = Platform.read(layer if layer is not None else layer_files(cluster), prerequisites(env))
    objects = files if files is not None else folder(DIST / env)
    return ClusterGate(objects, namespace=ENVS[env]["namespace"], platform=platform).problems()


def find(files: dict[str, Obj], suffix: str) -> tuple[str, Obj]:
    (hit,) = [(name, obj) for name, obj in files.items() if name.endswith(suffix)]
    return hit


@pytest.mark.parametrize("env", sorted(ENVS))
def test_every_name_the_stack_uses_outside_its_namespace_is_the_platforms(env: str) -> None:
    assert gate(env) == []


# ------------------------------------------------------------------ defect 1: the blackbox Service


def test_the_charts_fullname_rule_names_the_old_service_as_the_issue_says() -> None:
    chart = "prometheus-blackbox-exporter"
    assert helm_fullname("blackbox-exporter", chart, {}) == "blackbox-exporter-prometheus-blackbox-exporter"
    assert helm_fullname("prometheus-blackbox-exporter", chart, {}) == chart  # release contains the chart name
    assert helm_fullname("blackbox-exporter", chart, {"fullnameOverride": "bb"}) == "bb"


@pytest.mark.parametrize("env", sorted(ENVS))
def test_every_probe_points_at_the_service_the_blackbox_release_creates(env: str) -> None:
    """Issue 19 defect 1: without fullnameOverride the release's Service is
    blackbox-exporter-prometheus-blackbox-exporter, and no Probe ever runs."""
    cluster = ENVS[env]["cluster"]["name"]
    _, app = find(layer_files(cluster), "-blackbox-exporter.yaml")
    values = app["spec"]["source"]["helm"]["valuesObject"]
    release, ns = app["spec"]["source"]["helm"]["releaseName"], app["spec"]["destination"]["namespace"]
    service = f"{helm_fullname(release, app['spec']['source']['chart'], values)}.{ns}.svc:{values['service']['port']}"
    probes = [o for o in folder(DIST / env).values() if o["kind"] == "Probe"]
    assert probes
    assert {p["spec"]["prober"]["url"] for p in probes} == {service} == {BLACKBOX_PROBER}
    # The old install: the same release without the override.
    layer = copy.deepcopy(layer_files(cluster))
    _, old = find(layer, "-blackbox-exporter.yaml")
    del old["spec"]["source"]["helm"]["valuesObject"]["fullnameOverride"]
    problems = gate(env, layer=layer)
    assert len(problems) == len(probes)
    assert all(
        ": spec.prober.url: blackbox-exporter.monitoring.svc:9115 is no Service of the platform layer" in p
        and "blackbox-exporter-prometheus-blackbox-exporter.monitoring.svc:9115" in p
        for p in problems
    ), problems


# ------------------------------------------------------------------ defect 2: gp3 on EKS


@pytest.mark.parametrize("env", [e for e in sorted(ENVS) if ENVS[e].get("cloud", {}).get("provider") == "eks"])
def test_eks_storage_class_is_created_by_the_platform(env: str) -> None:
    """Issue 19 defect 2: staging and prod ask for gp3, which EKS does not create; PVCs waited forever."""
    cluster = ENVS[env]["cluster"]["name"]
    storage = yaml.safe_load((DIST / "argocd" / cluster / "platform" / "storageclass-gp3.yaml").read_text())
    assert storage["provisioner"] == "ebs.csi.aws.com"
    assert storage["parameters"]["type"] == "gp3"
    # Zonal volumes bind where the pod is scheduled, and grow.
    assert storage["volumeBindingMode"] == "WaitForFirstConsumer" and storage["allowVolumeExpansion"]
    assert any(p["name"] == "aws-ebs-csi-driver" for p in prerequisites(env))
    # Without it, every claim of the environment is reported, with its field.
    layer = {k: v for k, v in layer_files(cluster).items() if not k.endswith("storageclass-gp3.yaml")}
    problems = gate(env, layer=layer)
    claims = [
        (name, "spec.storageClassName")
        for name, o in folder(DIST / env).items()
        if o["kind"] == "PersistentVolumeClaim"
    ] + [
        (name, f"spec.volumeClaimTemplates[{i}].spec.storageClassName")
        for name, o in folder(DIST / env).items()
        if o["kind"] == "StatefulSet"
        for i, _ in enumerate(o["spec"]["volumeClaimTemplates"])
    ]
    assert sorted(p.split(": StorageClass gp3")[0] for p in problems) == sorted(f"{n}: {f}" for n, f in claims)


def test_storage_per_cloud_profile() -> None:
    cluster = Cluster(name="c", server="https://c.example.com")
    classes = {
        provider: [p.name for p in external_prerequisites(cluster, provider) if p.kind == "StorageClass"]
        for provider in ("generic", "gke", "aks", "eks")
    }
    assert classes == {"generic": ["(cluster default)"], "gke": ["standard-rwo"], "aks": ["managed-csi"], "eks": []}


# ------------------------------------------------------------------ defect 6: Envoy metrics, cert-manager flag


@pytest.mark.parametrize("env", sorted(ENVS))
def test_the_envoy_proxies_are_scraped_by_a_podmonitor_of_the_platform(env: str) -> None:
    """Issue 19 defect 6: no manifest scraped the proxies whose envoy_* series the edge SLIs read."""
    cluster = ENVS[env]["cluster"]["name"]
    layer = layer_files(cluster)
    _, monitor = find(layer, "podmonitor-envoy-proxy.yaml")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["podMetricsEndpoints"][0]["path"] == "/stats/prometheus"
    # The pods our NetworkPolicies admit edge traffic from are the ones the PodMonitor selects.
    edge_peers = [
        peer
        for o in folder(DIST / env).values()
        if o["kind"] == "NetworkPolicy"
        for rule in o["spec"].get("ingress") or []
        for peer in rule.get("from") or []
        if (peer.get("namespaceSelector") or {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
        == "envoy-gateway-system"
    ]
    assert edge_peers
    assert all(peer["podSelector"] == monitor["spec"]["selector"] for peer in edge_peers)
    mutated = copy.deepcopy(layer)
    find(mutated, "podmonitor-envoy-proxy.yaml")[1]["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] = "x"
    (problem,) = gate(env, layer=mutated)
    assert (
        problem.startswith("gateway-") and ": spec.gatewayClassName: no PodMonitor of the platform scrapes" in problem
    )


@pytest.mark.parametrize("cluster", sorted({e["cluster"]["name"] for e in ENVS.values()}))
def test_cert_manager_runs_with_gateway_api_support(cluster: str) -> None:
    _, app = find(layer_files(cluster), "-cert-manager.yaml")
    config = app["spec"]["source"]["helm"]["valuesObject"]["config"]
    assert config["kind"] == "ControllerConfiguration" and config["enableGatewayAPI"] is True
    # The ClusterIssuers answer HTTP-01 through the Gateways' plain-HTTP listeners.
    gateways = {
        (o["metadata"]["name"], o["metadata"]["namespace"])
        for env, data in ENVS.items()
        if data["cluster"]["name"] == cluster
        for o in folder(DIST / env).values()
        if o["kind"] == "Gateway"
    }
    for name in ("letsencrypt-prod", "letsencrypt-staging"):
        _, issuer = find(layer_files(cluster), f"clusterissuer-{name}.yaml")
        (solver,) = issuer["spec"]["acme"]["solvers"]
        refs = solver["http01"]["gatewayHTTPRoute"]["parentRefs"]
        assert {(r["name"], r["namespace"]) for r in refs} == gateways
        assert {r["sectionName"] for r in refs} == {"http"}


# ------------------------------------------------------------------ the gate: mutate either layer


def test_prometheus_adapter_serves_the_in_flight_metric_per_pod() -> None:
    files = folder(DIST / "dev")
    name, hpa = next((n, o) for n, o in files.items() if o["kind"] == "HorizontalPodAutoscaler")
    hpa = copy.deepcopy(hpa)
    metric = {"type": "Pods", "pods": {"metric": {"name": IN_FLIGHT_METRIC}, "target": {"type": "AverageValue"}}}
    hpa["spec"]["metrics"] = [*(hpa["spec"].get("metrics") or []), metric]
    assert gate("dev", files={**files, name: hpa}) == []
    metric["pods"]["metric"]["name"] = "kga_http_requests_inflight"
    (problem,) = gate("dev", files={**files, name: hpa})
    assert problem.startswith(f"{name}: spec.metrics[")
    assert "custom metric kga_http_requests_inflight is served per pod by no prometheus-adapter rule" in problem


@pytest.mark.parametrize(
    ("kind", "mutate", "field", "reason"),
    [
        ("Gateway", lambda o: o["spec"].update(gatewayClassName="eg"), "spec.gatewayClassName", "GatewayClass eg is"),
        ("Certificate", lambda o: o["spec"]["issuerRef"].update(name="le"), "spec.issuerRef.name", "ClusterIssuer le"),
        (
            "ExternalSecret",
            lambda o: o["spec"]["secretStoreRef"].update(name="vault"),
            "spec.secretStoreRef.name",
            "ClusterSecretStore vault is neither",
        ),
        ("Probe", lambda o: o["metadata"]["labels"].update(release="prom"), "metadata.labels", "no Prometheus"),
    ],
)
def test_a_name_mutated_in_the_stack_fails_with_the_object_and_field(
    kind: str, mutate: Any, field: str, reason: str
) -> None:
    files = copy.deepcopy(folder(DIST / "staging"))
    name, obj = next((n, o) for n, o in sorted(files.items()) if o["kind"] == kind)
    mutate(obj)
    problems = gate("staging", files=files)
    assert [p for p in problems if p.startswith(f"{name}: {field}: ") and reason in p] == problems != []


def test_a_network_policy_selecting_pods_the_platform_does_not_run_fails() -> None:
    files = copy.deepcopy(folder(DIST / "prod"))
    name, policy = find(files, "networkpolicy-kga-prod-query.yaml")
    for r, rule in enumerate(policy["spec"]["ingress"]):
        for i, peer in enumerate(rule.get("from") or []):
            if (
                peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name")
                == "prometheus-blackbox-exporter"
            ):
                peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"] = "blackbox-exporter"
                (problem,) = gate("prod", files=files)
                assert problem.startswith(f"{name}: spec.ingress[{r}].from[{i}].podSelector: selects no pods")
                return
    pytest.fail("the query tier admits no blackbox probe")


def test_a_name_mutated_in_the_platform_fails_the_stack_that_uses_it() -> None:
    layer = copy.deepcopy(layer_files("staging-eks"))
    find(layer, "gatewayclass-envoy-gateway.yaml")[1]["metadata"]["name"] = "envoy"
    find(layer, "clusterissuer-letsencrypt-staging.yaml")[1]["metadata"]["name"] = "le-staging"
    problems = gate("staging", layer=layer)
    assert [p.split(": ")[:2] for p in problems] == [
        ["certificate-kga-staging-tls.yaml", "spec.issuerRef.name"],
        ["gateway-kga-staging.yaml", "spec.gatewayClassName"],
    ]


def test_synth_fails_on_a_name_outside_the_platform_and_leaves_dist_alone(tmp_path: Path) -> None:
    import shutil

    envdir, outdir = tmp_path / "environments", tmp_path / "dist"
    shutil.copytree(ROOT / "environments", envdir)
    data = env_data("dev", monitoring__blackboxProber="blackbox.monitoring.svc:9115")
    (envdir / "dev.yaml").write_text(yaml.safe_dump(data))
    outdir.mkdir()
    (outdir / "marker").write_text("untouched")
    result = subprocess.run(
        [sys.executable, str(ROOT / "app.py"), "--environments", str(envdir), "--outdir", str(outdir)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 1
    assert "probe-kga-dev-query.yaml: spec.prober.url: blackbox.monitoring.svc:9115 is no Service" in result.stderr
    assert sorted(p.name for p in outdir.iterdir()) == ["marker"]


def test_environments_on_one_cluster_must_declare_it_alike(tmp_path: Path) -> None:
    from kgstack.environment import EnvironmentFileError, load_environments

    for name in ("staging", "prod"):
        changes = {"cluster": {**ENVS["staging"]["cluster"], "server": f"https://{name}.k8s.example.com"}}
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(env_data(name, **changes)))
    with pytest.raises(EnvironmentFileError) as caught:
        load_environments(tmp_path)
    assert caught.value.problems == [
        f"{tmp_path / 'staging.yaml'}: cluster: cluster 'staging-eks' is declared differently in "
        f"{tmp_path / 'prod.yaml'}; environments on one cluster share its platform, so copy the same block"
    ]


# ------------------------------------------------------------------ the install procedure


@pytest.mark.parametrize("env", sorted(ENVS))
def test_install_procedure_is_ordered_from_prerequisites_to_dns(env: str) -> None:
    cluster = ENVS[env]["cluster"]["name"]
    page = (ROOT / "docs" / "environments" / "clusters" / cluster / "install.md").read_text()
    # Every name the gate accepts as external is on the page, exactly.
    for pre in prerequisites(env):
        assert f"`{pre['namespace'] + '/' if pre['namespace'] else ''}{pre['name']}`" in page or pre["name"] in page
    apps = sorted(
        (int(o["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"]), o["metadata"]["name"])
        for o in folder(DIST / "argocd" / cluster).values()
        if o["spec"]["source"].get("chart")
    )
    positions = [page.index(f"argocd app sync {name} ") for _, name in apps]
    on_page = [wave for _, wave in sorted(zip(positions, (w for w, _ in apps), strict=True))]
    assert on_page == sorted(on_page), "charts out of wave order"
    (gateway,) = [o for o in folder(DIST / env).values() if o["kind"] == "Gateway"]
    dns = page.index(f"get gateway {gateway['metadata']['name']} -o jsonpath='{{.status.addresses[0].value}}'")
    order = [
        page.index("## 1. External prerequisites"),
        min(positions),
        page.index(f"argocd app sync {cluster}-platform "),
        page.index("## 5. The secret stores"),
        page.index(f"argocd app sync kga-{env} "),
        dns,
    ]
    assert order == sorted(order)
    assert f"`{ENVS[env]['domain']}` -> that address" in page


# ------------------------------------------------------------------ a chart shipped in a Go module, rendered

HELM = ROOT / ".tools" / "control-plane" / "helm"
HELM_MODULE = ROOT / "scripts" / "control-plane" / "helm"


GO_CHARTS = {r.key: r for r in platform_releases() if r.go_chart}
"""The platform's charts whose source ships inside a Go module."""


def _module_chart(release: HelmRelease, tmp: Path) -> tuple[Path, Obj]:
    """The chart of ``release.go_chart``, copied out of its Go module (writable: Helm may write into it), and
    the release's committed Application."""
    _, app = find(layer_files("prod-eks"), f"/application-prod-eks-{release.key}.yaml")
    assert release.go_chart is not None
    module, _, path = release.go_chart.partition("@")
    version, _, path = path.partition("/")
    go = shutil.which("go") or "/usr/local/go/bin/go"
    if not Path(go).exists():
        missing("go not found: the chart comes from its Go module")
    out = subprocess.run(
        [go, "mod", "download", "-json", f"{module}@{version}"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod"},
    )
    assert out.returncode == 0, out.stdout + out.stderr
    chart = tmp / release.chart
    source = Path(json.loads(out.stdout)["Dir"])
    shutil.copytree(source / path, chart)
    if release.go_crds:  # what the chart's packaging adds: the CRDs, as Helm installs crds/ with --include-crds
        (chart / "crds").mkdir(exist_ok=True)
        shutil.copy2(source / release.go_crds, chart / "crds" / "bundle.yaml")
    chart.chmod(0o755)
    for p in chart.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    # Sub-charts from other repositories are not in the module: left out (the kinds we use must still be served).
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    shipped = [d for d in meta.get("dependencies", []) if (chart / "charts" / d["name"]).is_dir()]
    if len(shipped) != len(meta.get("dependencies", [])):
        meta["dependencies"] = shipped
        (chart / "Chart.yaml").write_text(yaml.safe_dump(meta))
    return chart, app


def _helm_template(chart: Path, app: Obj, tmp: Path) -> list[Obj]:
    """``helm template`` of the chart with the Application's release name, namespace and values (which Helm checks
    against the chart's values.schema.json, where it has one), CRDs included."""
    if not HELM.exists():
        missing(f"{HELM} not built (scripts/setup.sh test builds it from {HELM_MODULE.relative_to(ROOT)})")
    helm = app["spec"]["source"]["helm"]
    (tmp / "values.yaml").write_text(yaml.safe_dump(helm.get("valuesObject") or {}))
    env = {**os.environ, "HELM_CACHE_HOME": str(tmp / "c"), "HELM_CONFIG_HOME": str(tmp / "h")}
    namespace = app["spec"]["destination"]["namespace"]
    server = app["spec"]["destination"]["server"]
    (version,) = {d["kubernetesVersion"] for d in ENVS.values() if d["cluster"]["server"] == server}
    rendered = subprocess.run(
        [str(HELM), "template", helm["releaseName"], str(chart), "-n", namespace, "--include-crds",
         "--kube-version", f"v{version}.0", "-f", str(tmp / "values.yaml")],
        capture_output=True, text=True, check=False, env=env,
    )  # fmt: skip
    assert rendered.returncode == 0, rendered.stderr
    return [o for o in yaml.safe_load_all(rendered.stdout) if o]


def _envoy_gateway_chart(tmp: Path) -> tuple[Path, Obj]:
    """charts/gateway-helm of the Go module github.com/envoyproxy/gateway at the platform's pinned version,
    with the values its release tooling substitutes, and that release's Application."""
    release = GO_CHARTS["envoy-gateway"]
    chart, app = _module_chart(release, tmp)
    template = (chart / "values.tmpl.yaml").read_text()
    values = template.replace("${GatewayImage}", f"docker.io/envoyproxy/gateway:{release.version}").replace(
        "${GatewayImagePullPolicy}", "IfNotPresent"
    )
    (chart / "values.yaml").write_text(values)
    return chart, app


def test_envoy_gateway_chart_from_its_go_module_serves_what_the_platform_objects_name(tmp_path: Path) -> None:
    """The chart the platform installs, rendered by Helm built from its Go module (scripts/control-plane/helm):
    its controller claims our GatewayClass, runs in the namespace of our EnvoyProxy, PodMonitor and
    NetworkPolicy peers, and installs the CRDs of the kinds the platform objects use."""
    chart, app = _envoy_gateway_chart(tmp_path)
    namespace = app["spec"]["destination"]["namespace"]
    objects = _helm_template(chart, app, tmp_path)
    crds = {
        (o["spec"]["group"], o["spec"]["names"]["kind"]) for o in objects if o["kind"] == "CustomResourceDefinition"
    }
    platform = folder(DIST / "argocd" / "prod-eks" / "platform")
    for obj in platform.values():
        group = obj["apiVersion"].rpartition("/")[0]
        if group in {"gateway.networking.k8s.io", "gateway.envoyproxy.io"}:
            assert (group, obj["kind"]) in crds, f"the chart installs no CRD for {obj['kind']}"
    (config,) = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "envoy-gateway-config"]
    controller = yaml.safe_load(config["data"]["envoy-gateway.yaml"])["gateway"]["controllerName"]
    (gateway_class,) = [o for o in platform.values() if o["kind"] == "GatewayClass"]
    assert gateway_class["spec"]["controllerName"] == controller
    deployments = [o for o in objects if o["kind"] == "Deployment"]
    assert {d["metadata"]["namespace"] for d in deployments} == {namespace}
    for obj in platform.values():
        if obj["kind"] in {"EnvoyProxy", "PodMonitor"}:
            assert obj["metadata"]["namespace"] == namespace


def _dist_objects() -> list[Obj]:
    """Every object the clusters receive: each Kubernetes environment's stack and each cluster's layer."""
    files = [p for env in ENVS for p in (DIST / env).glob("*.yaml")]
    files += list((DIST / "argocd").glob("*/*.yaml")) + list((DIST / "argocd").glob("*/platform/*.yaml"))
    return [o for p in sorted(files) for o in yaml.safe_load_all(p.read_text()) if o and "apiVersion" in o]


@pytest.mark.parametrize("key", sorted(k for k in GO_CHARTS if k != "envoy-gateway"))
def test_a_chart_shipped_in_its_go_module_takes_our_values_and_serves_every_kind_we_use(
    key: str, tmp_path: Path
) -> None:
    """cert-manager, External Secrets and Kyverno ship their charts in their Go modules too (issue 19): each,
    rendered by Helm from there with the committed Application's values, accepts them (checked against its
    values.schema.json where it has one: cert-manager and External Secrets),
    runs in the Application's namespace and serves every kind and version of its API groups that dist/ uses."""
    chart, app = _module_chart(GO_CHARTS[key], tmp_path)
    objects = _helm_template(chart, app, tmp_path)
    served = {
        (o["spec"]["group"], o["spec"]["names"]["kind"]): {v["name"] for v in o["spec"]["versions"] if v["served"]}
        for o in objects
        if o["kind"] == "CustomResourceDefinition"
    }
    groups = {group for group, _ in served}
    used = {
        (group, o["kind"], version)
        for o in _dist_objects()
        for group, _, version in [o["apiVersion"].rpartition("/")]
        if group in groups
    }
    assert used, f"dist/ uses none of {sorted(groups)}"
    for group, kind, version in sorted(used):
        assert version in served.get((group, kind), set()), f"{key} serves no {group}/{version} {kind}"
    namespace = app["spec"]["destination"]["namespace"]
    workloads = [o for o in objects if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet")]
    assert workloads and {o["metadata"].get("namespace", namespace) for o in workloads} == {namespace}
    print(f"[charts] {GO_CHARTS[key].go_chart}: {len(objects)} objects; dist/ uses {sorted(used)}")


def test_a_value_the_chart_does_not_know_is_refused_by_its_schema(tmp_path: Path) -> None:
    """Why rendering with our values means something: a misspelt key fails against cert-manager's schema."""
    chart, app = _module_chart(GO_CHARTS["cert-manager"], tmp_path)
    values = app["spec"]["source"]["helm"]["valuesObject"]
    values["prometheus"]["servicemonitor"]["enabld"] = values["prometheus"]["servicemonitor"].pop("enabled")
    with pytest.raises(AssertionError, match="additional properties 'enabld' not allowed"):
        _helm_template(chart, app, tmp_path)
