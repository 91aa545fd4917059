"""ChromaStore: pinned to the client release, reset off outside dev, its config run by a real server."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from rendered import envs_with, run_chroma

from kgstack.chroma_store import HEARTBEAT

Manifests = dict[str, dict[str, dict[str, Any]]]
ROOT = Path(__file__).resolve().parent.parent


def config(manifests: Manifests, env: str) -> dict[str, Any]:
    return json.loads(manifests[env][f"ConfigMap/kga-{env}-chroma"]["data"]["config.yaml"])  # type: ignore[no-any-return]


def test_reset_only_in_dev(manifests: Manifests) -> None:
    assert config(manifests, "dev")["allow_reset"] is True
    assert config(manifests, "staging")["allow_reset"] is False
    assert config(manifests, "prod")["allow_reset"] is False


def test_server_image_matches_the_client_release(manifests: Manifests) -> None:
    image = manifests["prod"]["StatefulSet/kga-prod-chroma"]["spec"]["template"]["spec"]["containers"][0]["image"]
    client = next(
        line
        for line in (ROOT / "docker/backup/requirements.txt").read_text().splitlines()
        if line.startswith("chromadb-client==")
    )
    assert image.startswith(f"docker.io/chromadb/chroma:{client.split('==')[1]}@sha256:")


def test_probes_use_the_heartbeat(manifests: Manifests) -> None:
    (container,) = manifests["prod"]["StatefulSet/kga-prod-chroma"]["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["run", "/etc/chroma/config.yaml"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": HEARTBEAT, "port": "http"}


def test_agent_points_at_the_store(manifests: Manifests) -> None:
    data = manifests["prod"]["ConfigMap/kga-prod-agent"]["data"]
    assert (data["CHROMA_HOST"], data["CHROMA_PORT"]) == ("kga-prod-chroma", "8000")
    assert data["CHROMA_COLLECTION_NAME"] == "knowledge-base-graph"


@pytest.mark.parametrize("env", envs_with("chroma"))
def test_the_rendered_statefulset_runs_on_a_real_chroma(env: str, tmp_path: Path) -> None:
    """The Chroma pod of dist/<env>: its args and mounted config.yaml, on the chroma server of the client's release."""
    with run_chroma(env, tmp_path) as chroma:
        assert any(chroma.pod.volumes["data"].iterdir()), "the server persists into the data volume"
        reset = urllib.request.Request(f"{chroma.url}/api/v2/reset", method="POST")
        if chroma.settings["allow_reset"]:
            assert urllib.request.urlopen(reset, timeout=10).status == 200
        else:
            with pytest.raises(urllib.error.HTTPError):
                urllib.request.urlopen(reset, timeout=5)
