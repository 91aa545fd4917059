#!/usr/bin/env python3
"""Vendor the CRDs of every custom resource kind the stack emits into constructs/kgstack/crds/.

Each CRD is taken from its upstream project's own Go module (``go mod download -json``), at a
release the Go module proxy serves that meets the minimum docs/deployment.md names (each pin's
comment gives that minimum; the proxy serves no cert-manager below 1.21 and no ESO between 0.16
and 1.3). ``SOURCES`` is the one table. Each CRD is written as ``<group>_<plural>.json``, the
upstream object unchanged but for a provenance annotation: synth parses JSON about 15 times faster
than the same YAML (issue 13). tests/test_fetch_crds.py re-derives them and fails on drift.

    .venv/bin/python scripts/fetch_crds.py          # rewrite constructs/kgstack/crds/
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CRDS = ROOT / "constructs" / "kgstack" / "crds"


@dataclass(frozen=True)
class Source:
    module: str
    version: str
    path: str  # inside the module


_CERT_MANAGER = ("github.com/cert-manager/cert-manager", "v1.21.2")  # docs: >= 1.17
_PROM_OPERATOR = ("github.com/prometheus-operator/prometheus-operator", "v0.85.0")  # docs: >= 0.80
_ESO = ("github.com/external-secrets/external-secrets", "v1.3.2")  # docs: >= 0.17 (external-secrets.io/v1)
_ARGO_CD = ("github.com/argoproj/argo-cd/v2", "v2.14.21")  # docs: >= 2.10
_GATEWAY_API = ("sigs.k8s.io/gateway-api", "v1.6.1")  # the version Envoy Gateway below requires
_ENVOY_GATEWAY = ("github.com/envoyproxy/gateway", "v1.9.1")
# The chart the platform installs (3.8.2) ships this app. Not 1.19: it deprecates kyverno.io/v1 ClusterPolicy
# (the API server warns on apply) for policies.kyverno.io ImageValidatingPolicy; migrate before upgrading.
_KYVERNO = ("github.com/kyverno/kyverno", "v1.18.2")

_PROM = "example/prometheus-operator-crd/monitoring.coreos.com_"
_GW = "config/crd/standard/gateway.networking.k8s.io_"  # standard channel: what clusters install
_EG = "charts/gateway-helm/charts/crds/crds/generated/gateway.envoyproxy.io_"

SOURCES: tuple[Source, ...] = (
    Source(*_CERT_MANAGER, "deploy/crds/cert-manager.io_certificates.yaml"),
    Source(*_CERT_MANAGER, "deploy/crds/cert-manager.io_clusterissuers.yaml"),
    Source(*_PROM_OPERATOR, _PROM + "servicemonitors.yaml"),
    Source(*_PROM_OPERATOR, _PROM + "probes.yaml"),
    Source(*_PROM_OPERATOR, _PROM + "podmonitors.yaml"),
    Source(*_PROM_OPERATOR, _PROM + "prometheusrules.yaml"),
    Source(*_PROM_OPERATOR, _PROM + "alertmanagerconfigs.yaml"),
    Source(*_ESO, "config/crds/bases/external-secrets.io_externalsecrets.yaml"),
    Source(*_ARGO_CD, "manifests/crds/application-crd.yaml"),
    Source(*_GATEWAY_API, _GW + "gatewayclasses.yaml"),
    Source(*_GATEWAY_API, _GW + "gateways.yaml"),
    Source(*_GATEWAY_API, _GW + "httproutes.yaml"),
    Source(*_GATEWAY_API, _GW + "referencegrants.yaml"),
    Source(*_GATEWAY_API, _GW + "backendtlspolicies.yaml"),
    Source(*_ENVOY_GATEWAY, _EG + "securitypolicies.yaml"),
    Source(*_ENVOY_GATEWAY, _EG + "backendtrafficpolicies.yaml"),
    Source(*_ENVOY_GATEWAY, _EG + "clienttrafficpolicies.yaml"),
    Source(*_ENVOY_GATEWAY, _EG + "envoyproxies.yaml"),
    Source(*_KYVERNO, "config/crds/kyverno/kyverno.io_clusterpolicies.yaml"),
    Source(*_KYVERNO, "config/crds/kyverno/kyverno.io_policyexceptions.yaml"),
)


class _Loader(yaml.SafeLoader):
    """PyYAML reads a bare ``=`` (an enum value in AlertmanagerConfig) as the YAML 1.1 value tag."""


_Loader.add_constructor("tag:yaml.org,2002:value", _Loader.construct_yaml_str)


def go() -> str | None:
    return shutil.which("go") or next((p for p in ["/usr/local/go/bin/go"] if Path(p).exists()), None)


def module_dir(module: str, version: str) -> Path:
    """The module's extracted folder in the Go module cache (downloaded when absent)."""
    binary = go()
    if binary is None:
        raise RuntimeError("go not found: it is needed to download the CRDs' modules")
    env = {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod"}
    out = subprocess.run(
        [binary, "mod", "download", "-json", f"{module}@{version}"], capture_output=True, text=True, env=env
    )
    info = json.loads(out.stdout or "{}")
    if out.returncode or "Dir" not in info:
        raise RuntimeError(f"go mod download {module}@{version}: {info.get('Error') or out.stderr}")
    return Path(info["Dir"])


PROVENANCE = "kgstack.example.com/vendored-from"


def render(source: Source) -> tuple[str, str]:
    """``(file name, text)`` of one vendored CRD."""
    text = (module_dir(source.module, source.version) / source.path).read_text()
    crd = yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader
    if crd.get("kind") != "CustomResourceDefinition":
        raise ValueError(f"{source.module}@{source.version}/{source.path} is not a CustomResourceDefinition")
    annotations = crd["metadata"].setdefault("annotations", {})
    annotations[PROVENANCE] = f"{source.module}@{source.version} {source.path}"
    name = f"{crd['spec']['group']}_{crd['spec']['names']['plural']}.json"
    # One key a line: a CRD upgrade stays a reviewable diff.
    return name, json.dumps(crd, indent=1, ensure_ascii=False) + "\n"


def render_all() -> dict[str, str]:
    return dict(render(source) for source in SOURCES)


def main() -> int:
    files = render_all()
    CRDS.mkdir(parents=True, exist_ok=True)
    for stale in [*CRDS.glob("*.yaml"), *CRDS.glob("*.json")]:
        if stale.name not in files:
            stale.unlink()
    for name, text in files.items():
        (CRDS / name).write_text(text)
    print(f"{len(files)} CRDs in {CRDS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
