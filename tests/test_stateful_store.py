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


@pytest.mark.parametrize("store", STORES)
def test_stores_prefer_a_zone_without_other_zonal_state(manifests: Manifests, store: str) -> None:
    pod = manifests["staging"][f"StatefulSet/kga-staging-{store}"]["spec"]["template"]
    (term,) = pod["spec"]["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    selector = term["podAffinityTerm"]["labelSelector"]["matchLabels"]
    assert term["podAffinityTerm"]["topologyKey"] == "topology.kubernetes.io/zone"
    # The store's own pod carries the label it avoids, and so does the indexer: one zone loss
    # takes at most one of them (with three zones and up to three stores plus the indexer).
    indexer = manifests["staging"]["Deployment/kga-staging-indexer"]["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod["metadata"]["labels"].items()
    assert selector.items() <= indexer.items()
    assert selector["app.kubernetes.io/instance"] == "kga-staging"
