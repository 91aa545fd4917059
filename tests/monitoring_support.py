"""Shared by the monitoring tests: canonical props, standalone synthesis, promtool lookup."""

from __future__ import annotations

from typing import Any

import cdk8s
import yaml
from tools import require_tool

from kgstack.dashboards import Dashboards
from kgstack.environment import Environment
from kgstack.monitoring import Monitoring, MonitoringProps, MonitoringSettings
from kgstack.naming import Identity
from kgstack.publish import synth

Objects = dict[str, dict[str, Any]]


def props(**changes: Any) -> MonitoringProps:
    """The release the promtool unit tests are written for: ``kga-prod`` with every store."""
    base: dict[str, Any] = {
        "identity": Identity(name="kga", instance="kga-prod", version="0.3.0"),
        "namespace": "kga-prod",
        "domain": "kga.example.com",
        "settings": MonitoringSettings(),
        "chroma": True,
        "memgraph": True,
        "backups": ("redis", "chroma", "memgraph"),
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
