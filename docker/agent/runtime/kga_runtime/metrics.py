"""Prometheus metrics of the contract (prefix kga_), in a registry of their own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.process_collector import ProcessCollector

# Query latency is dominated by the LLM: buckets up to 2 minutes.
_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        r = self.registry
        self.requests = Counter(
            "kga_http_requests", "HTTP requests by route template", ["method", "route", "status"], registry=r
        )
        self.duration = Histogram(
            "kga_http_request_duration_seconds",
            "Time to the last response byte, by route template",
            ["method", "route"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge("kga_http_requests_in_flight", "Requests being served (HPA signal)", registry=r)
        self.loop_lag = Gauge("kga_event_loop_lag_seconds", "Lateness of the event loop's heartbeat", registry=r)
        self.indexing_runs = Counter("kga_indexing_runs", "Indexing workflow runs", ["outcome"], registry=r)
        self.queries = Counter("kga_queries", "Queries answered", ["outcome"], registry=r)
        self.cache = Counter("kga_cache_requests", "Cache lookups", ["cache", "result"], registry=r)
        for outcome in ("started", "succeeded", "failed"):
            self.indexing_runs.labels(outcome)
        for outcome in ("succeeded", "failed"):
            self.queries.labels(outcome)

    def render(self) -> bytes:
        data: bytes = generate_latest(self.registry)
        return data
