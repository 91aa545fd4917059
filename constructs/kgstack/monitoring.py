"""Monitoring and alerting of one environment, as prometheus-operator custom resources.

The app exposes no ``/metrics`` (see docs/agent.md); the golden signals come
from what the cluster already measures, and from our runtime layer's ``/metrics``
on each agent tier's side port:

* the edge's per-route request counts by response class and latency histograms
  (the SLIs): Envoy's cluster stats as Envoy Gateway's proxies export them, one
  cluster per HTTPRoute rule (``httproute/<ns>/<route>/rule/<n>``); the retired
  ingress-nginx controller's counters when an environment still runs it;
* kube-state-metrics, kubelet and cAdvisor (restarts, HPA, volumes, backups);
* the Redis exporter sidecar (the only store with a Prometheus endpoint);
* blackbox probes of ``/health`` through the query and indexer Services, of
  Chroma's heartbeat and of Memgraph's bolt port;
* cert-manager's certificate metrics.

Every object is a plain mapping added with :func:`kgstack.custom_resource.custom_resource`
and validated at synth, strictly, against the vendored prometheus-operator CRDs
(``kgstack.schema``): a misspelt field fails synth without importing 60k lines of models. The rules are plain data
(:func:`recording_rules`, :func:`alerts`) so the tests can run them through
``promtool``; docs/observability.md explains the choices.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Self

from constructs import Construct
from pydantic import Field, model_validator

from .cluster_platform import BLACKBOX_PROBER
from .connections import Connections, Endpoint
from .custom_resource import custom_resource
from .jobs import BACKUP_PERIOD_SECONDS, STARTING_DEADLINE_SECONDS
from .model import Spec
from .naming import Identity
from .network_policies import NamespacePeer

Obj = dict[str, Any]
"""A custom resource, or part of one, as plain data (checked against its CRD at synth)."""

ENVOY_DEFAULT_BUCKETS = (
    *(0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5),
    *(1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0),
)
"""Envoy's default histogram buckets, in seconds (Envoy writes ``le`` in milliseconds)."""
EdgeController = Literal["gateway-api", "ingress-nginx"]

SLI_WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
"""Rate windows recorded for the multi-window, multi-burn-rate alerts."""

BURN_RATES: dict[str, tuple[tuple[float, str, str], ...]] = {
    # severity: (burn-rate factor, long window, short window), as in the SRE workbook, ch. 5.
    "critical": ((14.4, "1h", "5m"), (6.0, "6h", "30m")),
    "warning": ((3.0, "1d", "2h"), (1.0, "3d", "6h")),
}
BURN_FOR = {"critical": "2m", "warning": "15m"}
INDEXER_WINDOWS = ("5m", "30m")
INDEXER_MIN_REQUESTS = 10
"""Indexer requests in 30 minutes before its error ratio means anything."""
INDEXER_ERROR_RATIO = 0.5
"""Share of the indexer route's requests failing over 30 minutes (and 5) that warns, for at least as long
as an index run may block the indexer (``index_run_seconds``)."""

EDGE_5XX_RATIO = 0.05
"""Edge 5xx ratio over 5 minutes that warns even before the budget burns."""
BACKUP_MAX_AGE_HOURS = 26
"""A daily backup plus two hours of slack."""
CERT_MIN_DAYS = 14
REDIS_MEMORY_RATIO = 0.9
PVC_FREE_RATIO = 0.5
"""PVC fill prediction only alerts once less than this fraction is free (clones are bursty)."""


class SecretKey(Spec):
    """A key of a Secret in the environment's namespace (AlertmanagerConfig reads it there)."""

    name: Annotated[str, Field(pattern=r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$", max_length=253)]
    """Secret name."""
    key: Annotated[str, Field(pattern=r"^[-._a-zA-Z0-9]+$")]
    """Key inside the Secret."""


class PagingReceiver(Spec):
    """PagerDuty (Events API v2) for ``severity=critical``."""

    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]*$")] = "pager"
    """Receiver name inside the AlertmanagerConfig."""
    routing_key: SecretKey = SecretKey(name="kga-alerting", key="pagerduty-routing-key")
    """Secret key holding the PagerDuty integration (routing) key; never in git."""


class ChatReceiver(Spec):
    """Slack-compatible incoming webhook for ``severity=warning`` (and critical, for context)."""

    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]*$")] = "chat"
    """Receiver name inside the AlertmanagerConfig."""
    webhook_url: SecretKey = SecretKey(name="kga-alerting", key="slack-webhook-url")
    """Secret key holding the incoming-webhook URL; never in git."""
    channel: str | None = None
    """Channel override; ``None`` posts to the webhook's own channel."""


class Receivers(Spec):
    """Where alerts go: critical pages, warning posts to chat."""

    paging: PagingReceiver | None = None
    """PagerDuty for critical alerts; ``None`` (the default) sends them to chat and pages nobody. Required
    in stage prod; a dev or staging environment pages someone only when it sets it."""
    chat: ChatReceiver = ChatReceiver()
    """Chat receiver; also the fallback of the route tree."""


class MonitoringSettings(Spec):
    """The ``monitoring:`` block of an environment file."""

    enabled: bool = True
    """Render the monitoring objects; needs the prometheus-operator CRDs in the cluster."""
    prometheus_selector: dict[str, str] = Field(default_factory=lambda: {"release": "kube-prometheus-stack"})
    """Labels the cluster's Prometheus selects ServiceMonitors, Probes and rules on."""
    blackbox_prober: Annotated[str, Field(pattern=r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?:\d{1,5}$")] = BLACKBOX_PROBER
    """``host:port`` of the blackbox exporter that runs the probes: by default the Service the platform
    layer's prometheus-blackbox-exporter release creates (``fullnameOverride``, kgstack.cluster_platform)."""
    blackbox_http_module: str = "http_2xx"
    """Blackbox module for HTTP probes (the prometheus-blackbox-exporter chart's default)."""
    blackbox_tcp_module: str = "tcp_connect"
    """Blackbox module for the Memgraph bolt port; add it to the exporter's config if missing."""
    edge_namespace_label: Literal["exported_namespace", "namespace"] = "exported_namespace"
    """ingress-nginx only: label holding the Ingress's namespace, ``exported_namespace`` when the
    controller's ServiceMonitor keeps ``honorLabels: false`` (the chart default)."""
    certificate_namespace_label: Literal["exported_namespace", "namespace"] = "exported_namespace"
    """Label holding the Certificate's namespace on cert-manager's metrics: ``exported_namespace`` when
    cert-manager is scraped with ``honorLabels: false`` (its chart's default), since the metric carries
    its own ``namespace`` label and Prometheus sets ``namespace`` to cert-manager's."""
    edge_latency_buckets: Annotated[tuple[float, ...], Field(min_length=1)] = ENVOY_DEFAULT_BUCKETS
    """The edge's latency buckets in seconds (Envoy's defaults); the latency SLO needs one."""
    slo_availability: Annotated[float, Field(gt=0.9, lt=1)] = 0.995
    """Fraction of edge requests that must not be 5xx, over 30 days."""
    slo_latency_seconds: Annotated[float, Field(gt=0)] = 10.0
    """Latency threshold; must be one of ``edgeLatencyBuckets``. LLM answers take seconds."""
    slo_latency_target: Annotated[float, Field(gt=0.5, lt=1)] = 0.95
    """Fraction of edge requests that must be faster than ``sloLatencySeconds``, over 30 days."""
    burn_rate_min_requests: Annotated[int, Field(ge=1)] = 100
    """Requests the long window of a burn-rate condition (1h, 6h, 1d, 3d) must hold before it can fire:
    below it a few failures are a large ratio (two 504s out of ten requests in a quiet hour are 20%)
    and page nobody. A total outage at low traffic still pages through ``KgaHealthProbeFailing``."""
    receivers: Receivers = Receivers()
    """Alert receivers and the Secrets holding their credentials."""
    runbook_base_url: Annotated[str, Field(pattern=r"^https://\S+[^/]$")] = (
        "https://github.com/acme/kga-deploy/blob/main/docs/runbooks"
    )
    """Base of ``runbook_url``: each alert links ``<base>/<AlertName>.md``."""
    scrape_interval: Annotated[str, Field(pattern=r"^\d+[smh]$")] = "30s"
    """Interval of our ServiceMonitors and Probes."""
    dashboards_namespace: Annotated[str, Field(pattern=r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")] | None = None
    """Namespace for the dashboard ConfigMaps; ``None``: the environment's (the Grafana
    sidecar then needs ``searchNamespace: ALL``)."""

    @model_validator(mode="after")
    def _latency_threshold_is_a_bucket(self) -> Self:
        if self.slo_latency_seconds not in self.edge_latency_buckets:
            raise ValueError(
                f"sloLatencySeconds ({self.slo_latency_seconds:g}) must be one of the edge's "
                f"buckets ({', '.join(f'{b:g}' for b in self.edge_latency_buckets)}); "
                "a threshold between buckets cannot be measured"
            )
        return self


class MonitoringProps(Spec):
    """What :class:`Monitoring` and :class:`~kgstack.dashboards.Dashboards` need to know."""

    identity: Identity
    """The release identity (``kga``, ``kga-<env>``), without a component."""
    namespace: str
    """The environment's namespace: Services, Ingress and the monitoring objects live there."""
    domain: str
    """Public host of the Ingress (shown on dashboards)."""
    settings: MonitoringSettings = MonitoringSettings()
    """The environment's ``monitoring:`` block."""
    chroma: bool = True
    """Chroma runs in the cluster (vector store ``chroma``): probe its heartbeat."""
    memgraph: bool = False
    """Memgraph runs (graph features on): probe its bolt port."""
    edge_controller: EdgeController = "gateway-api"
    """Which edge's metrics the SLIs read (``edge.controller``)."""
    edge_routes: Annotated[tuple[Annotated[str, Field(pattern=r"^[a-z0-9-]+$")], ...], Field(min_length=1)] = (
        "api",
        "api-reads",
    )
    """HTTPRoutes (or Ingresses) ``<release>-<name>`` whose requests the SLIs count: the query tier's
    routes, not the indexer's (``indexerRoutes``), the static web UI nor the 403 backend of blocked paths."""
    indexer_routes: tuple[Annotated[str, Field(pattern=r"^[a-z0-9-]+$")], ...] = ("indexer",)
    """Routes to the single indexer, outside the availability and latency SLOs: an index run blocks it, and
    the UI's workflow polls time out meanwhile. ``KgaIndexerErrorRatioHigh`` watches them instead."""
    backups: Annotated[tuple[Annotated[str, Field(pattern=r"^[a-z0-9-]+$")], ...], Field(min_length=1)] = ("redis",)
    """Stores with a backup CronJob ``<release>-backup-<store>`` (``redis``, ``chroma``, ``memgraph``)."""
    index_run_seconds: Annotated[int, Field(ge=60)] = 3600
    """The longest an index run blocks the indexer (``agent.workflow.timeoutSeconds``): the indexer's error
    alert waits at least this long, so a legitimate run never fires it."""
    restore_watch_seconds: dict[str, Annotated[int, Field(gt=0)]] = Field(default_factory=dict)
    """Per store, how long a restore Job (``<release>-restore-<store>``) may run before
    ``KgaRestoreRunningLong`` warns (``kgstack.backup_schedule.restore_watch_seconds``); restores have no deadline."""
    scraper: NamespacePeer = NamespacePeer(namespace="monitoring")
    """The Prometheus pods: every scrape is declared from them."""
    prober: NamespacePeer | None = None
    """The blackbox exporter pods: every probe is declared from them (default: ``scraper``)."""
    probes: tuple[Endpoint, ...] = ()
    """Endpoints probed by the blackbox exporter: ``healthPath`` over HTTP, else a TCP connect."""
    metrics: tuple[Endpoint, ...] = ()
    """Endpoints serving ``/metrics``, scraped through a ServiceMonitor each (the Redis exporter, the agent
    runtime's side port of each tier)."""

    @model_validator(mode="after")
    def _stores_are_probed(self) -> Self:
        probed = {e.component for e in self.probes}
        for store, present in (("chroma", self.chroma), ("memgraph", self.memgraph)):
            if self.probes and present != (store in probed):
                raise ValueError(f"{store}: {'no' if present else 'a'} probe endpoint, but {store}={present}")
        return self

    @model_validator(mode="after")
    def _indexer_routes_stay_out_of_the_slis(self) -> Self:
        if both := sorted(set(self.edge_routes) & set(self.indexer_routes)):
            raise ValueError(f"edgeRoutes: {', '.join(both)} is an indexer route (indexerRoutes), outside the SLOs")
        return self

    @property
    def instance(self) -> str:
        return self.identity.instance

    def name(self, component: str) -> str:
        return self.identity.of(component).resource_name


# --------------------------------------------------------------------------------------------
# PromQL helpers


def matchers(**labels: str) -> str:
    """``{a="x",b=~"y"}``: a value starting with ``~`` is a regex, ``!`` a negation."""
    parts = []
    for key, raw in labels.items():
        op, value = "=", raw
        if raw.startswith(("~", "!")):
            op, value = ("=~" if raw[0] == "~" else "!="), raw[1:]
        parts.append(f'{key}{op}"{value}"')
    return "{" + ",".join(parts) + "}"


def _le(seconds: float) -> str:
    """Matcher value for a bucket: Prometheus 3 writes ``le="10.0"``, Prometheus 2 ``le="10"``."""
    text = f"{seconds:g}"
    return f"~{re.escape(text)}(\\\\.0)?" if "." not in text and "e" not in text else f"~{re.escape(text)}"


def _num(value: float) -> str:
    return f"{value:.6g}"


def _seconds(window: str) -> int:
    """Seconds of a PromQL duration of one unit (``5m``, ``1h``, ``3d``)."""
    return int(window[:-1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[window[-1]]


@dataclass(frozen=True)
class Recording:
    record: str
    expr: str


@dataclass(frozen=True)
class Alert:
    name: str
    severity: Literal["critical", "warning"]
    expr: str
    for_: str
    summary: str
    description: str
    labels: tuple[tuple[str, str], ...] = ()
    """Extra labels beyond ``severity`` and ``namespace``."""


def edge_selector(props: MonitoringProps, routes: tuple[str, ...] | None = None, /, **extra: str) -> str:
    """Our routes' series on the edge's metrics: Envoy clusters of our HTTPRoutes, or our Ingresses
    (``routes``, default: the SLI routes ``edge_routes``)."""
    routes = routes or props.edge_routes
    if props.edge_controller == "gateway-api":
        # Envoy Gateway names the cluster of each route rule httproute/<namespace>/<route>/rule/<index>.
        names = f"{props.instance}-{routes[0]}" if len(routes) == 1 else f"{props.instance}-({'|'.join(routes)})"
        return matchers(envoy_cluster_name=f"~httproute/{props.namespace}/{names}/rule/[0-9]+", **extra)
    ingress = props.name(routes[0]) if len(routes) == 1 else f"~{props.instance}-({'|'.join(routes)})"
    return matchers(**{props.settings.edge_namespace_label: props.namespace, "ingress": ingress}, **extra)


@dataclass(frozen=True)
class EdgeSeries:
    """The raw edge series the SLIs are recorded from; everything above them is controller-neutral."""

    requests: str
    errors: str
    fast: str
    """Bucket series at the latency threshold."""
    timed: str
    """Histogram count."""
    bucket_metric: str
    """Histogram bucket metric name (for the quantile panels)."""
    le_per_second: float
    """``le`` units per second: 1000 for Envoy (milliseconds), 1 for ingress-nginx."""

    @property
    def duration_record(self) -> str:
        unit = "milliseconds" if self.le_per_second == 1000 else "seconds"
        return f"kga:edge_request_duration_{unit}_bucket:rate5m"


@dataclass(frozen=True)
class _EdgeMetrics:
    """What one edge controller calls its request counter and latency histogram."""

    requests: str
    errors: dict[str, str]
    """Matchers that narrow ``requests`` to 5xx answers."""
    histogram: str
    """Histogram name, without ``_bucket``/``_count``."""
    le_per_second: float


_EDGE_METRICS = {
    # upstream_rq_xx also counts Envoy's own answers for a route (503 overflow, 504 timeout).
    "gateway-api": _EdgeMetrics(
        "envoy_cluster_upstream_rq_xx", {"envoy_response_code_class": "5"}, "envoy_cluster_upstream_rq_time", 1000
    ),
    "ingress-nginx": _EdgeMetrics(
        "nginx_ingress_controller_requests", {"status": "~5.."}, "nginx_ingress_controller_request_duration_seconds", 1
    ),
}


def edge_series(props: MonitoringProps, routes: tuple[str, ...] | None = None) -> EdgeSeries:
    """Requests, 5xx, and the latency histogram at the SLO threshold, for the environment's edge
    (``routes``, default: the SLI routes)."""
    m = _EDGE_METRICS[props.edge_controller]
    threshold = props.settings.slo_latency_seconds * m.le_per_second
    return EdgeSeries(
        requests=f"{m.requests}{edge_selector(props, routes)}",
        errors=f"{m.requests}{edge_selector(props, routes, **m.errors)}",
        fast=f"{m.histogram}_bucket{edge_selector(props, routes, le=_le(threshold))}",
        timed=f"{m.histogram}_count{edge_selector(props, routes)}",
        bucket_metric=f"{m.histogram}_bucket",
        le_per_second=m.le_per_second,
    )


def _ns(props: MonitoringProps) -> str:
    return matchers(namespace=props.namespace)


def recording_rules(props: MonitoringProps) -> list[Recording]:
    """SLIs per window, the 30-day budgets, and the latency histogram for dashboards."""
    s = props.settings
    ns = _ns(props)
    e = edge_series(props)
    rules: list[Recording] = []
    for w in SLI_WINDOWS:
        rules += [
            Recording(f"kga:edge_requests:rate{w}", f"sum(rate({e.requests}[{w}]))"),
            Recording(f"kga:edge_errors:rate{w}", f"sum(rate({e.errors}[{w}])) or vector(0)"),
            Recording(
                f"kga:slo_availability_errors:ratio_rate{w}",
                f"kga:edge_errors:rate{w}{ns} / kga:edge_requests:rate{w}{ns}",
            ),
            Recording(
                f"kga:slo_latency_slow:ratio_rate{w}",
                f"1 - (sum(rate({e.fast}[{w}])) / sum(rate({e.timed}[{w}])))",
            ),
        ]
    if props.indexer_routes:
        i = edge_series(props, props.indexer_routes)
        for w in INDEXER_WINDOWS:
            rules += [
                Recording(f"kga:indexer_requests:rate{w}", f"sum(rate({i.requests}[{w}]))"),
                Recording(f"kga:indexer_errors:rate{w}", f"sum(rate({i.errors}[{w}])) or vector(0)"),
                Recording(
                    f"kga:indexer_errors:ratio_rate{w}",
                    f"kga:indexer_errors:rate{w}{ns} / kga:indexer_requests:rate{w}{ns}",
                ),
            ]
    rules += [
        Recording("kga:edge_requests_fast:rate5m", f"sum(rate({e.fast}[5m]))"),
        Recording("kga:edge_requests_timed:rate5m", f"sum(rate({e.timed}[5m]))"),
        Recording(
            e.duration_record,
            f"sum by (le) (rate({e.bucket_metric}{edge_selector(props)}[5m]))",
        ),
        # 30 days from the 5m rates: a sum of equally spaced rates weighs every request once.
        Recording(
            "kga:slo_availability_errors:ratio_rate30d",
            f"sum_over_time(kga:edge_errors:rate5m{ns}[30d]) / sum_over_time(kga:edge_requests:rate5m{ns}[30d])",
        ),
        Recording(
            "kga:slo_latency_slow:ratio_rate30d",
            f"1 - (sum_over_time(kga:edge_requests_fast:rate5m{ns}[30d])"
            f" / sum_over_time(kga:edge_requests_timed:rate5m{ns}[30d]))",
        ),
        Recording(
            "kga:slo_availability:error_budget_remaining",
            f"1 - kga:slo_availability_errors:ratio_rate30d{ns} / {_num(1 - s.slo_availability)}",
        ),
        Recording(
            "kga:slo_latency:error_budget_remaining",
            f"1 - kga:slo_latency_slow:ratio_rate30d{ns} / {_num(1 - s.slo_latency_target)}",
        ),
    ]
    return rules


def certificate_matchers(props: MonitoringProps) -> str:
    """Our TLS Certificate on cert-manager's metrics, by the label that holds its namespace."""
    return matchers(**{props.settings.certificate_namespace_label: props.namespace, "name": props.name("tls")})


def reads_recorded_series(alert: Alert) -> bool:
    """Whether the alert reads one of our recording rules (``kga:...``)."""
    return "kga:" in alert.expr


def _burn_alerts(props: MonitoringProps, slo: str, sli: str, target: float) -> list[Alert]:
    ns = _ns(props)
    budget = 1 - target
    what = {"availability": "5xx responses", "latency": f"requests slower than {props.settings.slo_latency_seconds:g}s"}
    out = []
    minimum = props.settings.burn_rate_min_requests
    for severity, windows in BURN_RATES.items():
        # Enough requests in the long window, or a few failures in a quiet hour page someone.
        conditions = [
            f"({sli}:ratio_rate{long}{ns} > {_num(factor * budget)}"
            f" and {sli}:ratio_rate{short}{ns} > {_num(factor * budget)}"
            f" and kga:edge_requests:rate{long}{ns} * {_seconds(long)} >= {minimum})"
            for factor, long, short in windows
        ]
        pace = " or ".join(f"{factor:g}x over {long}/{short}" for factor, long, short in windows)
        level = "Critical" if severity == "critical" else "Warning"
        out.append(
            Alert(
                name=f"Kga{slo.capitalize()}BurnRate{level}",
                severity=severity,  # type: ignore[arg-type]
                expr="\n or ".join(conditions),
                for_=BURN_FOR[severity],
                summary=f"{props.instance}: the {slo} error budget is burning fast"
                if severity == "critical"
                else f"{props.instance}: the {slo} error budget is burning",
                description=(
                    f"{what[slo].capitalize()} at the edge of {props.domain} exceed the {target:.2%} {slo} SLO's "
                    f"budget at {pace} the sustainable rate (long-window ratio: "
                    "{{ $value | humanizePercentage }})."
                ),
                labels=(("slo", slo),),
            )
        )
    return out


def _failed_twice(props: MonitoringProps) -> str:
    """A failed scheduled backup Job whose CronJob's last success (or creation) precedes the previous
    run: ``start - last success`` exceeds a day plus the start a run may be late by. Reads only the
    failed Job, so it holds after the previous run's Job is gone."""
    ns_value, inst = props.namespace, props.instance
    cronjob = f"{inst}-backup-({'|'.join(props.backups)})"
    cronjobs = matchers(namespace=ns_value, cronjob=f"~{cronjob}")
    started = (
        f"label_replace(kube_job_status_start_time{matchers(namespace=ns_value, job_name=f'~{cronjob}-[0-9]+')},"
        ' "cronjob", "$1", "job_name", "(.+)-[0-9]+")'
    )
    failed = f"kube_job_failed{matchers(namespace=ns_value, condition='true')} == 1"
    good = f"kube_cronjob_status_last_successful_time{cronjobs} or kube_cronjob_created{cronjobs}"
    return (
        f"({started}\n and on (namespace, job_name) {failed})"
        f"\n- on (namespace, cronjob) group_left () ({good})"
        f"\n> {BACKUP_PERIOD_SECONDS + STARTING_DEADLINE_SECONDS}"
    )


def _restore_running_long(props: MonitoringProps) -> str:
    """An active restore Job of a store, older than that store's watch time."""
    ns_value = props.namespace
    parts = []
    for store, seconds in sorted(props.restore_watch_seconds.items()):
        job = matchers(namespace=ns_value, job_name=f"{props.instance}-restore-{store}")
        parts.append(
            f"(time() - kube_job_status_start_time{job} > {seconds}"
            f" and on (namespace, job_name) kube_job_status_active{job} > 0)"
        )
    return "\nor ".join(parts)


def _edge_presence(props: MonitoringProps) -> str:
    """Present whenever the edge's stats of each of our routes are scraped, even without traffic."""
    if props.edge_controller == "ingress-nginx":
        # Its request counters appear with the first request; the controller's own gauge is always there.
        return "absent(nginx_ingress_controller_config_last_reload_successful)"
    # upstream_rq_total exists from the cluster's creation; upstream_rq_xx only after a first answer.
    return "\nor ".join(
        f'label_replace(absent(envoy_cluster_upstream_rq_total{edge_selector(props, (route,))}), "route", '
        f'"{props.instance}-{route}", "", "")'
        for route in (*props.edge_routes, *props.indexer_routes)
    )


def _store_presence(props: MonitoringProps) -> str:
    """Present when each store's exporter or probe is scraped: redis_exporter's target, Chroma's and
    Memgraph's blackbox probes. Without it KgaRedisDown and the store-down alerts cannot fire."""
    ns_value = props.namespace
    series = [("redis", f"up{matchers(namespace=ns_value, service=props.name('redis'))}")]
    series += [
        (store, f"probe_success{matchers(namespace=ns_value, component=store)}")
        for store, present in (("chroma", props.chroma), ("memgraph", props.memgraph))
        if present
    ]
    return "\nor ".join(f'label_replace(absent({expr}), "store", "{store}", "", "")' for store, expr in series)


def alerts(props: MonitoringProps) -> list[Alert]:
    """Every alert of the environment; each has a runbook ``docs/runbooks/<name>.md``."""
    s = props.settings
    ns_value = props.namespace
    ns = _ns(props)
    inst = props.instance
    redis = matchers(namespace=ns_value, service=props.name("redis"))
    cronjobs = matchers(namespace=ns_value, cronjob=f"~{inst}-backup-({'|'.join(props.backups)})")
    out = [
        *_burn_alerts(props, "availability", "kga:slo_availability_errors", s.slo_availability),
        *_burn_alerts(props, "latency", "kga:slo_latency_slow", s.slo_latency_target),
        Alert(
            "KgaEdge5xxRatioHigh",
            "warning",
            f"kga:slo_availability_errors:ratio_rate5m{ns} > {_num(EDGE_5XX_RATIO)}",
            "10m",
            f"{inst}: more than {EDGE_5XX_RATIO:.0%} of requests fail at the edge",
            "{{ $value | humanizePercentage }} of requests to "
            + props.domain
            + " answered 5xx over the last 5 minutes.",
        ),
        Alert(
            "KgaEdgeMetricsAbsent",
            "critical",
            _edge_presence(props),
            "15m",
            f"{inst}: the edge's metrics of {{{{ $labels.route }}}} are missing",
            "Prometheus has no edge series for route {{ $labels.route }} (or no ingress-nginx controller "
            "metrics): every SLO alert is blind. The proxies' PodMonitor is missing, does not select them, or "
            "the route or cluster was renamed.",
        ),
        Alert(
            "KgaStoreMetricsAbsent",
            "critical",
            _store_presence(props),
            "15m",
            f"{inst}: no metrics of the {{{{ $labels.store }}}} store",
            "Prometheus has no series of the {{ $labels.store }} exporter or probe, so its down alerts cannot "
            "fire: the Service has no endpoint, or its ServiceMonitor or Probe is missing or not selected.",
        ),
        Alert(
            "KgaIndexerErrorRatioHigh",
            "warning",
            f"kga:indexer_errors:ratio_rate30m{ns} > {_num(INDEXER_ERROR_RATIO)}"
            f" and kga:indexer_errors:ratio_rate5m{ns} > {_num(INDEXER_ERROR_RATIO)}"
            f" and kga:indexer_requests:rate30m{ns} * 1800 >= {INDEXER_MIN_REQUESTS}",
            f"{max(15, -(-props.index_run_seconds // 60))}m",
            f"{inst}: the indexer fails over {INDEXER_ERROR_RATIO:.0%} of its requests",
            "{{ $value | humanizePercentage }} of the requests to the indexer's routes answered 5xx over 30 "
            "minutes, for longer than an index run may block it.",
        ),
        Alert(
            "KgaHealthProbeFailing",
            "critical",
            f"probe_success{matchers(namespace=ns_value, component='~query|indexer|web|auth')} == 0",
            "5m",
            f"{inst}: the {{{{ $labels.component }}}} Service fails its health probe",
            "The blackbox probe of {{ $labels.instance }} has failed for 5 minutes: no ready pod answers "
            "behind the Service. A dead verifier (auth) makes the edge refuse every request with 403, and "
            "the edge SLIs never see those.",
        ),
        Alert(
            "KgaPodCrashLooping",
            "warning",
            "max_over_time(kube_pod_container_status_waiting_reason"
            f"{matchers(namespace=ns_value, reason='CrashLoopBackOff')}[5m]) >= 1",
            "15m",
            f"{inst}: pod {{{{ $labels.pod }}}} is crash-looping",
            "Container {{ $labels.container }} of pod {{ $labels.pod }} has been in CrashLoopBackOff for 15 minutes.",
        ),
        Alert(
            "KgaPodRestarting",
            "warning",
            f"increase(kube_pod_container_status_restarts_total{ns}[1h]) > 3",
            "5m",
            f"{inst}: pod {{{{ $labels.pod }}}} keeps restarting",
            "Container {{ $labels.container }} of pod {{ $labels.pod }} restarted "
            '{{ $value | printf "%.0f" }} times in the last hour.',
        ),
        Alert(
            "KgaHpaAtMaxReplicas",
            "warning",
            "kube_horizontalpodautoscaler_status_current_replicas"
            f"{matchers(namespace=ns_value, horizontalpodautoscaler=props.name('query'))}"
            " >= on (namespace, horizontalpodautoscaler) kube_horizontalpodautoscaler_spec_max_replicas"
            f"{matchers(namespace=ns_value, horizontalpodautoscaler=props.name('query'))}",
            "15m",
            f"{inst}: the query tier is pinned at its maximum replicas",
            "HPA {{ $labels.horizontalpodautoscaler }} has run at maxReplicas ({{ $value }}) for 15 minutes; "
            "it cannot add capacity.",
        ),
        Alert(
            "KgaPersistentVolumeFillingUp",
            "warning",
            f"kubelet_volume_stats_available_bytes{ns} / kubelet_volume_stats_capacity_bytes{ns}"
            f" < {_num(PVC_FREE_RATIO)}\nand predict_linear(kubelet_volume_stats_available_bytes{ns}[6h], 86400) < 0",
            "1h",
            f"{inst}: volume {{{{ $labels.persistentvolumeclaim }}}} will be full within 24 hours",
            "PVC {{ $labels.persistentvolumeclaim }} is {{ $value | humanizePercentage }} free and its "
            "6-hour trend reaches zero within 24 hours.",
        ),
        Alert(
            "KgaBackupJobFailed",
            "warning",
            f"kube_job_failed{matchers(namespace=ns_value, job_name=f'~{inst}-backup-.+', condition='true')} == 1",
            "5m",
            f"{inst}: backup job {{{{ $labels.job_name }}}} failed",
            "Job {{ $labels.job_name }} failed, or its backup was written but held back (its log has "
            '"backup.held" with the reason). It is kept, with its pods\' logs, until shortly before the next '
            "scheduled run; a second failure in a row pages (KgaBackupFailedTwice).",
        ),
        Alert(
            "KgaBackupFailedTwice",
            "critical",
            _failed_twice(props),
            "5m",
            f"{inst}: backup {{{{ $labels.cronjob }}}} failed twice in a row",
            "Job {{ $labels.job_name }} failed and the run before it did not succeed either: the newest good "
            "backup of this store is over a day old.",
        ),
        Alert(
            "KgaReindexFailed",
            "warning",
            f"kube_job_failed{matchers(namespace=ns_value, job_name=f'~{inst}-reindex-.+', condition='true')} == 1",
            "5m",
            f"{inst}: scheduled re-indexing {{{{ $labels.job_name }}}} failed",
            "Job {{ $labels.job_name }} failed: a repository was not re-indexed. The alert clears when the failed "
            "Job is deleted (after a day, or by hand).",
        ),
        Alert(
            "KgaBackupTooOld",
            "warning",
            f"(time() - kube_cronjob_status_last_successful_time{cronjobs}) > {BACKUP_MAX_AGE_HOURS * 3600}"
            f"\nor ((time() - kube_cronjob_created{cronjobs}) > {BACKUP_MAX_AGE_HOURS * 3600}"
            " unless on (namespace, cronjob) kube_cronjob_status_last_successful_time)",
            "10m",
            f"{inst}: no successful backup by {{{{ $labels.cronjob }}}} for over {BACKUP_MAX_AGE_HOURS}h",
            "CronJob {{ $labels.cronjob }} has not completed a backup for {{ $value | humanizeDuration }}.",
        ),
        Alert(
            "KgaRedisDown",
            "warning",
            f"redis_up{redis} == 0 or up{redis} == 0",
            "5m",
            f"{inst}: Redis (or its exporter) is down",
            "The exporter of {{ $labels.pod }} reports Redis unreachable, or the exporter cannot be scraped.",
        ),
        Alert(
            "KgaRedisMemoryHigh",
            "warning",
            f"redis_memory_used_bytes{redis} / (redis_memory_max_bytes{redis} > 0) > {_num(REDIS_MEMORY_RATIO)}",
            "15m",
            f"{inst}: Redis uses over {REDIS_MEMORY_RATIO:.0%} of maxmemory",
            "Redis {{ $labels.pod }} uses {{ $value | humanizePercentage }} of its maxmemory.",
        ),
        Alert(
            "KgaRedisEvicting",
            "warning",
            f"rate(redis_evicted_keys_total{redis}[5m]) > 0",
            "30m",
            f"{inst}: Redis has been evicting keys for 30 minutes",
            'Redis {{ $labels.pod }} evicts {{ $value | printf "%.2f" }} keys/s: the cache is too small '
            "for the working set.",
        ),
        Alert(
            "KgaCertificateExpiringSoon",
            "warning",
            "certmanager_certificate_expiration_timestamp_seconds"
            f"{certificate_matchers(props)} - time() < {CERT_MIN_DAYS * 86400}",
            "1h",
            f"{inst}: TLS certificate of {props.domain} expires within {CERT_MIN_DAYS} days",
            "Certificate {{ $labels.name }} expires in {{ $value | humanizeDuration }}; cert-manager "
            "should have renewed it by now.",
        ),
    ]
    if props.restore_watch_seconds:
        out.append(
            Alert(
                "KgaRestoreRunningLong",
                "warning",
                _restore_running_long(props),
                "5m",
                f"{inst}: restore {{{{ $labels.job_name }}}} runs longer than a full store takes",
                "Job {{ $labels.job_name }} has run for {{ $value | humanizeDuration }}, longer than restoring a "
                "full volume of its store at the measured rate. Nothing stops it: check its progress.",
            )
        )
    if props.chroma:
        out.append(
            Alert(
                "KgaVectorStoreDown",
                "critical",
                f"probe_success{matchers(namespace=ns_value, component='chroma')} == 0",
                "5m",
                f"{inst}: the Chroma vector store is down",
                "Chroma's heartbeat ({{ $labels.instance }}) has failed for 5 minutes; "
                "queries cannot retrieve context.",
            )
        )
    if props.memgraph:
        out.append(
            Alert(
                "KgaGraphStoreDown",
                "warning",
                f"probe_success{matchers(namespace=ns_value, component='memgraph')} == 0",
                "5m",
                f"{inst}: the Memgraph graph store is down",
                "Memgraph's bolt port ({{ $labels.instance }}) has refused connections for 5 minutes; "
                "graph features fail.",
            )
        )
    return out


# --------------------------------------------------------------------------------------------
# The construct


class Monitoring(Construct):
    """ServiceMonitors, Probes, the PrometheusRule and the AlertmanagerConfig of one environment."""

    def __init__(self, scope: Construct, id: str, *, props: MonitoringProps) -> None:
        super().__init__(scope, id)
        self.props = props
        s = props.settings
        self.resources: list[Obj] = []

        connections = Connections.of(self)
        for endpoint in props.metrics:
            self._add(
                f"{endpoint.component.capitalize()}Monitor",
                self._object(
                    "ServiceMonitor",
                    endpoint.service,
                    {
                        "endpoints": [{"interval": s.scrape_interval, "path": "/metrics", "port": endpoint.port_name}],
                        "selector": {"matchLabels": props.identity.of(endpoint.component).selector},
                    },
                ),
            )
            connections.allow(props.scraper, endpoint, purpose=f"Prometheus scrapes {endpoint.component}'s /metrics")
        for endpoint in props.probes:
            self._probe(endpoint)
            what = endpoint.health_path or f"port {endpoint.port}"
            prober = props.prober or props.scraper
            connections.allow(prober, endpoint, purpose=f"blackbox probe of {endpoint.component}'s {what}")

        self.rule = self._object("PrometheusRule", props.instance, {"groups": self.groups()})
        self._add("Rules", self.rule)
        self._add("Alerting", self._alertmanager_config())

    @property
    def secret_keys(self) -> dict[str, list[str]]:
        """Secret name -> keys that the AlertmanagerConfig's receivers read."""
        r = self.props.settings.receivers
        refs = [r.chat.webhook_url, *([r.paging.routing_key] if r.paging else [])]
        out: dict[str, list[str]] = {}
        for ref in refs:
            out.setdefault(ref.name, []).append(ref.key)
        return {name: sorted(keys) for name, keys in out.items()}

    # -- helpers ------------------------------------------------------------------------------

    def _object(self, kind: str, name: str, spec: Obj) -> Obj:
        labels = {**self.props.identity.of("monitoring").labels, **self.props.settings.prometheus_selector}
        return {
            "apiVersion": "monitoring.coreos.com/v1alpha1"
            if kind == "AlertmanagerConfig"
            else "monitoring.coreos.com/v1",
            "kind": kind,
            "metadata": {"labels": labels, "name": name, "namespace": self.props.namespace},
            "spec": spec,
        }

    def _add(self, id: str, resource: Obj) -> None:
        self.resources.append(resource)
        custom_resource(self, id, resource)

    def _probe(self, endpoint: Endpoint) -> None:
        s = self.props.settings
        component = endpoint.component
        if endpoint.health_path:
            module, target = s.blackbox_http_module, endpoint.url("http", endpoint.health_path, cluster=True)
        else:
            module, target = s.blackbox_tcp_module, endpoint.cluster_address
        self._add(
            f"{component.capitalize()}Probe",
            self._object(
                "Probe",
                self.props.name(component),
                {
                    "interval": s.scrape_interval,
                    "module": module,
                    "prober": {"path": "/probe", "url": s.blackbox_prober},
                    "targets": {
                        "staticConfig": {
                            "labels": {"namespace": self.props.namespace, "component": component},
                            "static": [target],
                        }
                    },
                },
            ),
        )

    def groups(self) -> list[Obj]:
        """Two groups: the SLIs with every alert that reads them, and the component alerts.

        Prometheus evaluates groups concurrently and rules within a group in order, so an
        alert on a recorded series must follow its recording rule in the same group; in
        another group it reads the previous evaluation's value, or nothing at the first one
        (what made KgaEdge5xxRatioHigh fire one interval late, at random, under promtool)."""
        props = self.props
        ns = {"namespace": props.namespace}
        slo_alerts = [a for a in alerts(props) if reads_recorded_series(a)]
        other = [a for a in alerts(props) if not reads_recorded_series(a)]
        return [
            {
                "name": f"{props.instance}.slo",
                "rules": [{"expr": r.expr, "labels": ns, "record": r.record} for r in recording_rules(props)]
                + [self._rule(a) for a in slo_alerts],
            },
            {"name": f"{props.instance}.components", "rules": [self._rule(a) for a in other]},
        ]

    def _rule(self, alert: Alert) -> Obj:
        return {
            "alert": alert.name,
            "annotations": {
                "summary": alert.summary,
                "description": alert.description,
                "runbook_url": f"{self.props.settings.runbook_base_url}/{alert.name}.md",
            },
            "expr": alert.expr,
            "for": alert.for_,
            "labels": {"severity": alert.severity, "namespace": self.props.namespace, **dict(alert.labels)},
        }

    def _alertmanager_config(self) -> Obj:
        r = self.props.settings.receivers
        chat: Obj = {
            "apiURL": {"key": r.chat.webhook_url.key, "name": r.chat.webhook_url.name},
            "sendResolved": True,
            "text": "{{ range .Alerts }}{{ .Annotations.summary }}\n{{ .Annotations.description }}\n"
            "Runbook: {{ .Annotations.runbook_url }}\n{{ end }}",
            "title": "[{{ .Status | toUpper }}] {{ .CommonLabels.alertname }} ({{ .CommonLabels.namespace }})",
        }
        if r.chat.channel is not None:
            chat = {**chat, "channel": r.chat.channel}
        receivers: list[Obj] = [{"name": r.chat.name, "slackConfigs": [dict(sorted(chat.items()))]}]
        routes: list[Obj] = []
        if r.paging is not None:
            pager = {
                "description": "{{ .CommonLabels.alertname }}: {{ .CommonAnnotations.summary }}",
                "routingKey": {"key": r.paging.routing_key.key, "name": r.paging.routing_key.name},
                "sendResolved": True,
                "severity": "critical",
            }
            receivers.insert(0, {"name": r.paging.name, "pagerdutyConfigs": [pager]})
            # Pages, then continues so chat also shows the incident for context.
            routes.append(
                {
                    "continue": True,
                    "matchers": [{"matchType": "=", "name": "severity", "value": "critical"}],
                    "receiver": r.paging.name,
                    "repeatInterval": "1h",
                }
            )
        routes.append(
            {
                "matchers": [{"matchType": "=~", "name": "severity", "value": "critical|warning"}],
                "receiver": r.chat.name,
                "repeatInterval": "4h",
            }
        )
        spec = {
            "inhibitRules": [
                {
                    # A fast burn already pages; the slow burn of the same SLO adds nothing.
                    "equal": ["namespace", "slo"],
                    "sourceMatch": [{"matchType": "=~", "name": "alertname", "value": "Kga.+BurnRateCritical"}],
                    "targetMatch": [{"matchType": "=~", "name": "alertname", "value": "Kga.+BurnRateWarning"}],
                }
            ],
            "receivers": receivers,
            "route": {
                "groupBy": ["alertname", "namespace"],
                "groupInterval": "5m",
                "groupWait": "30s",
                "receiver": r.chat.name,
                "repeatInterval": "4h",
                "routes": routes,
            },
        }
        return self._object("AlertmanagerConfig", self.props.instance, spec)
