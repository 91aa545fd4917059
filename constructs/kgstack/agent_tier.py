"""One tier of the agent API: Deployment, Service, PodDisruptionBudget, optional HPA and PVC.

The app keeps indexing and workflow state in process memory, so the stack runs
two tiers from one image (see docs/agent.md): a ``query`` tier that scales
horizontally and a single ``indexer`` that owns ``/api/v1/index*`` and
``/api/v1/workflows*`` and keeps its state on a PersistentVolumeClaim.

Both start the app through our runtime layer (``python -m kga_runtime``, see
docker/agent/runtime). Its side server answers on a second port from a thread,
so health does not wait for the app's event loop, which synchronous work blocks:
startup and liveness ask ``/livez`` (fails only for a wedged loop), readiness
asks ``/readyz`` (fails for a saturated or lagging pod), and Prometheus scrapes
``/metrics``. The query tier's HPA scales on ``kga_http_requests_in_flight``,
which rises while pods wait on the LLM and CPU stays idle.
"""

from __future__ import annotations

from typing import Annotated, Any, Self

from constructs import Construct
from pydantic import Field, model_validator

from ._plus import int_or_string, k8s, quantity
from .agent_config import APP_SETTINGS_FILE, HTTP_PORT, LAUNCHER, LIVE_PATH, READY_PATH, RUNTIME_PORT, AgentConfig
from .agent_secrets import reload_on
from .connections import Endpoint, expose
from .disruption_budget import disruption_budget
from .footprint import Footprint
from .model import Autoscaling, Disruption, ImageRef, Resources, Spec
from .naming import Identity, object_meta
from .pod_security import checkov_skips, hardened_container, pod_security_context, unpinned_skip
from .quantity import Quantity, parse_quantity
from .scheduling import (
    SURGE,
    apart_from_other_zonal_state,
    recreate,
    rolling_update,
    zonal_state_labels,
    zone_and_node_spread,
)
from .validation import add_check

HEALTH_PATH = "/health"
"""``/health`` is 200 when settings load; ``/api/v1/health`` is always 200 and never a probe. The runtime
layer's ``/readyz`` requires a recent pass of it; blackbox probes ask it through the Service."""

IN_FLIGHT_METRIC = "kga_http_requests_in_flight"
"""The runtime layer's gauge of requests a pod is serving; the query tier's HPA reads it per pod through the
custom metrics API (:func:`prometheus_adapter_rules`)."""


def prometheus_adapter_rules() -> list[dict[str, Any]]:
    """The prometheus-adapter rule that serves :data:`IN_FLIGHT_METRIC` as a Pods metric to the HPA.

    Put it under the adapter's ``rules.custom`` (chart value) or its ``config.yaml`` ``rules:``. The series
    carry the ``namespace`` and ``pod`` labels the prometheus-operator adds to every ServiceMonitor target,
    which the adapter maps to the Kubernetes objects the HPA asks about."""
    return [
        {
            "seriesQuery": f'{IN_FLIGHT_METRIC}{{namespace!="",pod!=""}}',
            "resources": {"overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}},
            "name": {"matches": f"^{IN_FLIGHT_METRIC}$", "as": IN_FLIGHT_METRIC},
            "metricsQuery": "sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)",
        }
    ]


DATA_DIR = "/data"
"""The app's working directory: ``temp_repo/``, ``indexed_commits.json``, ``logs/``..."""


class PersistentState(Spec):
    """A PVC mounted as the working directory, so indexing state survives restarts."""

    size: Quantity
    """Requested capacity."""
    storage_class: str | None = None
    """StorageClass; ``None`` uses the cluster default."""


PRE_STOP_SECONDS = 10
"""Default delay before SIGTERM, so endpoints and the edge stop routing to the pod first."""


class AgentTierProps(Spec):
    identity: Identity
    """Release identity with the tier as component (``query``, ``indexer``)."""
    namespace: str
    image: ImageRef
    service_account: str
    """ServiceAccount name; it must not automount a token."""
    resources: Resources
    replicas: Annotated[int, Field(ge=1)] = 1
    """Fixed size; ignored when ``autoscaling`` is set (the HPA owns the count)."""
    autoscaling: Autoscaling | None = None
    """HPA bounds; ``None`` runs exactly ``replicas`` pods."""
    disruption: Disruption = Disruption()
    termination_grace_seconds: Annotated[int, Field(ge=10)] = 90
    """Time for in-flight work after SIGTERM, including the pre-stop delay."""
    pre_stop_seconds: Annotated[int, Field(ge=0, le=60)] = PRE_STOP_SECONDS
    """Delay before SIGTERM so endpoints and the ingress stop routing first."""
    state: PersistentState | None = None
    """Working directory on a PVC; ``None`` uses an emptyDir of ``scratch_size``."""
    scratch_size: Quantity = "2Gi"
    """emptyDir size limit for the working directory when there is no ``state``."""
    pod_labels: dict[str, str] = Field(default_factory=dict)
    """Extra pod labels, e.g. the AKS workload-identity opt-in."""
    reload_secrets: list[str] = Field(default_factory=list)
    """Secrets whose change rolls the pods (Stakater Reloader reads the annotation)."""
    loop_block_seconds: Annotated[int, Field(ge=1)] | None = None
    """Longest the app's event loop may block on legitimate work on this tier: the indexer runs a whole
    workflow inside its single uvicorn worker. Raises the runtime's liveness stall, readiness loop-lag and
    health-age limits to it, so a busy indexer is neither restarted nor taken out of its Service (the
    blackbox probe then checks its API port over TCP). ``None``: the limits of ``agent.runtime``."""

    @model_validator(mode="after")
    def _grace_covers_pre_stop(self) -> Self:
        if self.termination_grace_seconds <= self.pre_stop_seconds:
            raise ValueError(
                f"terminationGraceSeconds ({self.termination_grace_seconds}) must exceed "
                f"preStopSeconds ({self.pre_stop_seconds})"
            )
        if self.state is not None and self.autoscaling is not None:
            raise ValueError("a tier with state (a ReadWriteOnce PVC) cannot autoscale")
        return self

    @property
    def min_replicas(self) -> int:
        return self.autoscaling.min_replicas if self.autoscaling else self.replicas

    @property
    def max_replicas(self) -> int:
        return self.autoscaling.max_replicas if self.autoscaling else self.replicas


class AgentTier(Construct):
    """A hardened Deployment of the agent image with its Service and disruption policy."""

    def __init__(self, scope: Construct, id: str, *, config: AgentConfig, props: AgentTierProps) -> None:
        super().__init__(scope, id)
        self.props = props
        self.name = props.identity.resource_name
        selector = k8s.LabelSelector(match_labels=props.identity.selector)

        if props.state is not None:
            k8s.KubePersistentVolumeClaim(
                self,
                "State",
                # Neither a prune (the claim renamed or dropped from dist/: Prune=false) nor deleting the
                # Application (Delete=false) may delete indexing state; Argo CD reads the two separately.
                metadata=object_meta(
                    props.identity,
                    props.namespace,
                    annotations={
                        "argocd.argoproj.io/sync-options": "Prune=false,Delete=false",
                        "kustomize.toolkit.fluxcd.io/prune": "disabled",
                    },
                ),
                spec=k8s.PersistentVolumeClaimSpec(
                    access_modes=["ReadWriteOnce"],
                    storage_class_name=props.state.storage_class,
                    resources=k8s.ResourceRequirements(requests={"storage": quantity(props.state.size)}),
                ),
            )

        k8s.KubeDeployment(
            self,
            "Deployment",
            metadata=object_meta(
                props.identity,
                props.namespace,
                annotations={
                    **reload_on(props.reload_secrets),
                    **checkov_skips(
                        CKV_K8S_35="the agent reads its credentials only from environment variables (docs/agent.md)",
                        **unpinned_skip(props.image),
                    ),
                },
            ),
            spec=k8s.DeploymentSpec(
                # With an HPA, replicas are left out so GitOps sync never fights the HPA.
                replicas=None if props.autoscaling else props.replicas,
                revision_history_limit=5,
                selector=selector,
                strategy=rolling_update() if props.state is None else recreate(),
                template=self._pod_template(config),
            ),
        )
        expose(self, props.identity, props.namespace, [self.endpoint, self.runtime_endpoint])
        config.connect(self.endpoint.peer)  # its stores and the internet: the config points it there
        disruption_budget(self, props.identity, props.namespace, props.disruption)
        if props.autoscaling is not None:
            self._autoscaler(props.autoscaling)
        add_check(self, self._budget_problems)

    @property
    def endpoint(self) -> Endpoint:
        """The API port. ``/health`` is the app's only honest health path (docs/agent.md), except on a tier
        whose loop blocks for a whole run (``loopBlockSeconds``): a blackbox probe then checks the port."""
        p = self.props
        return Endpoint.serving(
            p.identity, p.namespace, HTTP_PORT, "http", health_path=None if p.loop_block_seconds else HEALTH_PATH
        )

    @property
    def runtime_endpoint(self) -> Endpoint:
        """The runtime layer's side port: ``/livez`` (its health path), ``/readyz`` and ``/metrics``."""
        p = self.props
        return Endpoint.serving(p.identity, p.namespace, RUNTIME_PORT, "runtime", health_path=LIVE_PATH)

    def runtime_env(self, config: AgentConfig) -> list[k8s.EnvVar]:
        """The tier's own runtime variables: the side port, and on a tier whose loop blocks for a whole run
        the limits raised to it (a container's ``env`` wins over the shared ConfigMap's ``envFrom``)."""
        p, r = self.props, config.props.settings.runtime
        env = {"KGA_RUNTIME_PORT": str(self.runtime_endpoint.port)}
        if p.loop_block_seconds:
            env |= {
                "KGA_LIVENESS_STALL_SECONDS": str(max(r.liveness_stall_seconds, p.loop_block_seconds)),
                "KGA_READY_HEALTH_MAX_AGE_SECONDS": str(max(r.ready_health_max_age_seconds, p.loop_block_seconds)),
                "KGA_READY_MAX_LOOP_LAG_SECONDS": str(p.loop_block_seconds),
            }
        return [k8s.EnvVar(name=name, value=value) for name, value in env.items()]

    def _pod_template(self, config: AgentConfig) -> k8s.PodTemplateSpec:
        p = self.props
        runtime = self.runtime_endpoint
        port = int_or_string(runtime.port_name)
        # Served by the runtime's thread: a loop busy with an answer (or an indexing run) is not a dead process.
        live = k8s.HttpGetAction(path=runtime.health_path, port=port)
        ready = k8s.HttpGetAction(path=READY_PATH, port=port)
        data_volume = (
            k8s.Volume(name="data", persistent_volume_claim=k8s.PersistentVolumeClaimVolumeSource(claim_name=self.name))
            if p.state is not None
            else k8s.Volume(name="data", empty_dir=k8s.EmptyDirVolumeSource(size_limit=quantity(p.scratch_size)))
        )
        container = hardened_container(
            name="agent",
            image=p.image.reference,
            resources=p.resources,
            ports=[self.endpoint.container_port(), runtime.container_port()],
            # Args, not command: the image's entrypoint (tini) stays PID 1 and reaps git's children.
            # Run from the data volume: the app writes its files relative to the cwd.
            args=LAUNCHER,
            working_dir=DATA_DIR,
            env_from=[k8s.EnvFromSource(config_map_ref=k8s.ConfigMapEnvSource(name=config.name))],
            env=[*self.runtime_env(config), *config.secret_env()],
            # Up to 3 min for the launcher to import the app (langchain, chromadb) and start the side server.
            startup_probe=k8s.Probe(http_get=live, period_seconds=5, timeout_seconds=3, failure_threshold=36),
            # Two misses (10 s) take a saturated pod out of rotation; one pass brings it back.
            readiness_probe=k8s.Probe(http_get=ready, period_seconds=5, timeout_seconds=3, failure_threshold=2),
            # /livez itself waits for a stall of livenessStallSeconds; three misses on top avoid a blip restart.
            liveness_probe=k8s.Probe(http_get=live, period_seconds=20, timeout_seconds=5, failure_threshold=3),
            lifecycle=k8s.Lifecycle(
                pre_stop=k8s.LifecycleHandler(exec=k8s.ExecAction(command=["sleep", str(p.pre_stop_seconds)]))
            )
            if p.pre_stop_seconds
            else None,
            mounts=[
                k8s.VolumeMount(name="data", mount_path=DATA_DIR),
                k8s.VolumeMount(
                    name="config",
                    mount_path=f"{DATA_DIR}/{APP_SETTINGS_FILE}",
                    sub_path=APP_SETTINGS_FILE,
                    read_only=True,
                ),
            ],
        )
        return k8s.PodTemplateSpec(
            metadata=k8s.ObjectMeta(
                labels={**p.identity.labels, **p.pod_labels, **(zonal_state_labels() if p.state else {})},
                annotations=config.pod_annotations,
            ),
            spec=k8s.PodSpec(
                service_account_name=p.service_account,
                automount_service_account_token=False,
                enable_service_links=False,
                termination_grace_period_seconds=p.termination_grace_seconds,
                security_context=pod_security_context(),
                topology_spread_constraints=zone_and_node_spread(p.identity),
                affinity=self._affinity(),
                containers=[container],
                volumes=[
                    data_volume,
                    k8s.Volume(
                        name="config",
                        config_map=k8s.ConfigMapVolumeSource(
                            name=config.name,
                            items=[k8s.KeyToPath(key=APP_SETTINGS_FILE, path=APP_SETTINGS_FILE)],
                        ),
                    ),
                    k8s.Volume(name="tmp", empty_dir=k8s.EmptyDirVolumeSource(size_limit=quantity("1Gi"))),
                ],
            ),
        )

    def _affinity(self) -> k8s.Affinity | None:
        # Recreate (not a self-affinity) keeps a stateful replacement off the old node's volume race.
        return None if self.props.state is None else apart_from_other_zonal_state(self.props.identity)

    def _autoscaler(self, a: Autoscaling) -> None:
        def utilization(resource: str, percent: int) -> k8s.MetricSpecV2:
            return k8s.MetricSpecV2(
                type="Resource",
                resource=k8s.ResourceMetricSourceV2(
                    name=resource,
                    target=k8s.MetricTargetV2(type="Utilization", average_utilization=percent),
                ),
            )

        k8s.KubeHorizontalPodAutoscalerV2(
            self,
            "Autoscaler",
            metadata=object_meta(self.props.identity, self.props.namespace),
            spec=k8s.HorizontalPodAutoscalerSpecV2(
                scale_target_ref=k8s.CrossVersionObjectReferenceV2(
                    api_version="apps/v1", kind="Deployment", name=self.name
                ),
                min_replicas=a.min_replicas,
                max_replicas=a.max_replicas,
                metrics=[
                    # Requests waiting on the LLM hold a pod busy while its CPU idles.
                    k8s.MetricSpecV2(
                        type="Pods",
                        pods=k8s.PodsMetricSourceV2(
                            metric=k8s.MetricIdentifierV2(name=IN_FLIGHT_METRIC),
                            target=k8s.MetricTargetV2(type="AverageValue", average_value=quantity(a.target_in_flight)),
                        ),
                    ),
                    utilization("cpu", a.target_cpu_utilization),
                ],
                behavior=k8s.HorizontalPodAutoscalerBehaviorV2(
                    scale_up=k8s.HpaScalingRulesV2(
                        stabilization_window_seconds=0,
                        select_policy="Max",
                        policies=[
                            k8s.HpaScalingPolicyV2(type="Percent", value=100, period_seconds=60),
                            k8s.HpaScalingPolicyV2(type="Pods", value=2, period_seconds=60),
                        ],
                    ),
                    # One pod a minute: a removed pod may still be finishing an LLM answer.
                    scale_down=k8s.HpaScalingRulesV2(
                        stabilization_window_seconds=a.scale_down_stabilization_seconds,
                        select_policy="Min",
                        policies=[k8s.HpaScalingPolicyV2(type="Pods", value=1, period_seconds=60)],
                    ),
                ),
            ),
        )

    def _budget_problems(self) -> list[str]:
        p = self.props
        allowed = p.disruption.allowed_disruptions(p.min_replicas)
        if allowed >= 1:
            return []
        return [
            f"PodDisruptionBudget/{self.name} allows {allowed} voluntary disruptions at the "
            f"minimum scale of {p.min_replicas} (Deployment/{self.name}); node drains would "
            "block. Lower disruption.minAvailable or raise the minimum replicas."
        ]

    def footprint(self) -> Footprint:
        p = self.props
        return Footprint(
            resource=f"Deployment/{self.name}",
            max_pods=p.max_replicas,
            # Recreate (a tier with state) never runs old and new pods side by side.
            surge=SURGE if p.state is None else 0,
            pod_resources=(p.resources,),
            storage=parse_quantity(p.state.size) if p.state else parse_quantity("0"),
            claims=1 if p.state else 0,
        )
