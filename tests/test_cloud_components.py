"""The target-neutral reading of an environment's rendered objects that the cloud targets translate."""

from __future__ import annotations

import json
import re

import pytest
from conftest import ROOT

from kgstack import load_environment
from kgstack.cloud_components import IMAGE_ENTRYPOINTS, CloudComponents, full_command, kubernetes_view, start_script
from kgstack.secret_ref import SecretRef


@pytest.mark.parametrize("image", ["agent", "backup", "web", "redis"])
def test_entrypoints_are_the_dockerfiles(image: str) -> None:
    dockerfile = (ROOT / "docker" / image / "Dockerfile").read_text()
    (entrypoint,) = re.findall(r"^ENTRYPOINT (\[.*\])$", dockerfile, re.M)
    assert tuple(json.loads(entrypoint)) == IMAGE_ENTRYPOINTS[image]


def test_an_environment_without_kubernetes_is_read_from_its_kubernetes_view() -> None:
    env = load_environment(ROOT / "environments" / "aws.yaml")
    assert not env.on_kubernetes
    view = kubernetes_view(env)
    parts = CloudComponents(view.objects, {ref.reference: key for key, ref in env.images.all().items()}).components
    query = parts["query"]
    (agent,) = query.containers
    assert agent.ports == {"http": 8000, "runtime": 8001}
    assert agent.readiness is not None and (agent.readiness.port, agent.readiness.path) == (8001, "/readyz")
    assert agent.secret_env["REDIS_URL"] == SecretRef(name="kga-redis", key="url")
    assert agent.env["CHROMA_HOST"] == "kga-aws-chroma"
    assert agent.files["/data/appSettings.json"].startswith("{")
    assert (query.replicas, query.max_replicas) == (2, 6)
    assert full_command(agent) == ["/usr/bin/tini", "--", "python", "-m", "kga_runtime"]
    assert parts["indexer"].containers[0].writable[0].persistent
    assert view.remote_secrets["kga-agent"] == "kga/aws/agent"


def test_the_start_script_writes_files_and_unsets_their_variables(tmp_path: object) -> None:
    import subprocess
    from pathlib import Path

    folder = Path(str(tmp_path))
    script, plain, secret = start_script(
        {str(folder / "a.conf"): "x = 'y'\n"}, {str(folder / "keys"): SecretRef(name="s", key="k")}
    )
    env = {**plain, **{name: "secret value" for name in secret}, "PATH": "/usr/bin:/bin"}
    result = subprocess.run([*script, "sh", "-c", "env"], env=env, capture_output=True, text=True, check=True)
    assert (folder / "a.conf").read_text() == "x = 'y'\n"
    assert (folder / "keys").read_text() == "secret value"
    assert "KGA_" not in result.stdout
    assert oct((folder / "keys").stat().st_mode & 0o777) == "0o600"
