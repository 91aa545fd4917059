"""Strict schema validation of rendered manifests with kubernetes-validate (offline schemas)."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import yaml


def schema_problems(manifest: dict[str, Any], version: str) -> list[str]:
    """Problems of one object against the Kubernetes ``version`` schema; unknown fields fail."""
    try:
        kubernetes_validate.validate(manifest, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = exc.json_path.removeprefix("$") or "(object)"
        return [f"{manifest['kind']}/{manifest['metadata']['name']}{where}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError:
        return [f"{manifest['kind']} {manifest['apiVersion']} has no schema in Kubernetes {version}"]
    return []


def check_files(env: str, files: dict[str, str], version: str) -> list[str]:
    """Validate every manifest file of one environment (``kustomization.yaml`` aside)."""
    problems: list[str] = []
    for name, text in files.items():
        if name == "kustomization.yaml":
            continue
        for problem in schema_problems(yaml.safe_load(text), version):
            problems.append(f"{env}/{name}: Kubernetes {version}: {problem}")
    return problems
