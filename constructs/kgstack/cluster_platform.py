"""The platform under the stack, per cluster: the upstream charts, their pinned names, and what they serve.

The stack names things it does not create: the blackbox exporter's Service, the
StorageClass, the GatewayClass and the Envoy proxies' namespace, the
ClusterIssuer, the SecretStore, the Prometheus that selects our monitors, the
custom metric the HPA reads. :class:`ClusterPlatform` renders them for one
cluster: an Argo CD Application per upstream Helm chart (pinned version, and the
values that fix every name the stack references: release name,
``fullnameOverride``, namespace) plus the cluster objects in
``dist/argocd/<cluster>/platform/`` (StorageClasses per cloud profile, the
GatewayClass and its EnvoyProxy, the ClusterIssuers, the Envoy PodMonitor, and the
admission policy that refuses our images unless the release workflow signed them,
:mod:`kgstack.image_policy`).

What the platform does not create is an :class:`ExternalPrerequisite`, with its
exact name, in :func:`external_prerequisites`: the one list from which the docs'
install procedure is generated. The cross-namespace gate
(:class:`kgstack.cross_reference.ClusterGate`) reads both layers as rendered and
fails synth when a name the stack uses is neither.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal

import cdk8s
from constructs import Construct
from pydantic import Field

from ._plus import k8s
from .custom_resource import custom_resource
from .image_policy import POLICY_NAME as IMAGE_POLICY_NAME
from .image_policy import ImagePolicy, ImagePolicyProps
from .model import DnsLabel, Spec

if TYPE_CHECKING:
    from .environment import Environment

# ---------------------------------------------------------------- the cluster an environment runs on


class Cluster(Spec):
    """The Kubernetes cluster an environment runs on; environments naming one cluster share its platform."""

    name: DnsLabel
    """Cluster name: ``dist/argocd/<name>/`` holds its Argo CD bundle (platform and environments)."""
    server: Annotated[str, Field(pattern=r"^https://[a-z0-9.-]+(:\d{1,5})?(/\S*)?$")]
    """API server URL as registered in Argo CD (``https://kubernetes.default.svc`` for Argo CD's own cluster)."""
    secret_stores: list[DnsLabel] = Field(default_factory=list)
    """ClusterSecretStores the cluster's operators create (they hold the cloud credentials): an external
    prerequisite, listed with its exact name in the install procedure."""


# ---------------------------------------------------------------- the upstream charts, pinned


class HelmRelease(Spec):
    """One upstream Helm chart installed by an Argo CD Application."""

    key: str
    """Short name: the Application is ``<cluster>-<key>``."""
    repo_url: str
    """Helm repository (``https://...``) or OCI registry (``registry-1.docker.io/envoyproxy``, no scheme)."""
    chart: str
    """Chart name in that repository."""
    version: str
    """Pinned chart version."""
    release: str
    """Helm release name."""
    namespace: str
    """Namespace the chart installs into (created by Argo CD)."""
    values: dict[str, Any] = Field(default_factory=dict)
    """Values that fix every name the stack references."""
    wave: int = -3
    """Argo CD sync wave of the Application: charts with CRDs before the objects using them."""
    why: str = ""
    """What the stack needs it for (the install procedure)."""
    oci: bool = False
    """An OCI chart (``helm install oci://<repo_url>/<chart>``)."""
    go_chart: str | None = None
    """Where the chart's source ships inside a Go module, ``<module>@<version>/<path>``, when it does: the tests
    render it from there with Helm built from its own module (the Go proxy serves modules, not chart repos)."""
    go_crds: str | None = None
    """The CRD bundle in that module which the chart's packaging adds to it, when its source holds none."""


MONITORING_NAMESPACE = "monitoring"
BLACKBOX_FULLNAME = "blackbox-exporter"
"""The blackbox exporter's ``fullnameOverride``: its Service, whose URL every Probe's prober is."""
BLACKBOX_PORT = 9115
"""The prometheus-blackbox-exporter chart's ``service.port`` (its default, set explicitly)."""
BLACKBOX_PROBER = f"{BLACKBOX_FULLNAME}.{MONITORING_NAMESPACE}.svc:{BLACKBOX_PORT}"
"""``host:port`` of the blackbox exporter, derived from the values above: the default of
``monitoring.blackboxProber``."""
PROMETHEUS_RELEASE = "kube-prometheus-stack"
"""Its Prometheus selects monitors and rules labelled ``release: <this>`` (the chart's default selector)."""
ENVOY_GATEWAY_NAMESPACE = "envoy-gateway-system"
"""Envoy Gateway's controller namespace, where it runs the proxies of every Gateway of its class."""
KYVERNO_NAMESPACE = "kyverno"
"""Where Kyverno runs, and the only namespace whose PolicyExceptions it honours (break glass)."""
GATEWAY_CLASS = "envoy-gateway"
"""The GatewayClass the platform creates."""
ENVOY_PROXY_LABELS = {"app.kubernetes.io/name": "envoy", "app.kubernetes.io/component": "proxy"}
"""Labels Envoy Gateway puts on every proxy pod (the PodMonitor selects them)."""
ENVOY_METRICS_PORT = 19001
"""The proxies' Prometheus port (``/stats/prometheus``)."""
CLUSTER_ISSUERS = {"letsencrypt-prod": "https://acme-v02.api.letsencrypt.org/directory"}
CLUSTER_ISSUERS["letsencrypt-staging"] = "https://acme-staging-v02.api.letsencrypt.org/directory"
"""ClusterIssuer -> ACME directory; the edge's default issuers."""
from .agent_secrets import RELOAD_STRATEGY, RELOADED_FROM_ANNOTATION  # noqa: E402

# The query tier's HPA metric and the adapter rule that serves it: declared once, with the HPA.
from .agent_tier import IN_FLIGHT_METRIC, prometheus_adapter_rules  # noqa: E402

STORAGE_CLASSES: dict[str, dict[str, Any]] = {
    # EKS creates only the in-tree gp2; gp3 comes from the EBS CSI driver (an EKS add-on).
    "eks": {
        "name": "gp3",
        "provisioner": "ebs.csi.aws.com",
        "parameters": {"type": "gp3", "encrypted": "true", "fsType": "ext4"},
    },
}
"""StorageClasses the platform creates per cloud provider. Providers absent here bring their own
(listed as external prerequisites below)."""
PROVIDED_BY_CLOUD = {"gke": "standard-rwo", "aks": "managed-csi"}
"""StorageClasses the managed service creates itself."""


def platform_releases() -> list[HelmRelease]:
    """The upstream charts, in install order, with the values that fix the names the stack uses."""
    return [
        HelmRelease(
            key="cert-manager",
            repo_url="https://charts.jetstack.io",
            chart="cert-manager",
            version="v1.21.2",
            go_chart="github.com/cert-manager/cert-manager@v1.21.2/deploy/charts/cert-manager",
            release="cert-manager",
            namespace="cert-manager",
            values={
                "crds": {"enabled": True},
                # Gateway API support is off by default; the HTTP-01 solver routes through our Gateways.
                "config": {
                    "apiVersion": "controller.config.cert-manager.io/v1alpha1",
                    "kind": "ControllerConfiguration",
                    "enableGatewayAPI": True,
                },
                "prometheus": {"servicemonitor": {"enabled": True, "labels": {"release": PROMETHEUS_RELEASE}}},
            },
            why="issues the edge's TLS certificate (Certificate -> ClusterIssuer)",
        ),
        HelmRelease(
            key="external-secrets",
            repo_url="https://charts.external-secrets.io",
            chart="external-secrets",
            version="1.3.2",
            # The tag's chart source still says 1.3.1: the release tooling stamps the version it publishes.
            go_chart="github.com/external-secrets/external-secrets@v1.3.2/deploy/charts/external-secrets",
            go_crds="deploy/crds/bundle.yaml",
            release="external-secrets",
            namespace="external-secrets",
            values={"installCRDs": True},
            why="copies the Secrets of staging and prod from the secret store (ExternalSecret)",
        ),
        HelmRelease(
            key="kyverno",
            repo_url="https://kyverno.github.io/kyverno/",
            chart="kyverno",
            # Chart 3.8.2 is Kyverno v1.18.2, whose ClusterPolicy CRD is vendored (scripts/fetch_crds.py); 1.19
            # deprecates ClusterPolicy for ImageValidatingPolicy, a migration to make before upgrading.
            version="3.8.2",
            go_chart="github.com/kyverno/kyverno@v1.18.2/charts/kyverno",
            release="kyverno",
            namespace=KYVERNO_NAMESPACE,
            values={
                # Break glass (docs/operations.md): PolicyExceptions count only in Kyverno's own namespace,
                # which only cluster administrators write; off by default in the chart.
                "features": {"policyExceptions": {"enabled": True, "namespace": KYVERNO_NAMESPACE}},
                # The signed-images policy fails closed: one webhook pod down must not stop admissions.
                "admissionController": {"replicas": 3},
            },
            why="admits our images only when the release workflow signed them (ClusterPolicy "
            f"{IMAGE_POLICY_NAME}, in platform/)",
        ),
        HelmRelease(
            key="kube-prometheus-stack",
            repo_url="https://prometheus-community.github.io/helm-charts",
            chart="kube-prometheus-stack",
            version="77.0.0",
            release=PROMETHEUS_RELEASE,
            namespace=MONITORING_NAMESPACE,
            values={
                "fullnameOverride": PROMETHEUS_RELEASE,
                # Grafana's sidecar loads the dashboards from every namespace.
                "grafana": {"sidecar": {"dashboards": {"enabled": True, "searchNamespace": "ALL"}}},
                "prometheus": {
                    "prometheusSpec": {
                        # Only monitors labelled release: kube-prometheus-stack, from any namespace.
                        "serviceMonitorSelectorNilUsesHelmValues": True,
                        "podMonitorSelectorNilUsesHelmValues": True,
                        "probeSelectorNilUsesHelmValues": True,
                        "ruleSelectorNilUsesHelmValues": True,
                    }
                },
            },
            why="Prometheus, Alertmanager and Grafana; the CRDs of our monitors, Probes and rules",
        ),
        HelmRelease(
            key="envoy-gateway",
            repo_url="registry-1.docker.io/envoyproxy",
            chart="gateway-helm",
            version="v1.9.1",
            go_chart="github.com/envoyproxy/gateway@v1.9.1/charts/gateway-helm",
            release="envoy-gateway",
            namespace=ENVOY_GATEWAY_NAMESPACE,
            oci=True,
            why="the Gateway API CRDs and the controller that runs the edge's Envoy proxies",
        ),
        HelmRelease(
            key="blackbox-exporter",
            repo_url="https://prometheus-community.github.io/helm-charts",
            chart="prometheus-blackbox-exporter",
            version="11.3.1",
            release="blackbox-exporter",
            namespace=MONITORING_NAMESPACE,
            wave=-1,
            values={
                # Without it the chart names its Service blackbox-exporter-prometheus-blackbox-exporter.
                "fullnameOverride": BLACKBOX_FULLNAME,
                "service": {"port": BLACKBOX_PORT},
                "config": {
                    "modules": {
                        "http_2xx": {
                            "prober": "http",
                            "timeout": "5s",
                            "http": {
                                "valid_http_versions": ["HTTP/1.1", "HTTP/2.0"],
                                "follow_redirects": True,
                                "preferred_ip_protocol": "ip4",
                            },
                        },
                        # Not in the chart's default config: the Memgraph bolt port probe.
                        "tcp_connect": {"prober": "tcp", "timeout": "5s", "tcp": {"preferred_ip_protocol": "ip4"}},
                    }
                },
            },
            why="runs the Probes of /health, Chroma's heartbeat and Memgraph's bolt port",
        ),
        HelmRelease(
            key="prometheus-adapter",
            repo_url="https://prometheus-community.github.io/helm-charts",
            chart="prometheus-adapter",
            version="5.1.0",
            release="prometheus-adapter",
            namespace=MONITORING_NAMESPACE,
            wave=-1,
            values={
                "prometheus": {
                    "url": f"http://{PROMETHEUS_RELEASE}-prometheus.{MONITORING_NAMESPACE}.svc",
                    "port": 9090,
                },
                "rules": {
                    "default": False,
                    # Per pod, for a Pods metric of the HPA (custom.metrics.k8s.io).
                    "custom": prometheus_adapter_rules(),
                },
            },
            why=f"serves {IN_FLIGHT_METRIC} per pod to the query tier's HorizontalPodAutoscaler",
        ),
    ]


# ---------------------------------------------------------------- external prerequisites


class ExternalPrerequisite(Spec):
    """Something the stack or the platform uses that neither creates: installed by the cluster's operators."""

    kind: str
    """Kubernetes kind, or ``Cluster`` for a property of the cluster itself."""
    name: str
    """Its exact name (what the gate accepts)."""
    namespace: str | None = None
    pod_labels: dict[str, str] = Field(default_factory=dict)
    """For ``Pods``: the labels the stack's NetworkPolicies select them by."""
    why: str
    how: str
    """How to provide it (a command or a pointer)."""


DEFAULT_STORAGE_CLASS = "(cluster default)"
"""The name a PVC without ``storageClassName`` is checked against."""


def external_prerequisites(
    cluster: Cluster, provider: str, ingress_nginx_namespace: str | None = None
) -> list[ExternalPrerequisite]:
    """What the cluster must already have, for ``provider`` (generic, eks, gke, aks); with
    ``ingress_nginx_namespace``, the retired ingress-nginx controller an environment still routes through."""
    out = [
        ExternalPrerequisite(
            kind="Namespace",
            name="argocd",
            why="Argo CD syncs the platform and the environments",
            how="kubectl create namespace argocd && kubectl apply -n argocd --server-side -f "
            "https://raw.githubusercontent.com/argoproj/argo-cd/v2.14.21/manifests/install.yaml",
        ),
        ExternalPrerequisite(
            kind="Cluster",
            name="networkpolicy-enforcement",
            why="the default-deny and per-component NetworkPolicies of every environment",
            how="a CNI that enforces NetworkPolicy: Calico, Cilium, or the cloud's policy engine",
        ),
        ExternalPrerequisite(
            kind="Cluster",
            name="metrics-server",
            why="CPU and memory of the query tier's HorizontalPodAutoscaler (metrics.k8s.io)",
            how="managed clusters ship it (EKS: the metrics-server add-on); else helm upgrade --install "
            "metrics-server metrics-server --repo https://kubernetes-sigs.github.io/metrics-server -n kube-system",
        ),
        ExternalPrerequisite(
            kind="Cluster",
            name="stakater-reloader",
            why="rolls the workloads when a Secret they read changes (secret.reloader.stakater.com/reload), "
            f"with the {RELOAD_STRATEGY} strategy: it writes only {RELOADED_FROM_ANNOTATION} on the pod template, "
            "which each environment's Application ignores (any other strategy is reverted by self-heal)",
            how="helm upgrade --install reloader reloader --repo https://stakater.github.io/stakater-charts "
            f"-n reloader --create-namespace --set reloader.reloadStrategy={RELOAD_STRATEGY}",
        ),
        ExternalPrerequisite(
            kind="Pods",
            name="kube-dns",
            namespace="kube-system",
            pod_labels={"k8s-app": "kube-dns"},
            why="cluster DNS, allowed by every environment's dns NetworkPolicy",
            how="present on every distribution (CoreDNS keeps k8s-app: kube-dns)",
        ),
    ]
    if provider == "eks":
        out.append(
            ExternalPrerequisite(
                kind="Cluster",
                name="aws-ebs-csi-driver",
                why="the provisioner (ebs.csi.aws.com) of StorageClass gp3",
                how=f"aws eks create-addon --cluster-name {cluster.name} --addon-name aws-ebs-csi-driver "
                "--service-account-role-arn <role with AmazonEBSCSIDriverPolicy>",
            )
        )
    elif provider in PROVIDED_BY_CLOUD:
        out.append(
            ExternalPrerequisite(
                kind="StorageClass",
                name=PROVIDED_BY_CLOUD[provider],
                why="the data volumes' StorageClass",
                how=f"created by {provider.upper()} itself: kubectl get storageclass {PROVIDED_BY_CLOUD[provider]}",
            )
        )
    else:
        out.append(
            ExternalPrerequisite(
                kind="StorageClass",
                name=DEFAULT_STORAGE_CLASS,
                why="PVCs without storageClassName use the cluster's default StorageClass",
                how="kubectl get storageclass (one must be marked (default))",
            )
        )
    if ingress_nginx_namespace:
        out.append(
            ExternalPrerequisite(
                kind="Namespace",
                name=ingress_nginx_namespace,
                why="the retired ingress-nginx controller that an environment still routes through "
                "(edge.controller ingress-nginx, or the side-by-side migration)",
                how="the cluster's existing ingress-nginx install; the platform layer does not install a retired "
                "controller (docs/edge.md)",
            )
        )
    for store in cluster.secret_stores:
        out.append(
            ExternalPrerequisite(
                kind="ClusterSecretStore",
                name=store,
                why="the ExternalSecrets of the environments read their values from it",
                how="docs/secrets.md: a ClusterSecretStore with the provider's credentials "
                "(after External Secrets is installed)",
            )
        )
    return out


# ---------------------------------------------------------------- the cluster objects


class PlatformGateway(Spec):
    """A Gateway of an environment on this cluster: the HTTP-01 solver of the ClusterIssuers attaches to it."""

    name: str
    namespace: str
    section_name: str
    """Its plain-HTTP listener."""


class ClusterPlatformProps(Spec):
    cluster: Cluster
    provider: Literal["generic", "eks", "gke", "aks"]
    """The cloud profile of every environment on the cluster (they must agree)."""
    gateways: list[PlatformGateway] = Field(default_factory=list)
    """Gateways whose HTTP listener answers ACME HTTP-01 challenges."""
    acme_email: str | None = None
    """Let's Encrypt account e-mail (expiry notices); ``None``: no e-mail."""
    ingress_nginx_namespace: str | None = None
    """Where the retired ingress-nginx runs, when an environment on the cluster still uses it."""
    image_policy: ImagePolicyProps | None = None
    """Kyverno's signed-images ClusterPolicy for our images; ``None``: none (the chart is installed anyway)."""


class ClusterPlatform(cdk8s.Chart):
    """The cluster objects of the platform (``dist/argocd/<cluster>/platform/``)."""

    def __init__(self, scope: Construct, id: str, *, props: ClusterPlatformProps) -> None:
        super().__init__(scope, id, disable_resource_name_hashes=True)
        self.props = props
        self.releases = platform_releases()
        self.prerequisites = external_prerequisites(props.cluster, props.provider, props.ingress_nginx_namespace)
        labels = {"app.kubernetes.io/part-of": "platform", "app.kubernetes.io/managed-by": "cdk8s"}
        storage = STORAGE_CLASSES.get(props.provider)
        if storage is not None:
            k8s_storage_class(self, storage, labels)
        custom_resource(
            self,
            "EnvoyProxy",
            {
                "apiVersion": "gateway.envoyproxy.io/v1alpha1",
                "kind": "EnvoyProxy",
                "metadata": {"name": GATEWAY_CLASS, "namespace": ENVOY_GATEWAY_NAMESPACE, "labels": labels},
                "spec": {
                    "provider": {
                        "type": "Kubernetes",
                        "kubernetes": {"envoyDeployment": {"replicas": 2}},
                    },
                },
            },
        )
        custom_resource(
            self,
            "GatewayClass",
            {
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "GatewayClass",
                "metadata": {"name": GATEWAY_CLASS, "labels": labels},
                "spec": {
                    "controllerName": "gateway.envoyproxy.io/gatewayclass-controller",
                    "parametersRef": {
                        "group": "gateway.envoyproxy.io",
                        "kind": "EnvoyProxy",
                        "name": GATEWAY_CLASS,
                        "namespace": ENVOY_GATEWAY_NAMESPACE,
                    },
                },
            },
        )
        for issuer, server in CLUSTER_ISSUERS.items():
            acme: dict[str, Any] = {
                "server": server,
                "privateKeySecretRef": {"name": f"{issuer}-account"},
                "solvers": [
                    {
                        "http01": {
                            "gatewayHTTPRoute": {
                                "parentRefs": [
                                    {
                                        "group": "gateway.networking.k8s.io",
                                        "kind": "Gateway",
                                        "name": g.name,
                                        "namespace": g.namespace,
                                        "sectionName": g.section_name,
                                    }
                                    for g in props.gateways
                                ]
                            }
                        }
                    }
                ],
            }
            if props.acme_email:
                acme["email"] = props.acme_email
            custom_resource(
                self,
                f"Issuer-{issuer}",
                {
                    "apiVersion": "cert-manager.io/v1",
                    "kind": "ClusterIssuer",
                    "metadata": {"name": issuer, "labels": labels},
                    "spec": {"acme": acme},
                },
            )
        self.image_policy = (
            ImagePolicy(self, "ImagePolicy", props=props.image_policy, labels=labels) if props.image_policy else None
        )
        # The edge SLIs read the proxies' envoy_* series; Envoy Gateway ships no monitor for them.
        custom_resource(
            self,
            "PodMonitor",
            {
                "apiVersion": "monitoring.coreos.com/v1",
                "kind": "PodMonitor",
                "metadata": {
                    "name": "envoy-proxy",
                    "namespace": ENVOY_GATEWAY_NAMESPACE,
                    "labels": {**labels, "release": PROMETHEUS_RELEASE},
                },
                "spec": {
                    "selector": {"matchLabels": dict(ENVOY_PROXY_LABELS)},
                    "namespaceSelector": {"matchNames": [ENVOY_GATEWAY_NAMESPACE]},
                    "podMetricsEndpoints": [
                        {"port": "metrics", "path": "/stats/prometheus", "interval": "30s", "honorLabels": False}
                    ],
                },
            },
        )


def k8s_storage_class(scope: Construct, spec: Mapping[str, Any], labels: Mapping[str, str]) -> None:
    """A StorageClass that binds where the pod lands and can grow (a StatefulSet's zone is its volume's)."""
    k8s.KubeStorageClass(
        scope,
        f"StorageClass-{spec['name']}",
        metadata=k8s.ObjectMeta(name=spec["name"], labels=dict(labels)),
        provisioner=spec["provisioner"],
        parameters=dict(spec["parameters"]),
        reclaim_policy="Retain",
        volume_binding_mode="WaitForFirstConsumer",
        allow_volume_expansion=True,
    )


def install_command(release: HelmRelease) -> str:
    """The ``helm upgrade --install`` equivalent of the release's Application (without Argo CD)."""
    source = (
        f"oci://{release.repo_url}/{release.chart}" if release.oci else f"{release.chart} --repo {release.repo_url}"
    )
    return (
        f"helm upgrade --install {release.release} {source} --version {release.version} "
        f"-n {release.namespace} --create-namespace -f values-{release.key}.yaml"
    )


IN_CLUSTER = "https://kubernetes.default.svc"


def install_procedure(
    platform: ClusterPlatform,
    envs: Sequence[Environment],
    objects: Mapping[str, Mapping[str, Mapping[str, Any]]],
    *,
    bundle_present: bool,
) -> str:
    """``docs/environments/clusters/<cluster>/install.md``: the ordered install of one cluster, from its layer."""
    cluster = platform.props.cluster
    bundle = f"dist/argocd/{cluster.name}"
    lines = [
        f"<!-- Generated by app.py from {bundle}/ (kgstack.cluster_platform); do not edit. -->",
        f"# Installing cluster `{cluster.name}`",
        "",
        f"Environments: {', '.join(f'`{e.name}` (namespace `{e.namespace}`)' for e in envs)}. "
        f"API server: `{cluster.server}`. Cloud profile: `{platform.props.provider}`.",
        "Run each step with `kubectl` pointed at this cluster (`kubectl config current-context`), in order;",
        "each step waits for what the next one uses.",
        "",
        "## 1. External prerequisites",
        "",
        "Neither the platform layer nor the stack creates these; the synth gate accepts exactly these names.",
        "",
        "| kind | name | why | how |",
        "|---|---|---|---|",
    ]
    # The ClusterSecretStores need External Secrets' CRDs: they come after the charts (step 5).
    stores = [pre for pre in platform.prerequisites if pre.kind == "ClusterSecretStore"]
    for pre in platform.prerequisites:
        if pre in stores:
            continue
        where = f"{pre.namespace}/" if pre.namespace else ""
        labels = (
            f" (pods labelled {', '.join(f'{k}={v}' for k, v in pre.pod_labels.items())})" if pre.pod_labels else ""
        )
        lines.append(f"| {pre.kind} | `{where}{pre.name}`{labels} | {pre.why} | `{pre.how}` |")
    lines += ["", "## 2. Register the cluster in Argo CD", ""]
    if cluster.server == IN_CLUSTER:
        lines.append("Argo CD runs in this cluster (`https://kubernetes.default.svc`): nothing to register.")
    else:
        lines += [
            "From the Argo CD that manages it, with a kube context for this cluster:",
            "",
            "```sh",
            f"argocd cluster add <context of {cluster.name}> --name {cluster.name}",
            f"argocd cluster list | grep {cluster.server}",
            "```",
        ]
    lines += ["", "## 3. The platform charts, in this order", ""]
    if bundle_present:
        lines += [
            f"`kubectl apply -n argocd -f {bundle}/` creates every Application of the cluster (platform and",
            "environments); prod-stage Applications are synced by hand. Sync the charts in this order, each",
            "healthy before the next:",
            "",
        ]
    ordered = sorted(platform.releases, key=lambda r: r.wave)
    for n, release in enumerate(ordered, 1):
        app = f"{cluster.name}-{release.key}"
        lines += [
            f"{n}. **{release.chart} {release.version}** (release `{release.release}`, namespace "
            f"`{release.namespace}`): {release.why}.",
            "   ```sh",
            f"   argocd app sync {app} && argocd app wait {app} --health",
            "   ```",
            f"   Without Argo CD: `{install_command(release)}`, with the `valuesObject` of "
            f"`{bundle}/application-{app}.yaml` as `values-{release.key}.yaml`.",
        ]
    lines += [
        "",
        "## 4. The platform objects",
        "",
        f"StorageClasses, the GatewayClass and its EnvoyProxy, the ClusterIssuers, the Envoy PodMonitor and the "
        f"signed-images ClusterPolicy `{IMAGE_POLICY_NAME}` "
        f"(`{bundle}/platform/`):",
        "",
        "```sh",
        f"argocd app sync {cluster.name}-platform && argocd app wait {cluster.name}-platform --health",
        f"# without Argo CD: kubectl apply -k {bundle}/platform/",
        "```",
        "",
        "## 5. The secret stores",
        "",
    ]
    if stores:
        lines += [
            "External Secrets is installed now; create the ClusterSecretStores the environments read, with exactly "
            "these names (docs/secrets.md), and check each is Ready:",
            "",
            "```sh",
            *(
                f"kubectl get clustersecretstore {pre.name} -o jsonpath='{{.status.conditions[0].status}}'"
                for pre in stores
            ),
            "```",
        ]
    else:
        lines.append(
            "None: no environment on this cluster reads a ClusterSecretStore (dev creates its Secrets by hand)."
        )
    lines += [
        "",
        "## 6. The environments",
        "",
    ]
    for env in envs:
        gateways = [
            (o["metadata"]["name"], o["metadata"]["namespace"])
            for o in objects[env.name].values()
            if o["kind"] == "Gateway"
        ]
        lines += [
            f"### `{env.name}`",
            "",
            f"1. Its Secrets: the secret store's keys (staging, prod) or the Secrets by hand (dev): "
            f"[secrets.md](../../{env.name}/secrets.md).",
            f"2. Sync: `argocd app sync {env.instance} && argocd app wait {env.instance} --health` "
            f"(without Argo CD: `kubectl apply -k dist/{env.name}/`).",
        ]
        for name, namespace in gateways:
            lines += [
                f"3. Point DNS at the Gateway: read its address, then create a record `{env.domain}` -> that address "
                "(CNAME for a hostname, A/AAAA for an IP):",
                "   ```sh",
                f"   kubectl -n {namespace} wait gateway/{name} --for=condition=Programmed --timeout=10m",
                f"   kubectl -n {namespace} get gateway {name} -o jsonpath='{{.status.addresses[0].value}}'",
                "   ```",
                f"4. Once DNS resolves, the certificate is issued: `kubectl -n {env.placement.namespace} wait "
                "certificate --all "
                f"--for=condition=Ready --timeout=15m`; then `curl -fsS https://{env.domain}/` answers.",
            ]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def by_cluster(names: Iterable[tuple[str, Cluster]]) -> dict[str, list[str]]:
    """Cluster name -> the environments on it, sorted."""
    out: dict[str, list[str]] = {}
    for env, cluster in names:
        out.setdefault(cluster.name, []).append(env)
    return {name: sorted(envs) for name, envs in sorted(out.items())}
