"""The web UI: the app's static index.html on unprivileged nginx (image built from docker/web/).

The image listens on 8080, writes only under /tmp (docker/web/nginx.conf puts
the pid file and every temp path there) and answers ``/healthz``. The API base
URL is injected by mounting ``config.js`` from a ConfigMap over the image's
default; the image's nginx loads it before the page's inline scripts.
"""

from __future__ import annotations

import json
from typing import Annotated

from constructs import Construct
from pydantic import Field

from ._plus import int_or_string, k8s, quantity
from .connections import Endpoint, expose
from .disruption_budget import disruption_budget
from .footprint import Footprint
from .model import Disruption, ImageRef, Resources, Spec
from .naming import Identity, object_meta
from .pod_security import RUNTIME_UID, checkov_skips, hardened_container, pod_security_context, unpinned_skip
from .scheduling import SURGE, rolling_update, rolls_on, zone_and_node_spread

PORT = 8080
HTML_ROOT = "/usr/share/nginx/html"
CONFIG_FILE = "config.js"
HEALTH_PATH = "/healthz"

DEFAULT_RESOURCES = Resources.model_validate(
    {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "200m", "memory": "64Mi"}}
)


class WebUiProps(Spec):
    identity: Identity
    """Release identity with component ``web``."""
    namespace: str
    image: ImageRef
    """The web image (docker/web/), based on nginxinc/nginx-unprivileged."""
    api_base_url: str
    """``window.API_BASE_URL``: ``https://<domain>/api/v1`` (same origin as the UI)."""
    resources: Resources = DEFAULT_RESOURCES
    replicas: Annotated[int, Field(ge=1)] = 2
    """Static files: two replicas keep the UI up through a node drain."""
    disruption: Disruption = Disruption()
    run_as_user: Annotated[int, Field(ge=1)] = RUNTIME_UID
    """Any non-root UID works: the image's files are world-readable and nginx writes only to emptyDirs."""
    pod_labels: dict[str, str] = Field(default_factory=dict)


class WebUi(Construct):
    """Deployment, Service, PodDisruptionBudget and the ``config.js`` ConfigMap of the UI."""

    def __init__(self, scope: Construct, id: str, *, props: WebUiProps) -> None:
        super().__init__(scope, id)
        self.props = props
        self.name = props.identity.resource_name
        self.config_js = f"window.API_BASE_URL = {json.dumps(props.api_base_url)};\n"
        meta = object_meta(props.identity, props.namespace)
        selector = k8s.LabelSelector(match_labels=props.identity.selector)

        k8s.KubeConfigMap(self, "Config", metadata=meta, data={CONFIG_FILE: self.config_js})

        probe = k8s.HttpGetAction(path=HEALTH_PATH, port=int_or_string("http"))
        container = hardened_container(
            name="web",
            image=props.image.reference,
            resources=props.resources,
            ports=[self.endpoint.container_port()],
            mounts=[
                # subPath: the rest of the html root stays the image's. A subPath mount never
                # updates in place, so the pod template carries the file's checksum instead.
                k8s.VolumeMount(
                    name="config", mount_path=f"{HTML_ROOT}/{CONFIG_FILE}", sub_path=CONFIG_FILE, read_only=True
                ),
                # nginx's compiled-in cache paths; docker/web/nginx.conf moves the rest to /tmp.
                k8s.VolumeMount(name="cache", mount_path="/var/cache/nginx"),
            ],
            readiness_probe=k8s.Probe(http_get=probe, period_seconds=10, timeout_seconds=2, failure_threshold=3),
            liveness_probe=k8s.Probe(http_get=probe, period_seconds=20, timeout_seconds=2, failure_threshold=3),
            lifecycle=k8s.Lifecycle(
                pre_stop=k8s.LifecycleHandler(
                    # Let the ingress drop the endpoint before nginx stops accepting.
                    exec=k8s.ExecAction(command=["sleep", "5"]),
                )
            ),
        )
        k8s.KubeDeployment(
            self,
            "Deployment",
            metadata=object_meta(
                props.identity, props.namespace, annotations=checkov_skips(**unpinned_skip(props.image))
            ),
            spec=k8s.DeploymentSpec(
                replicas=props.replicas,
                revision_history_limit=5,
                selector=selector,
                strategy=rolling_update(),
                template=k8s.PodTemplateSpec(
                    metadata=k8s.ObjectMeta(
                        labels={**props.identity.labels, **props.pod_labels},
                        annotations=rolls_on(self.config_js),
                    ),
                    spec=k8s.PodSpec(
                        automount_service_account_token=False,
                        enable_service_links=False,
                        termination_grace_period_seconds=30,
                        security_context=pod_security_context(props.run_as_user),
                        topology_spread_constraints=zone_and_node_spread(props.identity),
                        containers=[container],
                        volumes=[
                            k8s.Volume(
                                name="config",
                                config_map=k8s.ConfigMapVolumeSource(
                                    name=self.name, items=[k8s.KeyToPath(key=CONFIG_FILE, path=CONFIG_FILE)]
                                ),
                            ),
                            k8s.Volume(name="cache", empty_dir=k8s.EmptyDirVolumeSource(size_limit=quantity("16Mi"))),
                            k8s.Volume(name="tmp", empty_dir=k8s.EmptyDirVolumeSource(size_limit=quantity("64Mi"))),
                        ],
                    ),
                ),
            ),
        )
        expose(self, props.identity, props.namespace, [self.endpoint])
        disruption_budget(self, props.identity, props.namespace, props.disruption)

    @property
    def endpoint(self) -> Endpoint:
        """nginx serving the UI; ``/healthz`` answers without touching the app."""
        p = self.props
        return Endpoint.serving(p.identity, p.namespace, PORT, "http", health_path=HEALTH_PATH)

    def footprint(self) -> Footprint:
        return Footprint(
            resource=f"Deployment/{self.name}",
            max_pods=self.props.replicas,
            surge=SURGE,
            pod_resources=(self.props.resources,),
        )
