#!/usr/bin/env python3
"""kubeconform -strict over manifests, offline: the Kubernetes schemas kubernetes-validate ships
(1.27-1.35 and more) plus JSON schemas converted from the vendored CRDs (constructs/kgstack/crds/).

    .venv/bin/python scripts/kubeconform.py 1.33 dist/prod/*.yaml
    .venv/bin/python scripts/kubeconform.py all dist/*/*.yaml       # every supported version

Exit 0 when every file is valid; otherwise kubeconform's findings, one a line. The binary is
built by scripts/setup.sh test from scripts/control-plane/kubeconform/go.mod.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "constructs"))

import kubernetes_validate  # noqa: E402

from kgstack.environment import SUPPORTED_KUBERNETES  # noqa: E402
from kgstack.schema import CRDS, crd_kinds, load_crd, strict  # noqa: E402

BINARY = ROOT / ".tools" / "control-plane" / "kubeconform"
K8S_SCHEMAS = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
CACHE = ROOT / ".cache" / "kubeconform"
K8S_LAYOUT = "{{ .NormalizedKubernetesVersion }}-local-strict/{{ .ResourceKind }}{{ .KindSuffix }}.json"


def _standalone(schema: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with the definitions it reaches copied in under ``$defs`` and referenced locally."""
    prefix = "/api/_definitions.json#/$defs/"
    needed: dict[str, Any] = {}

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(item) for item in node]
        if not isinstance(node, dict):
            return node
        out = {key: walk(value) for key, value in node.items() if key != "$id"}
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith((prefix, "#/$defs/")):
            name = ref.rpartition("/")[2]
            out["$ref"] = f"#/$defs/{name}"
            if name not in needed:
                needed[name] = {}
                needed[name] = walk(definitions[name])
        return out

    out = walk(schema)
    out["$defs"] = needed
    return out  # type: ignore[no-any-return]


def k8s_schemas(version: str) -> Path:
    """kubernetes-validate's strict schemas for ``version``, made standalone for kubeconform.

    They point into one shared definitions file through an ``$id`` on kubernetes.io that only
    kubernetes-validate's own registry serves. Here each schema carries the definitions it needs
    (like the "standalone-strict" schemas kubeconform is used to), so kubeconform compiles a small
    document per kind. Only top-level kinds are written. Once per kubernetes-validate release."""
    name = f"v{version}.0-local-strict"
    out = CACHE / f"k8s-{kubernetes_validate.__version__}" / name
    if out.exists():
        return out.parent
    tmp = out.with_name(f"{name}.tmp{os.getpid()}")
    tmp.mkdir(parents=True)
    definitions = json.loads((K8S_SCHEMAS / name / "_definitions.json").read_text())["$defs"]
    for source in (K8S_SCHEMAS / name).glob("*.json"):
        schema = json.loads(source.read_text())
        if source.name.startswith("_") or "kind" not in schema.get("properties", {}):
            continue
        (tmp / source.name).write_text(json.dumps(_standalone(schema, definitions)))
    tmp.rename(out)
    return out.parent


def crd_schemas() -> Path:
    """JSON schemas of every served version of every vendored CRD, strict as kgstack.schema makes
    them, laid out as kubeconform's ``{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}``.
    Written once per content of crds/ (the folder name is its hash)."""
    digest = hashlib.sha256()
    for path in sorted(CRDS.glob("*.json")):
        digest.update(path.name.encode() + path.read_bytes())
    out = CACHE / digest.hexdigest()[:16]
    if out.exists():
        return out
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    for group, kind in sorted(crd_kinds()):
        crd = load_crd(group, kind)
        for version in crd["spec"]["versions"]:
            if version.get("served"):
                path = tmp / group / f"{kind.lower()}_{version['name']}.json"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(strict(version["schema"]["openAPIV3Schema"])))
    tmp.rename(out)
    return out


def command(version: str, files: list[str]) -> list[str]:
    return [
        str(BINARY),
        "-strict",
        "-summary",
        "-kubernetes-version",
        f"{version}.0",
        "-schema-location",
        str(k8s_schemas(version) / K8S_LAYOUT),
        "-schema-location",
        str(crd_schemas() / "{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json"),
        *files,
    ]


def validate(version: str, files: list[str]) -> subprocess.CompletedProcess[str]:
    # kustomization.yaml is read by kustomize and never reaches a cluster.
    manifests = [f for f in files if Path(f).name != "kustomization.yaml"]
    return subprocess.run(command(version, manifests), capture_output=True, text=True)


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    versions = list(SUPPORTED_KUBERNETES) if argv[0] == "all" else [argv[0]]
    failed = 0
    for version in versions:
        out = validate(version, argv[1:])
        print(f"Kubernetes {version}: {out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ''}")
        if out.returncode:
            failed = 1
            print(out.stdout + out.stderr, file=sys.stderr)
    return failed


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
