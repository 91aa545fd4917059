"""One-off patches (``patches:``): kustomize's two kinds, applied by `make synth` before the checks."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ENVIRONMENTS, ROOT, env_data
from test_app import run_app, tree_digest, write_env

from kgstack.environment import EnvironmentFileError, parse_environment
from kgstack.object_patch import ObjectPatch, PatchError, apply_patches

DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web", "labels": {"a": "1"}},
    "spec": {
        "template": {
            "spec": {
                "containers": [
                    {
                        "name": "web",
                        "image": "web:1",
                        "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                        "ports": [{"containerPort": 8080, "name": "http"}],
                    },
                    {"name": "sidecar", "image": "side:1"},
                ],
                "tolerations": [{"key": "x", "operator": "Exists"}],
            }
        }
    },
}


def patch(**fields: Any) -> ObjectPatch:
    return ObjectPatch.model_validate({"target": {"kind": "Deployment", "name": "web"}, "reason": "test", **fields})


def apply(*patches: ObjectPatch) -> dict[str, Any]:
    return apply_patches({"deployment-web.yaml": DEPLOYMENT}, patches)["deployment-web.yaml"]


def test_strategic_merge_merges_containers_and_env_by_name() -> None:
    out = apply(
        patch(
            merge={
                "metadata": {"labels": {"a": None, "b": "2"}},
                "spec": {
                    "template": {
                        "spec": {
                            "containers": [
                                {"name": "web", "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}]},
                                {"name": "sidecar", "$patch": "delete"},
                            ],
                            "tolerations": [{"key": "y", "operator": "Exists"}],
                        }
                    }
                },
            }
        )
    )
    (web,) = out["spec"]["template"]["spec"]["containers"]
    assert web["image"] == "web:1" and web["ports"] == [{"containerPort": 8080, "name": "http"}]
    assert web["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "3"}, {"name": "C", "value": "4"}]
    assert out["spec"]["template"]["spec"]["tolerations"] == [{"key": "y", "operator": "Exists"}]  # replaced
    assert out["metadata"]["labels"] == {"b": "2"}
    assert DEPLOYMENT["metadata"]["labels"] == {"a": "1"}  # the input is not changed


def test_json_operations_apply_in_order() -> None:
    out = apply(
        patch(
            json=[
                {"op": "add", "path": "/metadata/annotations", "value": {"x/y": "1"}},
                {"op": "replace", "path": "/metadata/annotations/x~1y", "value": "2"},
                {"op": "add", "path": "/spec/template/spec/containers/0/env/-", "value": {"name": "D", "value": "5"}},
                {"op": "remove", "path": "/spec/template/spec/containers/1"},
                {"op": "copy", "from": "/metadata/labels", "path": "/spec/template/metadata"},
                {"op": "test", "path": "/spec/template/metadata/a", "value": "1"},
            ]
        )
    )
    assert out["metadata"]["annotations"] == {"x/y": "2"}
    assert [e["name"] for e in out["spec"]["template"]["spec"]["containers"][0]["env"]] == ["A", "B", "D"]
    assert len(out["spec"]["template"]["spec"]["containers"]) == 1
    assert out["spec"]["template"]["metadata"] == {"a": "1"}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"json": [{"op": "replace", "path": "/spec/template/spec/nodeName", "value": "n"}]},
            "patches[0].json[0].path: /spec/template/spec/nodeName does not exist in the object",
        ),
        (
            {"json": [{"op": "remove", "path": "/spec/template/spec/containers/5"}]},
            "patches[0].json[0].path: '5' is not an index of a list of 2 items",
        ),
        (
            {"json": [{"op": "test", "path": "/metadata/name", "value": "api"}]},
            "patches[0].json[0].value: test failed: /metadata/name is 'web'",
        ),
        (
            {"merge": {"spec": {"template": {"spec": {"containers": {"name": "web"}}}}}},
            "patches[0].merge.spec.template.spec.containers: is a mapping in the patch but a list in the object",
        ),
        (
            {"merge": {"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}}},
            "patches[0].merge.spec.template.spec.containers[0]: an item of containers needs its merge key 'name'",
        ),
        ({"merge": {"metadata": {"name": "api"}}}, "patches[0]: a patch may not change an object's kind or name"),
    ],
)
def test_a_patch_that_does_not_apply_names_its_field(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(PatchError) as exc:
        apply(patch(**fields))
    assert str(exc.value).startswith(message), str(exc.value)


def test_an_unknown_target_suggests_the_name() -> None:
    with pytest.raises(PatchError, match=r"^patches\[0\]\.target: no Deployment named wbe; did you mean web\?"):
        apply(ObjectPatch.model_validate({"target": {"kind": "Deployment", "name": "wbe"}, "reason": "t", "merge": {}}))


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ({"merge": {}, "json": []}, "patches[0].merge: set exactly one of merge and json"),
        ({"json": [{"op": "move", "path": "/a"}]}, "patches[0].json[0].from: required with op move"),
        ({"json": [{"op": "add", "path": "/a"}]}, "patches[0].json[0].value: required with op add"),
        ({"json": [{"op": "add", "path": "a", "value": 1}]}, "patches[0].json[0].path: String should match"),
        ({"merge": {}, "reason": None}, "patches[0].reason: Input should be a valid string"),
    ],
)
def test_a_malformed_patch_is_refused_when_the_file_loads(item: dict[str, Any], message: str) -> None:
    data = env_data("dev")
    data["patches"] = [{"target": {"kind": "Deployment", "name": "kga-dev-web"}, "reason": "r", **item}]
    with pytest.raises(EnvironmentFileError) as exc:
        parse_environment(data, source="dev.yaml")
    assert any(p.startswith(f"dev.yaml: {message}") for p in exc.value.problems), exc.value.problems


# ------------------------------------------------------------------ make synth


@pytest.fixture
def workspace(tmp_path: Path) -> tuple[Path, Path]:
    envdir, outdir = tmp_path / "environments", tmp_path / "dist"
    shutil.copytree(ENVIRONMENTS, envdir)
    shutil.copytree(ROOT / "dist", outdir)
    return envdir, outdir


def with_patches(envdir: Path, *patches: dict[str, Any]) -> None:
    data = env_data("dev")
    data["patches"] = list(patches)
    write_env(envdir, "dev", data)


def test_synth_applies_the_patches_then_checks(workspace: tuple[Path, Path]) -> None:
    envdir, outdir = workspace
    with_patches(
        envdir,
        {
            "target": {"kind": "Deployment", "name": "kga-dev-web"},
            "reason": "a larger UI while the load test runs",
            "merge": {
                "spec": {
                    "template": {
                        "spec": {"containers": [{"name": "web", "resources": {"limits": {"memory": "300Mi"}}}]}
                    }
                }
            },
        },
        {
            "target": {"kind": "Service", "name": "kga-dev-web"},
            "reason": "the cloud's health checker",
            "json": [{"op": "add", "path": "/metadata/annotations/acme.example.com~1probe", "value": "on"}],
        },
    )
    result = run_app(envdir, outdir)
    assert result.returncode == 0, result.stderr
    web = yaml.safe_load((outdir / "dev" / "deployment-kga-dev-web.yaml").read_text())
    (container,) = web["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["memory"] == "300Mi"
    assert container["resources"]["requests"]  # merged, not replaced
    service = yaml.safe_load((outdir / "dev" / "service-kga-dev-web.yaml").read_text())
    assert service["metadata"]["annotations"]["acme.example.com/probe"] == "on"


@pytest.mark.parametrize(
    ("patch_", "message"),
    [
        (
            {
                "target": {"kind": "Deployment", "name": "kga-dev-query"},
                "reason": "r",
                "json": [{"op": "replace", "path": "/spec/template/spec/container/0/image", "value": "x"}],
            },
            "error: environments/dev.yaml: patches[0].json[0].path: /spec/template/spec/container does not exist",
        ),
        (  # applies, but the schema check refuses the result
            {
                "target": {"kind": "Deployment", "name": "kga-dev-web"},
                "reason": "r",
                "merge": {"spec": {"replicas": "two"}},
            },
            "error: environments/dev.yaml: dev/deployment-kga-dev-web.yaml: Kubernetes 1.31: "
            "Deployment/kga-dev-web.spec.replicas",
        ),
        (  # applies, but the cross-reference gate refuses the result
            {
                "target": {"kind": "Deployment", "name": "kga-dev-query"},
                "reason": "r",
                "merge": {"spec": {"template": {"spec": {"serviceAccountName": "nobody"}}}},
            },
            "error: environments/dev.yaml: dev/deployment-kga-dev-query.yaml: spec.template.spec.serviceAccountName: "
            "ServiceAccount nobody does not exist",
        ),
        (  # issue 24: the indexer moved after its claim, which Argo CD would wait on forever
            {
                "target": {"kind": "Deployment", "name": "kga-dev-indexer"},
                "reason": "r",
                "merge": {"metadata": {"annotations": {"argocd.argoproj.io/sync-wave": "3"}}},
            },
            "error: environments/dev.yaml: dev/persistentvolumeclaim-kga-dev-indexer.yaml: "
            "metadata.annotations[argocd.argoproj.io/sync-wave]: PVC kga-dev-indexer is in sync wave 2, "
            "its first consumer Deployment kga-dev-indexer in wave 3",
        ),
    ],
)
def test_a_bad_patch_fails_and_leaves_dist_untouched(
    workspace: tuple[Path, Path], patch_: dict[str, Any], message: str
) -> None:
    envdir, outdir = workspace
    before = tree_digest(outdir)
    with_patches(envdir, patch_)
    result = run_app(envdir, outdir)
    assert result.returncode == 1
    assert any(line.startswith(message) for line in result.stderr.splitlines()), result.stderr
    assert tree_digest(outdir) == before
