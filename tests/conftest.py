"""Shared fixtures: the environments, and their synthesized files built in-process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parent.parent

# First: importing kgstack picks a Node that jsii supports (kgstack._node) before cdk8s starts it.
import kgstack  # noqa: E402, F401

# isort: split
import cdk8s  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402

from kgstack import AgentStack, Environment, load_environments  # noqa: E402
from kgstack.publish import synth  # noqa: E402

if TYPE_CHECKING:
    from control_plane import ControlPlane

ENVIRONMENTS = ROOT / "environments"


# Under `make test` the set-up's Go builds (scripts/setup.sh) go on while the tests run. A module that
# runs a Go-built tool says which builds it needs, ``pytestmark = pytest.mark.go_build("helm")``: it runs
# after the other tests, in the order its builds end on a fresh machine (so that no module waits for a late
# build while one whose builds have ended could run), and its first test waits for those builds.
def _go_build_rank(item: pytest.Item) -> int:
    from tools import GO_BUILDS_IN_COLD_ORDER

    names = [name for marker in item.iter_markers("go_build") for name in marker.args]
    return max((GO_BUILDS_IN_COLD_ORDER.index(name) + 1 for name in names), default=0)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=_go_build_rank)  # stable, and the markers are per module: modules stay whole


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    from tools import wait_for_go_build

    for marker in item.iter_markers("go_build"):
        for name in marker.args:
            wait_for_go_build(name)


@pytest.fixture(scope="session")
def all_environments() -> dict[str, Environment]:
    """Every environment file, whatever it targets."""
    return {env.name: env for env in load_environments(ENVIRONMENTS)}


@pytest.fixture(scope="session")
def environments(all_environments: dict[str, Environment]) -> dict[str, Environment]:
    """The environments that target Kubernetes (the others have no manifests)."""
    return {name: env for name, env in all_environments.items() if env.on_kubernetes}


@pytest.fixture(scope="session")
def rendered(environments: dict[str, Environment]) -> dict[str, dict[str, str]]:
    """``{env: {file name: YAML}}`` exactly as app.py writes it."""
    return synth([AgentStack(cdk8s.App(), env) for env in environments.values()])


@pytest.fixture(scope="session")
def manifests(rendered: dict[str, dict[str, str]]) -> dict[str, dict[str, dict]]:  # type: ignore[type-arg]
    """``{env: {"Kind/name": object}}`` for targeted asserts."""
    out: dict[str, dict[str, dict]] = {}  # type: ignore[type-arg]
    for env, files in rendered.items():
        out[env] = {}
        for name, text in files.items():
            if name != "kustomization.yaml":
                obj = yaml.safe_load(text)
                out[env][f"{obj['kind']}/{obj['metadata']['name']}"] = obj
    return out


ENV_DIRS = sorted(
    p.name
    for p in (ROOT / "dist").iterdir()
    if p.is_dir() and p.name != "argocd" and (p / "kustomization.yaml").exists()
)
"""dist/<env>/ folders of Kubernetes manifests (dist/argocd/ holds the Argo CD Applications, not an environment;
an environment that targets only Compose has no manifests, just its compose/ folder)."""

OTHER_TARGET_FOLDERS = ("compose", "ecs", "aci")
"""dist/<env>/<target>/: the output of the targets other than Kubernetes (no Kubernetes objects)."""


def kubernetes_yaml() -> list[Path]:
    """Every YAML file of dist/ that Kubernetes or kustomize reads (not the other targets' folders)."""
    return sorted(
        p
        for p in (ROOT / "dist").rglob("*.yaml")
        if not any(part in OTHER_TARGET_FOLDERS for part in p.relative_to(ROOT / "dist").parts[1:-1])
    )


def dist_files() -> list[Path]:
    return [p for p in kubernetes_yaml() if p.name != "kustomization.yaml"]


def env_data(_name: str = "dev", /, **changes: object) -> dict:  # type: ignore[type-arg]
    """An environment file's data with dotted-path ``changes`` (``query__replicas=3``)."""
    data = yaml.safe_load((ENVIRONMENTS / f"{_name}.yaml").read_text())
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        node = data
        for key in parents:
            node = node.setdefault(key, {})
        if value is DELETE:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return data  # type: ignore[no-any-return]


DELETE = object()
"""Marker for :func:`env_data`: remove the field."""


def build(env: Environment) -> tuple[cdk8s.App, AgentStack]:
    app = cdk8s.App()
    return app, AgentStack(app, env)


DRILLED = "prod"
"""The environment whose cloud profile the control plane's nodes and StorageClasses copy."""


@pytest.fixture(scope="session")
def cp() -> Iterator[ControlPlane]:
    """The pinned control plane (tests/control_plane.py) on loopback: started once per test session, on
    first use, and stopped at its end."""
    from control_plane import binaries_missing, control_plane
    from tools import missing

    if binaries_missing():
        missing(f"{', '.join(binaries_missing())} not built (scripts/setup.sh test builds the control plane)")
    provider = yaml.safe_load((ENVIRONMENTS / f"{DRILLED}.yaml").read_text())["cloud"]["provider"]
    with control_plane(provider) as plane:
        yield plane
