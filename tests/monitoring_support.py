"""Shared by the monitoring tests: canonical props, standalone synthesis, promtool lookup."""

from __future__ import annotations

from typing import Any

import cdk8s
import yaml
from tools import require_tool

from kgstack.backup_schedule import restore_watch_seconds
from kgstack.connections import Endpoint
from kgstack.dashboards import Dashboards
from kgstack.environment import Environment
from kgstack.monitoring import Monitoring, MonitoringProps, MonitoringSettings, PagingReceiver, Receivers
from kgstack.naming import Identity
from kgstack.publish import synth

Objects = dict[str, dict[str, Any]]


def endpoints(instance: str, namespace: str, *, chroma: bool, memgraph: bool) -> dict[str, Any]:
    """Probe and scrape targets as AgentStack passes them (ports written out, not imported)."""

    def at(component: str, port: int, name: str, health: str | None) -> Endpoint:
        return Endpoint(
            component=component,
            service=f"{instance}-{component}",
            namespace=namespace,
            port=port,
            port_name=name,
            health_path=health,
        )

    probes = [at("query", 8000, "http", "/health"), at("indexer", 8000, "http", "/health")]
    if chroma:
        probes.append(at("chroma", 8000, "http", "/api/v2/heartbeat"))
    if memgraph:
        probes.append(at("memgraph", 7687, "bolt", None))
    return {"probes": tuple(probes), "metrics": (at("redis", 9121, "metrics", None),)}


def props(**changes: Any) -> MonitoringProps:
    """The release the promtool unit tests are written for: ``kga-prod`` with every store."""
    flags = {"chroma": changes.get("chroma", True), "memgraph": changes.get("memgraph", True)}
    base: dict[str, Any] = {
        **endpoints("kga-prod", "kga-prod", **flags),
        "identity": Identity(name="kga", instance="kga-prod", version="0.3.0"),
        "namespace": "kga-prod",
        "domain": "kga.example.com",
        "settings": MonitoringSettings(receivers=Receivers(paging=PagingReceiver())),  # prod pages
        "chroma": True,
        "memgraph": True,
        "backups": ("redis", "chroma", "memgraph"),
        # prod's volumes: Redis 5Gi, Chroma 100Gi; Memgraph as staging's 10Gi.
        "restore_watch_seconds": {
            "redis": restore_watch_seconds("redis", "5Gi"),
            "chroma": restore_watch_seconds("chroma", "100Gi"),
            "memgraph": restore_watch_seconds("memgraph", "10Gi"),
        },
    }
    return MonitoringProps(**{**base, **changes})


def env_props(env: Environment) -> MonitoringProps:
    """What AgentStack passes for ``env`` (see the wiring in the monitoring report)."""
    chroma = env.agent.vector_store.type == "chroma"
    memgraph = env.agent.graph.enabled
    return MonitoringProps(
        identity=Identity(name="kga", instance=env.instance, version=env.images.agent.tag),
        namespace=env.namespace,
        domain=env.domain,
        settings=getattr(env, "monitoring", MonitoringSettings()),
        edge_controller=env.edge.controller,
        chroma=chroma,
        memgraph=memgraph,
        backups=("redis",) + (("chroma",) if chroma else ()) + (("memgraph",) if memgraph else ()),
        index_run_seconds=env.agent.workflow.timeout_seconds,
        restore_watch_seconds={
            store: restore_watch_seconds(store, sized.storage_size)
            for store in ("redis", "chroma", "memgraph")
            if (sized := getattr(env.stores, store)) is not None
        },
        **endpoints(env.instance, env.namespace, chroma=chroma, memgraph=memgraph),
    )


def build(p: MonitoringProps) -> tuple[Monitoring, Dashboards, Objects]:
    """Both constructs in a chart of their own, synthesized; objects keyed ``Kind/name``."""
    chart = cdk8s.Chart(cdk8s.App(), "env", disable_resource_name_hashes=True)
    monitoring = Monitoring(chart, "Monitoring", props=p)
    dashboards = Dashboards(chart, "Dashboards", props=p)
    objects: Objects = {}
    for name, text in synth([chart])["env"].items():
        if name != "kustomization.yaml":
            obj = yaml.safe_load(text)
            objects[f"{obj['kind']}/{obj['metadata']['name']}"] = obj
    return monitoring, dashboards, objects


def promtool() -> str:
    """Path of promtool; missing is a failure under CI, a skip on a laptop."""
    return require_tool("promtool", hint="apt-get install -y prometheus")
