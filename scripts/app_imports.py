#!/usr/bin/env python3
"""List the module paths and routes of the Knowledge Graph Agent (AST scan of a checkout, no code copied).

    python3 scripts/app_imports.py <app checkout> [--commit SHA] > docker/agent/app-imports.json

Reads ``main.py`` and ``src/**/*.py`` of the checkout, collects every absolute
``import a.b`` and ``from a.b import name``, drops the standard library and the
app's own ``src`` package, and prints JSON: for each module path, the names
taken from it and the source files that import it; and every route handler
(method, path as declared, async or not, file), which the stand-in app mirrors; every file of the checkout;
and the names each source file defines (functions, classes, ``Class.method``, module-level names). The image
test imports every module entry inside the built image (tests/test_images.py); docs/agent.md cites it, and
tests/test_docs.py checks each source path and name docs/agent.md cites against it.
Standard library only.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path

OWN = {"src", "main"}


def _sources(root: Path) -> list[Path]:
    files = [root / "main.py", *sorted((root / "src").rglob("*.py"))]
    return [f for f in files if f.is_file()]


def scan(root: Path) -> dict[str, dict[str, list[str]]]:
    """``{module path: {"names": [...], "sources": [...]}}`` for third-party imports under ``root``."""
    found: dict[str, dict[str, set[str]]] = {}

    def add(module: str, name: str | None, source: str) -> None:
        top = module.split(".", maxsplit=1)[0]
        if top in OWN or top in sys.stdlib_module_names or top == "__future__":
            return
        entry = found.setdefault(module, {"names": set(), "sources": set()})
        entry["sources"].add(source)
        if name and name != "*":
            entry["names"].add(name)

    for path in _sources(root):
        rel = path.relative_to(root).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=rel)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    add(alias.name, None, rel)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                for alias in node.names:
                    add(node.module, alias.name, rel)
    return {
        module: {"names": sorted(entry["names"]), "sources": sorted(entry["sources"])}
        for module, entry in sorted(found.items())
    }


_METHODS = {"get", "post", "put", "delete", "patch"}


def routes(root: Path) -> list[dict[str, str]]:
    """Every ``@<router or app>.<method>("path")`` handler: method, path as declared, handler, file."""
    found = []
    for path in _sources(root):
        rel = path.relative_to(root).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=rel)):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for deco in node.decorator_list:
                if (
                    isinstance(deco, ast.Call)
                    and isinstance(deco.func, ast.Attribute)
                    and deco.func.attr in _METHODS
                    and deco.args
                    and isinstance(deco.args[0], ast.Constant)
                    and isinstance(deco.args[0].value, str)
                ):
                    found.append(
                        {
                            "method": deco.func.attr.upper(),
                            "path": deco.args[0].value,
                            "handler": node.name,
                            "async": str(isinstance(node, ast.AsyncFunctionDef)).lower(),
                            "source": rel,
                        }
                    )
    return sorted(found, key=lambda r: (r["source"], r["path"], r["method"]))


def files(root: Path) -> list[str]:
    """Every file of the checkout (not ``.git`` or bytecode), as a path relative to it."""
    skip = {".git", "__pycache__"}
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and not skip.intersection(p.relative_to(root).parts)
    )


def definitions(root: Path) -> dict[str, list[str]]:
    """Per source file, the names it defines at module level and the methods of its classes."""
    found: dict[str, list[str]] = {}
    for path in _sources(root):
        rel = path.relative_to(root).as_posix()
        names: set[str] = set()
        for node in ast.parse(path.read_text(encoding="utf-8"), filename=rel).body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            if isinstance(node, ast.ClassDef):
                names.update(
                    f"{node.name}.{item.name}"
                    for item in node.body
                    if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
                )
            if isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names.update(t.id for t in targets if isinstance(t, ast.Name))
        found[rel] = sorted(names)
    return found


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkout", type=Path, help="directory holding the app's main.py and src/")
    ap.add_argument("--commit", default="", help="the commit the checkout is at (recorded in the output)")
    args = ap.parse_args()
    if not (args.checkout / "src").is_dir():
        print(f"{args.checkout}: no src/ directory (not a knowledge-graph-agent checkout)", file=sys.stderr)
        return 2
    out = {
        "repository": "anhhai680/knowledge-graph-agent",
        "commit": args.commit,
        "modules": scan(args.checkout),
        "routes": routes(args.checkout),
        "files": files(args.checkout),
        "definitions": definitions(args.checkout),
    }
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
