"""Write charts to ``dist/`` for review and GitOps: atomically, deterministically, validated.

Layout: ``dist/<env>/<kind>-<name>.yaml`` (one object per file, so a reviewer
finds each resource by name and a one-field change is a one-line diff), plus a
``kustomization.yaml`` listing them for kustomize and Flux users.

The new tree is written to a temporary sibling folder, checked, and only then
swapped in; on any error ``dist/`` is left byte-identical.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import cdk8s
import yaml

from .argocd_application import SYNC_WAVE_ANNOTATION, claim_waves, sync_wave


class SynthError(Exception):
    """The stack is inconsistent; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class _Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
    """Block style for multi-line strings (appSettings.json stays line-diffable)."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def to_yaml(manifest: Mapping[str, Any]) -> str:
    return yaml.dump(manifest, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=1 << 16)


def file_name(manifest: Mapping[str, Any]) -> str:
    kind = str(manifest["kind"]).lower()
    return f"{kind}-{manifest['metadata']['name']}.yaml"


_VALIDATION_FAILED = "Validation failed with the following errors:"


def validation_problems(error: BaseException) -> list[str] | None:
    """The ``path: message`` lines of the constructs' validations when ``error`` is cdk8s reporting them
    (through jsii, with a JavaScript stack); ``None`` for any other error."""
    # cdk8s validates the whole app inside toJson and synth, and reports "[path] message" lines.
    message = str(error)
    if not isinstance(error, RuntimeError) or _VALIDATION_FAILED not in message:
        return None
    lines = message.split(_VALIDATION_FAILED, 1)[1].strip().splitlines()
    return [re.sub(r"^\[(.+?)\] ", r"\1: ", line.strip()) for line in lines if line.strip()]


def manifests(chart: cdk8s.Chart) -> dict[str, dict[str, Any]]:
    """File name to object for every object of ``chart``; runs the app's validations."""
    try:
        rendered = chart.to_json()
    except RuntimeError as exc:
        problems = validation_problems(exc)
        if problems is None:
            raise
        raise SynthError(problems) from None
    objects: dict[str, dict[str, Any]] = {}
    for manifest in rendered:
        # Argo CD applies by wave: namespace and custom resources before workloads before the edge.
        annotations = manifest["metadata"].setdefault("annotations", {})
        if manifest["kind"] != "PersistentVolumeClaim":
            annotations.setdefault(SYNC_WAVE_ANNOTATION, sync_wave(manifest["kind"]))
        name = file_name(manifest)
        if name in objects:
            raise SynthError([f"{chart.node.path}: two objects would be written to {name}"])
        objects[name] = manifest
    # A claim by dependency, not by kind: in the wave of the first pod that mounts it.
    claim_waves(objects)
    return objects


def render(objects: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """File name to YAML text, plus the ``kustomization.yaml`` that lists them."""
    files = {name: to_yaml(obj) for name, obj in objects.items()}
    files["kustomization.yaml"] = to_yaml(
        {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": sorted(objects),
        }
    )
    return dict(sorted(files.items()))


Checker = Callable[[str, dict[str, dict[str, Any]]], list[str]]
"""Extra check over one chart's objects (by file name); returns problems."""


def synth(charts: Iterable[cdk8s.Chart], checks: Iterable[Checker] = ()) -> dict[str, dict[str, str]]:
    """:func:`synth_objects`, rendered to YAML files (plus each folder's ``kustomization.yaml``)."""
    return {env: render(objects) for env, objects in synth_objects(charts, checks).items()}


Transform = Callable[[str, dict[str, dict[str, Any]]], dict[str, dict[str, Any]]]
"""Changes one chart's objects (by file name) before the checks; raises :class:`SynthError`."""


def synth_objects(
    charts: Iterable[cdk8s.Chart], checks: Iterable[Checker] = (), transform: Transform | None = None
) -> dict[str, dict[str, dict[str, Any]]]:
    """Validate every chart and return ``{chart id: {file name: object}}``; raises :class:`SynthError`.

    ``transform`` (the environment's patches) runs on each chart's objects before ``checks``, so
    the checks judge exactly what is written. Give each chart its own ``cdk8s.App``:
    ``Chart.to_json`` validates the whole app, so charts sharing one app would be validated once per chart.
    """
    problems: list[str] = []
    objects: dict[str, dict[str, dict[str, Any]]] = {}
    for chart in charts:
        try:
            objects[chart.node.id] = manifests(chart)
            if transform is not None:
                objects[chart.node.id] = transform(chart.node.id, objects[chart.node.id])
        except SynthError as exc:
            problems.extend(exc.problems)
    if problems:
        raise SynthError(problems)
    for check in checks:
        for env, env_objects in objects.items():
            problems.extend(check(env, env_objects))
    if problems:
        raise SynthError(problems)
    return objects


def write_tree(rendered: Mapping[str, Mapping[str, str]], outdir: Path) -> None:
    """Replace ``outdir`` with ``rendered`` in one swap; on error ``outdir`` is untouched."""
    outdir = outdir.resolve()
    outdir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.", dir=outdir.parent))
    staging.chmod(0o755)  # mkdtemp's 0700 would otherwise become dist/'s mode
    try:
        for env, files in rendered.items():
            (staging / env).mkdir(parents=True, exist_ok=True)
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
