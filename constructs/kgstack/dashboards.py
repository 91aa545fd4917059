"""Grafana dashboards of one environment, built with grafana-foundation-sdk's typed builders.

Each dashboard ships as a ConfigMap labelled ``grafana_dashboard: "1"``, the
label the kube-prometheus-stack Grafana sidecar loads dashboards from. Queries
use only our recording rules (:mod:`kgstack.monitoring`) and the documented
exporters' metrics; ``tests/test_dashboards.py`` enforces that.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from constructs import Construct
from grafana_foundation_sdk.builders import dashboard as gdash
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as gmodel

from ._plus import k8s
from .monitoring import MonitoringProps, certificate_matchers, edge_series, matchers

SIDECAR_LABEL = {"grafana_dashboard": "1"}
FOLDER_ANNOTATION = {"grafana_folder": "Knowledge Graph Agent"}
"""Honoured when the sidecar runs with ``folderAnnotation: grafana_folder``."""
DATASOURCE = gmodel.DataSourceRef(type_val="prometheus", uid="${datasource}")


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


def _target(q: Query, ref: str) -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(q.expr).legend_format(q.legend).ref_id(ref).datasource(DATASOURCE)


def _timeseries(
    title: str,
    unit: str,
    queries: list[Query],
    *,
    description: str = "",
    width: int = 12,
    minimum: float | None = 0,
    maximum: float | None = None,
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .height(8)
        .span(width)
        .fill_opacity(10)
        .line_width(1)
    )
    if minimum is not None:
        panel = panel.min(minimum)
    if maximum is not None:
        panel = panel.max(maximum)
    for index, q in enumerate(queries):
        panel = panel.with_target(_target(q, chr(ord("A") + index)))
    return panel


def _stat(
    title: str,
    unit: str,
    queries: list[Query],
    *,
    description: str = "",
    width: int = 6,
    red_below: float | None = None,
    red_above: float | None = None,
) -> stat.Panel:
    panel = stat.Panel().title(title).description(description).unit(unit).datasource(DATASOURCE).height(6).span(width)
    if red_below is not None:
        panel = panel.thresholds(
            gdash.ThresholdsConfig()
            .mode(gmodel.ThresholdsMode.ABSOLUTE)
            .steps(
                [
                    gmodel.Threshold(value=None, color="red"),
                    gmodel.Threshold(value=red_below, color="green"),
                ]
            )
        )
    elif red_above is not None:
        panel = panel.thresholds(
            gdash.ThresholdsConfig()
            .mode(gmodel.ThresholdsMode.ABSOLUTE)
            .steps(
                [
                    gmodel.Threshold(value=None, color="green"),
                    gmodel.Threshold(value=red_above, color="red"),
                ]
            )
        )
    for index, q in enumerate(queries):
        panel = panel.with_target(_target(q, chr(ord("A") + index)))
    return panel


class Dashboards(Construct):
    """The environment's dashboards: golden signals and SLOs, capacity, stores and backups."""

    def __init__(self, scope: Construct, id: str, *, props: MonitoringProps) -> None:
        super().__init__(scope, id)
        self.props = props
        self.dashboards: dict[str, gmodel.Dashboard] = {
            "overview": self._overview().build(),
            "resources": self._resources().build(),
        }
        for board in self.dashboards.values():
            for number, panel in enumerate(_all_panels(board), start=1):
                panel.id_val = number  # unique ids: Grafana links and edits panels by id
        identity = props.identity.of("monitoring")
        namespace = props.settings.dashboards_namespace or props.namespace
        for slug, board in self.dashboards.items():
            name = f"{props.instance}-dashboard-{slug}"
            k8s.KubeConfigMap(
                self,
                slug.capitalize(),
                metadata=k8s.ObjectMeta(
                    name=name,
                    namespace=namespace,
                    labels={**identity.labels, **SIDECAR_LABEL},
                    annotations=FOLDER_ANNOTATION,
                ),
                data={f"{name}.json": render(board)},
            )

    # -- building blocks ------------------------------------------------------------------------

    def _board(self, slug: str, title: str) -> gdash.Dashboard:
        p = self.props
        return (
            gdash.Dashboard(f"{title} ({p.instance})")
            .uid(f"{p.instance}-{slug}")
            .tags(["kga", p.instance])
            .description(f"Knowledge Graph Agent, release {p.instance}, https://{p.domain}")
            .time("now-6h", "now")
            .refresh("1m")
            .timezone("browser")
            .readonly()
            .with_variable(gdash.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
        )

    def _ns(self, **extra: str) -> str:
        return matchers(namespace=self.props.namespace, **extra)

    def queries(self) -> list[str]:
        """Every PromQL expression on every dashboard (for the tests)."""
        exprs: list[str] = []
        for board in self.dashboards.values():
            for panel in _panels(board):
                exprs.extend(getattr(t, "expr", "") for t in panel.targets or [])
        return exprs

    # -- dashboards -----------------------------------------------------------------------------

    def _overview(self) -> gdash.Dashboard:
        p, s = self.props, self.props.settings
        ns = self._ns()
        e = edge_series(p)
        gateway = p.edge_controller == "gateway-api"
        per_second = f" / {e.le_per_second:g}" if e.le_per_second != 1 else ""
        quantiles = [
            Query(f"histogram_quantile({q}, {e.duration_record}{ns}){per_second}", f"p{round(q * 100)}")
            for q in (0.5, 0.95, 0.99)
        ]
        by_route = "envoy_cluster_name" if gateway else "ingress"
        board = self._board("overview", "KGA overview")
        board = board.with_row(
            gdash.Row("Golden signals at the edge (" + ("Envoy Gateway" if gateway else "ingress-nginx") + ")")
        )
        board = board.with_panel(
            _timeseries(
                "Request rate",
                "reqps",
                [
                    Query(f"kga:edge_requests:rate5m{ns}", "all"),
                    Query(
                        f"sum by ({by_route}) (rate({e.requests}[$__rate_interval]))",
                        "{{" + by_route + "}}",
                    ),
                ],
                description="Requests through the edge, all agent routes and per route.",
            )
        )
        board = board.with_panel(
            _timeseries(
                "Error ratio (5xx)",
                "percentunit",
                [
                    Query(f"kga:slo_availability_errors:ratio_rate5m{ns}", "5xx ratio"),
                    Query(
                        f"sum by ({by_route}) (rate({e.errors}[$__rate_interval]))",
                        "{{" + by_route + "}} 5xx/s",
                    ),
                    *(
                        [Query(f"kga:indexer_errors:ratio_rate5m{ns}", "indexer 5xx ratio (outside the SLO)")]
                        if p.indexer_routes
                        else []
                    ),
                ],
                description=f"SLO: at most {1 - s.slo_availability:.2%} of the query tier's requests answer 5xx. "
                "The indexer's route is outside it: index runs block it (KgaIndexerErrorRatioHigh).",
            )
        )
        board = board.with_panel(
            _timeseries(
                "Latency p50 / p95 / p99",
                "s",
                quantiles,
                description=f"SLO: {s.slo_latency_target:.0%} of requests faster than {s.slo_latency_seconds:g}s. "
                "Quantiles above the largest bucket are capped at it.",
            )
        )
        board = board.with_panel(
            _stat(
                "Availability budget left (30d)",
                "percentunit",
                [Query(f"kga:slo_availability:error_budget_remaining{ns}", "availability")],
                red_below=0.0,
                width=6,
            )
        )
        board = board.with_panel(
            _stat(
                "Latency budget left (30d)",
                "percentunit",
                [Query(f"kga:slo_latency:error_budget_remaining{ns}", "latency")],
                red_below=0.0,
                width=6,
            )
        )
        board = board.with_row(gdash.Row("Health probes and stores"))
        probes = [Query(f"probe_success{self._ns(component='~query|indexer')}", "{{component}} /health")]
        if p.chroma:
            probes.append(Query(f"probe_success{self._ns(component='chroma')}", "chroma heartbeat"))
        if p.memgraph:
            probes.append(Query(f"probe_success{self._ns(component='memgraph')}", "memgraph bolt"))
        board = board.with_panel(_stat("Up (blackbox probes)", "bool_yes_no", probes, red_below=1, width=12))
        board = board.with_panel(
            _stat(
                "Time since last good backup",
                "s",
                [
                    Query(
                        f"time() - kube_cronjob_status_last_successful_time"
                        f"{self._ns(cronjob='~' + p.instance + '-backup-(' + '|'.join(p.backups) + ')')}",
                        "{{cronjob}}",
                    )
                ],
                red_above=26 * 3600,
                width=12,
                description="Per backup CronJob; alert KgaBackupTooOld fires above 26 hours.",
            )
        )
        board = board.with_panel(
            _stat(
                "TLS certificate expires in",
                "s",
                [
                    Query(
                        f"certmanager_certificate_expiration_timestamp_seconds{certificate_matchers(p)} - time()",
                        "{{name}}",
                    )
                ],
                red_below=14 * 86400,
                width=12,
            )
        )
        return board

    def _resources(self) -> gdash.Dashboard:
        p = self.props
        inst = p.instance
        hpa = self._ns(horizontalpodautoscaler=p.name("query"))
        board = self._board("resources", "KGA resources")
        board = board.with_row(gdash.Row("Replicas"))
        board = board.with_panel(
            _timeseries(
                "Query tier replicas vs HPA bounds",
                "short",
                [
                    Query(f"kube_horizontalpodautoscaler_status_current_replicas{hpa}", "current"),
                    Query(f"kube_horizontalpodautoscaler_status_desired_replicas{hpa}", "desired"),
                    Query(f"kube_horizontalpodautoscaler_spec_min_replicas{hpa}", "min"),
                    Query(f"kube_horizontalpodautoscaler_spec_max_replicas{hpa}", "max"),
                ],
            )
        )
        board = board.with_panel(
            _timeseries(
                "Available replicas per Deployment",
                "short",
                [
                    Query(
                        f"kube_deployment_status_replicas_available{self._ns(deployment='~' + inst + '-.+')}",
                        "{{deployment}}",
                    ),
                ],
            )
        )
        board = board.with_row(gdash.Row("CPU and memory vs requests and limits"))
        tiers = f"{inst}-(query|indexer|redis|chroma|memgraph)-.+"

        def by_tier(expr: str) -> str:
            return f'sum by (tier) (label_replace({expr}, "tier", "$1", "pod", "{inst}-([a-z]+)-.+"))'

        containers = self._ns(pod="~" + tiers, container="!")
        for resource, usage, unit in (
            ("cpu", f"rate(container_cpu_usage_seconds_total{containers}[$__rate_interval])", "cores"),
            ("memory", f"container_memory_working_set_bytes{containers}", "bytes"),
        ):
            board = board.with_panel(
                _timeseries(
                    f"{resource.upper() if resource == 'cpu' else 'Memory'} per tier",
                    "short" if unit == "cores" else "bytes",
                    [
                        Query(by_tier(usage), "{{tier}} used"),
                        Query(
                            by_tier(
                                f"kube_pod_container_resource_requests{self._ns(pod='~' + tiers, resource=resource)}"
                            ),
                            "{{tier}} requests",
                        ),
                        Query(
                            by_tier(
                                f"kube_pod_container_resource_limits{self._ns(pod='~' + tiers, resource=resource)}"
                            ),
                            "{{tier}} limits",
                        ),
                    ],
                    description="Usage (cAdvisor) against requests and limits (kube-state-metrics), summed per tier.",
                )
            )
        board = board.with_panel(
            _timeseries(
                "Container restarts (1h)",
                "short",
                [
                    Query(
                        f"sum by (pod) (increase(kube_pod_container_status_restarts_total{self._ns()}[1h]))", "{{pod}}"
                    ),
                ],
            )
        )
        board = board.with_panel(
            _timeseries(
                "Volume used",
                "percentunit",
                [
                    Query(
                        f"1 - kubelet_volume_stats_available_bytes{self._ns()} / "
                        f"kubelet_volume_stats_capacity_bytes{self._ns()}",
                        "{{persistentvolumeclaim}}",
                    ),
                ],
                maximum=1,
            )
        )
        board = board.with_row(gdash.Row("Redis (cache)"))
        redis = self._ns(service=p.name("redis"))
        board = board.with_panel(
            _timeseries(
                "Redis memory vs maxmemory",
                "bytes",
                [
                    Query(f"redis_memory_used_bytes{redis}", "used {{pod}}"),
                    Query(f"redis_memory_max_bytes{redis}", "max {{pod}}"),
                ],
                width=8,
            )
        )
        board = board.with_panel(
            _timeseries(
                "Redis hit ratio",
                "percentunit",
                [
                    Query(
                        f"rate(redis_keyspace_hits_total{redis}[$__rate_interval]) / (rate(redis_keyspace_hits_total"
                        f"{redis}[$__rate_interval]) + rate(redis_keyspace_misses_total{redis}[$__rate_interval]))",
                        "{{pod}}",
                    ),
                ],
                width=8,
                maximum=1,
            )
        )
        board = board.with_panel(
            _timeseries(
                "Redis evictions and clients",
                "short",
                [
                    Query(f"rate(redis_evicted_keys_total{redis}[$__rate_interval])", "evicted keys/s"),
                    Query(f"redis_connected_clients{redis}", "clients"),
                ],
                width=8,
            )
        )
        return board


def _panels(board: gmodel.Dashboard) -> list[gmodel.Panel]:
    out: list[gmodel.Panel] = []
    for panel in board.panels or []:
        if isinstance(panel, gmodel.Panel):
            out.append(panel)
        elif isinstance(panel, gmodel.RowPanel):
            out.extend(p for p in panel.panels or [] if isinstance(p, gmodel.Panel))
    return out


def _all_panels(board: gmodel.Dashboard) -> list[gmodel.Panel | gmodel.RowPanel]:
    out: list[gmodel.Panel | gmodel.RowPanel] = []
    for panel in board.panels or []:
        out.append(panel)
        if isinstance(panel, gmodel.RowPanel):
            out.extend(panel.panels or [])
    return out


def render(board: gmodel.Dashboard) -> str:
    """Stable, diff-friendly JSON of a dashboard."""
    return json.dumps(board, cls=JSONEncoder, sort_keys=True, indent=2) + "\n"


__all__ = ["Dashboards", "render"]
