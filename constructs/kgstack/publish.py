"""Write charts to ``dist/`` for review and GitOps: atomically, deterministically, validated.

Layout: ``dist/<env>/<kind>-<name>.yaml`` (one object per file, so a reviewer
finds each resource by name and a one-field change is a one-line diff), plus a
``kustomization.yaml`` listing them for kustomize and Flux users.

The new tree is written to a temporary sibling folder, checked, and only then
swapped in; on any error ``dist/`` is left byte-identical.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import cdk8s
import yaml

from .validation import collect_errors


class SynthError(Exception):
    """The stack is inconsistent; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class _Dumper(yaml.SafeDumper):
    """Block style for multi-line strings (appSettings.json stays line-diffable)."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def to_yaml(manifest: Mapping[str, Any]) -> str:
    return yaml.dump(
        manifest, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=1 << 16
    )


def file_name(manifest: Mapping[str, Any]) -> str:
    kind = str(manifest["kind"]).lower()
    return f"{kind}-{manifest['metadata']['name']}.yaml"


def render(chart: cdk8s.Chart) -> dict[str, str]:
    """File name to YAML text for every object of ``chart``."""
    files: dict[str, str] = {}
    for manifest in chart.to_json():
        name = file_name(manifest)
        if name in files:
            raise SynthError([f"{chart.node.path}: two objects would be written to {name}"])
        files[name] = to_yaml(manifest)
    files["kustomization.yaml"] = to_yaml({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": sorted(files),
    })
    return dict(sorted(files.items()))


Checker = Callable[[str, dict[str, str]], list[str]]
"""Extra check over one chart's rendered files; returns problems."""


def synth(app: cdk8s.App, charts: Iterable[cdk8s.Chart],
          checks: Iterable[Checker] = ()) -> dict[str, dict[str, str]]:
    """Validate the construct tree and render every chart; raises :class:`SynthError`."""
    problems = collect_errors(app)
    if problems:
        raise SynthError(problems)
    rendered = {chart.node.id: render(chart) for chart in charts}
    checks = list(checks)
    for env, files in rendered.items():
        for check in checks:
            problems.extend(check(env, files))
    if problems:
        raise SynthError(problems)
    return rendered


def write_tree(rendered: Mapping[str, Mapping[str, str]], outdir: Path) -> None:
    """Replace ``outdir`` with ``rendered`` in one swap; on error ``outdir`` is untouched."""
    outdir = outdir.resolve()
    outdir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.", dir=outdir.parent))
    staging.chmod(0o755)  # mkdtemp's 0700 would otherwise become dist/'s mode
    try:
        for env, files in rendered.items():
            (staging / env).mkdir()
            for name, text in files.items():
                (staging / env / name).write_text(text, encoding="utf-8")
        if outdir.exists():
            retired = outdir.with_name(f".{outdir.name}.old")
            shutil.rmtree(retired, ignore_errors=True)
            os.rename(outdir, retired)
            os.rename(staging, outdir)
            shutil.rmtree(retired)
        else:
            os.rename(staging, outdir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
