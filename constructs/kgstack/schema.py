"""Strict schema validation: built-in kinds against the Kubernetes schemas that kubernetes-validate
ships offline, custom resources against the openAPIV3Schema of their vendored CRD (``crds/``,
written by scripts/fetch_crds.py).

kubernetes-validate re-reads and re-parses the schema files on every call; a
synth validates every object of every environment, so the validators are built
once per (Kubernetes version, kind) here and reused. CRDs are parsed on first use.

Like ``kubeconform -strict``, an object schema that lists its properties rejects any other
field (the API server would silently prune it), unless it says
``x-kubernetes-preserve-unknown-fields``. CEL rules (``x-kubernetes-validations``) are left to
the real API server in tests/test_control_plane.py.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
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


CRDS = Path(__file__).parent / "crds"


@cache
def _crds() -> dict[tuple[str, str], dict[str, Any]]:
    """``{(group, kind): CRD}`` of every vendored CRD (JSON: all of them parse in milliseconds)."""
    index = {}
    for path in sorted(CRDS.glob("*.json")):
        crd = json.loads(path.read_text(encoding="utf-8"))
        index[crd["spec"]["group"], crd["spec"]["names"]["kind"]] = crd
    return index


def crd_kinds() -> frozenset[tuple[str, str]]:
    """``(group, kind)`` of every vendored CRD."""
    return frozenset(_crds())


def load_crd(group: str, kind: str) -> dict[str, Any]:
    """The vendored CRD of ``group``/``kind``."""
    crd = _crds().get((group, kind))
    if crd is None:
        raise KeyError(f"no vendored CRD for {kind}.{group} (add it to scripts/fetch_crds.py)")
    return crd


def strict(schema: Any) -> Any:
    """``schema`` with ``additionalProperties: false`` wherever an object lists its properties."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value) for key, value in schema.items()}
    closed = "properties" in schema and "additionalProperties" not in schema
    if closed and not schema.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


@cache
def _crd_validator(api_version: str, kind: str) -> jsonschema.Validator | str:
    """A compiled validator, or the reason there is none."""
    group, _, version = api_version.rpartition("/")
    try:
        crd = load_crd(group, kind)
    except KeyError as exc:
        return str(exc.args[0])
    for served in crd["spec"]["versions"]:
        if served["name"] == version and served.get("served", False):
            schema = strict(served["schema"]["openAPIV3Schema"])
            # OpenAPI v3.0 schemas are JSON Schema draft 4 with extensions the validator ignores.
            return jsonschema.Draft4Validator(schema)
    return f"{api_version} is not served by the {kind}.{group} CRD"


def schema_problems(manifest: dict[str, Any], version: str) -> list[str]:
    """Problems of one object against the Kubernetes ``version`` schema, or its CRD's; unknown fields fail."""
    name = f"{manifest['kind']}/{manifest['metadata']['name']}"
    validator: jsonschema.Validator | str | None
    if is_custom(manifest["apiVersion"]):
        validator = _crd_validator(manifest["apiVersion"], manifest["kind"])
        if isinstance(validator, str):
            return [f"{name}: {validator}"]
    else:
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
