"""Strict schema validation with the Kubernetes schemas that kubernetes-validate ships offline.

kubernetes-validate re-reads and re-parses the schema files on every call; a
synth validates every object of every environment, so the validators are built
once per (Kubernetes version, kind) here and reused.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

import jsonschema
from kubernetes_validate import utils
from referencing import Registry, Resource

from .custom_resource import is_custom


@cache
def _schema_version(version: str) -> str:
    """The newest shipped schema set that is not newer than ``version``."""

    def key(v: str) -> tuple[int, ...]:
        return tuple(int(x) for x in v.split("."))

    candidates = [v for v in utils.all_versions() if key(utils.major_minor(v)) <= key(version)]
    if not candidates:
        raise ValueError(f"no Kubernetes schemas for {version}")
    return str(candidates[-1])


def _folder(version: str) -> str:
    return f"kubernetes-json-schema/v{_schema_version(version)}-local-strict"


@cache
def _definitions(version: str) -> Resource[Any]:
    # The shared definitions file is large; parse it once per version.
    return Resource.from_contents(utils.schema_contents(f"{_folder(version)}/_definitions.json", version))


@cache
def _validator(version: str, kind: str, api_version: str) -> jsonschema.Validator | None:
    group = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    try:
        schema = utils.schema_contents(f"{_folder(version)}/{kind.lower()}-{group}.json", version)
    except FileNotFoundError:
        return None
    registry: Registry[Any] = _definitions(version) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.Draft202012Validator(schema, registry=registry)


def schema_problems(manifest: dict[str, Any], version: str) -> list[str]:
    """Problems of one object against the Kubernetes ``version`` schema; unknown fields fail."""
    name = f"{manifest['kind']}/{manifest['metadata']['name']}"
    if is_custom(manifest["apiVersion"]):
        return []  # typed and strictly validated by its model when it was built
    validator = _validator(version, manifest["kind"], manifest["apiVersion"])
    if validator is None:
        return [f"{name}: {manifest['apiVersion']} has no schema in Kubernetes {version}"]
    return [
        f"{name}{error.json_path.removeprefix('$')}: {error.message}"
        for error in sorted(validator.iter_errors(manifest), key=lambda e: e.json_path)
    ]


def check_objects(env: str, objects: dict[str, dict[str, Any]], version: str) -> list[str]:
    """Validate every object of one environment; problems name the file that would be written."""
    return [
        f"{env}/{name}: Kubernetes {version}: {problem}"
        for name, obj in objects.items()
        for problem in schema_problems(obj, version)
    ]
