"""The project layout guards: the constructs/ folder must not shadow the constructs library."""

from __future__ import annotations

import re
import sys

import constructs
from conftest import ROOT


def test_constructs_is_the_library() -> None:
    assert "site-packages" in constructs.__file__
    assert constructs.Construct.__module__ == "constructs"
    assert "constructs._jsii" in sys.modules
    assert not (ROOT / "constructs" / "__init__.py").exists()


def test_our_package_is_imported_by_its_own_name() -> None:
    import kgstack

    assert kgstack.__file__ is not None
    assert kgstack.__file__.startswith(str(ROOT / "constructs" / "kgstack"))
    sources = [
        ROOT / "app.py",
        *(p for top in ("constructs", "tests", "bench", "docker") for p in (ROOT / top).rglob("*.py")),
    ]
    offenders = [
        str(p.relative_to(ROOT))
        for p in sources
        if re.search(r"^\s*(from|import) constructs\.kgstack", p.read_text(), re.MULTILINE)
    ]
    assert offenders == []


def test_cdk8s_plus_is_imported_in_one_place() -> None:
    importers = sorted(
        str(p.relative_to(ROOT)) for p in (ROOT / "constructs").rglob("*.py") if "cdk8s_plus_" in p.read_text()
    )
    assert importers == ["constructs/kgstack/_plus.py"]
