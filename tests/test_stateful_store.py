"""StatefulStore: what every store shares — retained PVCs, headless Service, PDB, own ServiceAccount."""

from __future__ import annotations

from typing import Any

import pytest

from kgstack.stateful_store import StoreSettings

Manifests = dict[str, dict[str, dict[str, Any]]]
STORES = ["redis", "chroma", "memgraph"]


@pytest.mark.parametrize("store", STORES)
def test_shared_shape(manifests: Manifests, store: str) -> None:
    objects = manifests["staging"]
    name = f"kga-staging-{store}"
    sts = objects[f"StatefulSet/{name}"]["spec"]
    assert sts["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain", "whenScaled": "Retain"}
    (claim,) = sts["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["storageClassName"] == "gp3"
    assert sts["serviceName"] == name
    assert objects[f"Service/{name}"]["spec"]["clusterIP"] == "None"
    assert objects[f"PodDisruptionBudget/{name}"]["spec"]["maxUnavailable"] == 1
    assert objects[f"ServiceAccount/{name}"]["automountServiceAccountToken"] is False
    assert sts["template"]["spec"]["serviceAccountName"] == name


def test_stores_never_scale_out() -> None:
    resources = {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}}
    with pytest.raises(ValueError, match="less than or equal to 1"):
        StoreSettings.model_validate({"resources": resources, "storageSize": "1Gi", "replicas": 2})
