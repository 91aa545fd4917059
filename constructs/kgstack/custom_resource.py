"""Custom resources as plain data (or a pydantic model), handed to cdk8s as ApiObjects.

cdk8s-plus only types the built-in kinds. A custom resource is plain data, or a
pydantic model where we own the shape; either way ``kgstack.schema`` validates
it at synth, strictly, against the openAPIV3Schema of its vendored CRD, so a
misspelt field fails synth. (Typed model packages for prometheus-operator cost
seconds of import on every synth.)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cdk8s
from constructs import Construct
from pydantic import BaseModel

_HEADER = ("apiVersion", "kind", "metadata")


def custom_resource(scope: Construct, id: str, resource: BaseModel | Mapping[str, Any]) -> cdk8s.ApiObject:
    """Add ``resource`` (apiVersion, kind, metadata, ...: a model or plain data) to ``scope``."""
    body: dict[str, Any] = (
        resource.model_dump(by_alias=True, exclude_none=True, mode="json")
        if isinstance(resource, BaseModel)
        else dict(resource)
    )
    meta = body.get("metadata", {})
    obj = cdk8s.ApiObject(
        scope,
        id,
        api_version=body["apiVersion"],
        kind=body["kind"],
        metadata=cdk8s.ApiObjectMetadata(
            name=meta.get("name"),
            namespace=meta.get("namespace"),
            labels=meta.get("labels"),
            annotations=meta.get("annotations"),
        ),
    )
    for key, value in body.items():
        if key not in _HEADER:
            obj.add_json_patch(cdk8s.JsonPatch.add(f"/{key}", value))
    return obj


CRD_GROUPS_UNDER_K8S_IO = frozenset({"gateway.networking.k8s.io"})
"""SIG projects shipped as CRDs, though their group ends in k8s.io (the Gateway API)."""


def is_custom(api_version: str) -> bool:
    """Whether ``api_version`` belongs to a CRD rather than to Kubernetes itself."""
    group = api_version.rpartition("/")[0]
    return "." in group and (group in CRD_GROUPS_UNDER_K8S_IO or not group.endswith("k8s.io"))
