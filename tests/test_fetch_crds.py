"""scripts/fetch_crds.py: the vendored CRDs are exactly what the upstream Go modules ship."""

from __future__ import annotations

import importlib.util
import json
import sys
from types import ModuleType

import yaml
from conftest import ROOT, kubernetes_yaml
from tools import missing

SCRIPT = ROOT / "scripts" / "fetch_crds.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fetch_crds", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


fetch = _load()


def test_vendored_crds_match_their_go_modules() -> None:
    if fetch.go() is None:
        missing("go not found (scripts/fetch_crds.py downloads the CRDs' modules with it)")
    want = fetch.render_all()
    have = {p.name: p.read_text() for p in fetch.CRDS.glob("*.json")}
    assert sorted(have) == sorted(want), "run scripts/fetch_crds.py"
    drifted = [name for name in want if have[name] != want[name]]
    assert not drifted, f"{drifted} differ from their modules: run scripts/fetch_crds.py"


def test_every_custom_resource_kind_in_dist_has_a_vendored_crd() -> None:
    vendored = set()
    for path in fetch.CRDS.glob("*.json"):
        spec = json.loads(path.read_text())["spec"]
        vendored.add((spec["group"], spec["names"]["kind"]))
    emitted = set()
    for path in kubernetes_yaml():
        if path.name == "kustomization.yaml":  # read by kustomize, never sent to a cluster
            continue
        obj = yaml.safe_load(path.read_text())
        group = obj["apiVersion"].rpartition("/")[0]
        # Kubernetes' own groups: core, dotless (apps, batch, policy) and *.k8s.io, except the
        # Gateway API, which is installed as CRDs.
        builtin = "." not in group or (group.endswith(".k8s.io") and not group.startswith("gateway."))
        if not builtin:
            emitted.add((group, obj["kind"]))
    assert emitted, "dist/ emits custom resources"
    assert emitted <= vendored, f"no vendored CRD for {sorted(emitted - vendored)}"
