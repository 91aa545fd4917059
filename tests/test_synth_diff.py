"""scripts/synth_diff.py (`make diff`): added, removed and changed objects, named by kind and name."""

from __future__ import annotations

import importlib.util
from types import ModuleType

from conftest import ROOT


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("synth_diff", ROOT / "scripts" / "synth_diff.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


diff = _load()


def _obj(kind: str, name: str, replicas: int) -> str:
    return f"apiVersion: apps/v1\nkind: {kind}\nmetadata:\n  name: {name}\nspec:\n  replicas: {replicas}\n"


def test_each_difference_is_one_line_then_the_changed_yaml() -> None:
    before = {
        "deployment-kga-dev-query.yaml": _obj("Deployment", "kga-dev-query", 2),
        "deployment-kga-dev-web.yaml": _obj("Deployment", "kga-dev-web", 1),
    }
    after = {
        "deployment-kga-dev-query.yaml": _obj("Deployment", "kga-dev-query", 3),
        "statefulset-kga-dev-redis.yaml": _obj("StatefulSet", "kga-dev-redis", 1),
    }
    lines = diff.compare("dev", before, after)
    assert lines[:4] == [
        "dev: 3 object(s) differ from the committed dist/dev/",
        "  ~ changed  Deployment/kga-dev-query (2 lines)",
        "  - removed  Deployment/kga-dev-web",
        "  + added    StatefulSet/kga-dev-redis",
    ]
    assert "--- Deployment/kga-dev-query (dist/dev/deployment-kga-dev-query.yaml)" in lines
    assert "-  replicas: 2" in lines and "+  replicas: 3" in lines


def test_no_difference_is_one_line() -> None:
    same = {"a.yaml": _obj("Deployment", "a", 1)}
    assert diff.compare("prod", same, dict(same)) == ["prod: no change"]
