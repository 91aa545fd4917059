"""Scheduled re-indexing: a CronJob that asks the indexer to re-index the configured repositories.

Each repository goes through ``POST /api/v1/index/repository`` with
``"incremental": true``: the app then indexes only commits missing from
``indexed_commits.json`` on the indexer's volume. (``POST /api/v1/index`` always
runs a full index and adds every chunk again, so it is never used.) The Job runs
:mod:`kgstack.reindex_client` with the agent image's Python, from inside the
cluster, straight to the indexer's Service: the only tier that owns indexing and
workflow state. It has its own ServiceAccount (no token) and its own component
label, which is the identity the network policy admits to the indexer's port.
Off when ``schedule`` is unset.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from constructs import Construct
from pydantic import AfterValidator, Field

from ._plus import k8s, quantity
from .agent_config import APP_SETTINGS_FILE
from .connections import Connections, Endpoint
from .footprint import Footprint
from .jobs import cron_job_spec, run_once_pod
from .model import ImageRef, Resources, Spec
from .naming import Identity, object_meta
from .network_policies import ComponentPeer
from .pod_security import checkov_skips, hardened_container, unpinned_skip

CLIENT = Path(__file__).with_name("reindex_client.py")
"""The script the Job runs, shipped in a ConfigMap (standard library only)."""
SCRIPT_DIR = "/reindex"
SETTINGS_DIR = "/reindex-settings"
"""Where the agent ConfigMap's ``appSettings.json`` is mounted: the repositories the app itself reads."""

_RESOURCES = Resources.model_validate(
    {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "200m", "memory": "128Mi"}}
)
_CRON_FIELD = r"(\*|\d+(-\d+)?)(/\d+)?(,(\*|\d+(-\d+)?)(/\d+)?)*"
_CRON_RANGES = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 7))
_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _cron_values(field: str, low: int, high: int) -> set[int]:
    """The values one cron field selects; ValueError names a number outside ``low..high`` or an empty range."""
    values: set[int] = set()
    for part in field.split(","):
        span, _, step = part.partition("/")
        first, _, last = span.partition("-")
        start, end = (low, high) if span == "*" else (int(first), int(last or first))
        if not low <= start <= end <= high:
            raise ValueError(f"{span} is outside {low}-{high}" if start <= end else f"{span} is an empty range")
        if step and int(step) == 0:
            raise ValueError(f"step /{step} must be at least 1")
        values.update(range(start, end + 1, int(step or 1)))
    return values


def _cron(value: str) -> str:
    if not re.fullmatch(rf"{_CRON_FIELD}( {_CRON_FIELD}){{4}}", value):
        raise ValueError(f"{value!r} is not a five-field cron schedule (e.g. '30 3 * * *')")
    # A schedule that parses can still mean nothing: minute 75 (the API server refuses the CronJob), or
    # the 31st of February (accepted, and never runs).
    fields = value.split()
    selected = []
    for field, (name, low, high) in zip(fields, _CRON_RANGES, strict=True):
        try:
            selected.append(_cron_values(field, low, high))
        except ValueError as exc:
            raise ValueError(f"{value!r}: {name} {exc}") from None
    days, months = selected[2], selected[3]
    if fields[4] == "*" and min(days) > max(_DAYS_IN_MONTH[m - 1] for m in months):
        raise ValueError(f"{value!r} never runs: no month it names has day {min(days)}")
    return value


class ReindexSettings(Spec):
    """Scheduled re-indexing of ``repositories`` through the indexer's API."""

    schedule: Annotated[str, AfterValidator(_cron)] | None = None
    """Cron schedule in UTC (e.g. ``30 3 * * *``); unset: no CronJob."""
    poll_seconds: Annotated[int, Field(ge=5, le=600)] = 30
    """Pause between workflow status checks."""
    resources: Resources = _RESOURCES
    """Requests and limits of the client container (it only waits on HTTP)."""


class ReindexScheduleProps(Spec):
    identity: Identity
    """Release identity with component ``reindex``."""
    namespace: str
    settings: ReindexSettings
    image: ImageRef
    """The agent image: its Python runs the client."""
    indexer: Endpoint
    """The indexer's API; the job's only connection (declared here, so the policies allow exactly it)."""
    app_settings: str
    """The agent's ConfigMap, whose ``appSettings.json`` lists the repositories to re-index."""
    repositories: Annotated[int, Field(ge=1)]
    """How many repositories it lists: they run one after another, each within ``timeoutSeconds``."""
    timeout_seconds: Annotated[int, Field(ge=60)]
    """Longest wait for one repository's workflow; the app's ``WORKFLOW_TIMEOUT_SECONDS`` plus a margin."""
    pod_labels: dict[str, str] = Field(default_factory=dict)


class ReindexSchedule(Construct):
    """ServiceAccount, ConfigMap and CronJob ``<release>-reindex``."""

    def __init__(self, scope: Construct, id: str, *, props: ReindexScheduleProps) -> None:
        super().__init__(scope, id)
        Connections.of(self).allow(
            ComponentPeer(component=props.identity.component),
            props.indexer,
            purpose="scheduled re-indexing calls the indexer",
        )
        self.props = props
        self.name = props.identity.resource_name
        ns, identity = props.namespace, props.identity
        k8s.KubeServiceAccount(
            self, "ServiceAccount", metadata=object_meta(identity, ns), automount_service_account_token=False
        )
        k8s.KubeConfigMap(
            self, "Script", metadata=object_meta(identity, ns), data={CLIENT.name: CLIENT.read_text(encoding="utf-8")}
        )
        container = hardened_container(
            name="reindex",
            image=props.image.reference,
            resources=props.settings.resources,
            args=["python", f"{SCRIPT_DIR}/{CLIENT.name}"],
            env=[
                k8s.EnvVar(name="KGA_INDEXER_URL", value=props.indexer.url("http")),
                k8s.EnvVar(name="KGA_APP_SETTINGS", value=f"{SETTINGS_DIR}/{APP_SETTINGS_FILE}"),
                k8s.EnvVar(name="KGA_POLL_SECONDS", value=str(props.settings.poll_seconds)),
                k8s.EnvVar(name="KGA_TIMEOUT_SECONDS", value=str(props.timeout_seconds)),
            ],
            mounts=[
                k8s.VolumeMount(name="script", mount_path=SCRIPT_DIR, read_only=True),
                k8s.VolumeMount(name="settings", mount_path=SETTINGS_DIR, read_only=True),
            ],
        )
        k8s.KubeCronJob(
            self,
            "CronJob",
            metadata=object_meta(identity, ns, annotations=checkov_skips(**unpinned_skip(props.image))),
            # Forbid (cron_job_spec): a second batch would queue duplicate workflows for the same repositories.
            spec=cron_job_spec(
                schedule=props.settings.schedule or "",
                labels=identity.labels,
                job=k8s.JobSpec(
                    # No retry: a failed run alerts (KgaReindexFailed); the next schedule picks up the rest.
                    backoff_limit=0,
                    active_deadline_seconds=props.repositories * props.timeout_seconds + 300,
                    ttl_seconds_after_finished=86400,
                    template=k8s.PodTemplateSpec(
                        metadata=k8s.ObjectMeta(labels={**identity.labels, **props.pod_labels}),
                        spec=run_once_pod(
                            service_account=self.name,
                            container=container,
                            volumes=[
                                k8s.Volume(name="script", config_map=k8s.ConfigMapVolumeSource(name=self.name)),
                                k8s.Volume(
                                    name="settings",
                                    config_map=k8s.ConfigMapVolumeSource(
                                        name=props.app_settings,
                                        items=[k8s.KeyToPath(key=APP_SETTINGS_FILE, path=APP_SETTINGS_FILE)],
                                    ),
                                ),
                                k8s.Volume(name="tmp", empty_dir=k8s.EmptyDirVolumeSource(size_limit=quantity("16Mi"))),
                            ],
                        ),
                    ),
                ),
            ),
        )

    def footprint(self) -> Footprint:
        return Footprint(
            resource=f"CronJob/{self.name}", max_pods=1, surge=0, pod_resources=(self.props.settings.resources,)
        )
