"""What a good Helm chart lets you set on every pod, applied to every workload and run-once Job in one place.

Tolerations, a node selector, image pull Secrets, a priority class, extra labels
and annotations, and extra environment variables per component are settings of the
environment (``workloads:``), not props of each construct: :func:`apply_to_chart`
visits every object of a chart once it is built and patches each pod template
(``cdk8s.ApiObject.add_json_patch``), and :func:`apply_to_manifest` does the same to
a rendered one-off Job (``make restore``, ``make backups``).

What the stack owns is never overridden: a label under ``app.kubernetes.io/`` is
refused by the model (selectors use them), and a label, annotation or environment
variable the stack already sets is a synth error naming the field to change.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Self, cast

import cdk8s
from constructs import Construct
from pydantic import AfterValidator, Field, model_validator

from .model import FieldError, Spec
from .validation import add_check

Obj = dict[str, Any]

_DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_NAME = r"([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9]"
_QUALIFIED = re.compile(rf"^(?:(?P<prefix>[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)/)?{_NAME}$")
_LABEL_VALUE = re.compile(rf"^({_NAME})?$")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
OWN_LABEL_PREFIX = "app.kubernetes.io/"
"""Labels the stack's selectors are made of; never settable here."""

DnsSubdomain = Annotated[str, Field(pattern=_DNS_SUBDOMAIN, max_length=253)]


def _key(value: str) -> str:
    match = _QUALIFIED.match(value)
    if not match or len(match["prefix"] or "") > 253:
        raise ValueError(f"{value!r} is not a Kubernetes label or annotation key ([prefix/]name, name <= 63 chars)")
    return value


QualifiedKey = Annotated[str, AfterValidator(_key)]


def _label_values(labels: dict[str, str]) -> dict[str, str]:
    problems = []
    for key, value in labels.items():
        if key.startswith(OWN_LABEL_PREFIX):
            problems.append((key, f"{OWN_LABEL_PREFIX}* labels are the stack's selectors and cannot be set here"))
        elif not _LABEL_VALUE.match(value):
            problems.append((key, f"{value!r} is not a label value (<= 63 chars: letters, digits, '-', '_', '.')"))
    if problems:
        raise FieldError(*problems)
    return labels


def _label_value(value: str) -> str:
    if not _LABEL_VALUE.match(value):
        raise ValueError(f"{value!r} is not a label value (<= 63 chars: letters, digits, '-', '_', '.')")
    return value


def _env_names(env: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    bad = [
        (f"{c}.{n}", "not an environment variable name") for c, v in env.items() for n in v if not _ENV_NAME.match(n)
    ]
    if bad:
        raise FieldError(*bad)
    return env


class Toleration(Spec):
    """A taint the pods tolerate (Kubernetes ``Toleration``)."""

    key: str | None = None
    """Taint key; empty with ``operator: Exists`` tolerates every taint."""
    operator: Literal["Equal", "Exists"] = "Equal"
    """``Equal`` matches ``value``; ``Exists`` matches any value of ``key``."""
    value: str | None = None
    """Taint value for ``Equal``; must be empty for ``Exists``."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """Taint effect to match; empty matches every effect."""
    toleration_seconds: Annotated[int, Field(ge=0)] | None = None
    """How long a pod stays bound after a ``NoExecute`` taint appears; only with ``effect: NoExecute``."""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.operator == "Exists" and self.value:
            raise FieldError(("value", "must be empty with operator Exists"))
        if self.operator == "Equal" and not self.key:
            raise FieldError(("key", "required with operator Equal (only Exists may leave it empty)"))
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            raise FieldError(("tolerationSeconds", "only applies with effect NoExecute"))
        return self

    def to_k8s(self) -> Obj:
        out: Obj = {"key": self.key, "operator": self.operator, "value": self.value, "effect": self.effect}
        out["tolerationSeconds"] = self.toleration_seconds
        return {k: v for k, v in out.items() if v is not None}


class WorkloadSettings(Spec):
    """Pod settings applied to every workload and run-once Job of the environment (Deployments,
    StatefulSets, CronJobs and the Jobs of ``make restore`` and ``make backups``)."""

    tolerations: list[Toleration] = Field(default_factory=list)
    """Taints every pod tolerates, e.g. a dedicated node pool's ``NoSchedule`` taint."""
    node_selector: dict[QualifiedKey, Annotated[str, AfterValidator(_label_value)]] = Field(default_factory=dict)
    """Node labels every pod requires, e.g. ``{kubernetes.io/arch: amd64}``."""
    image_pull_secrets: list[DnsSubdomain] = Field(default_factory=list)
    """Secrets of type ``kubernetes.io/dockerconfigjson`` (key ``.dockerconfigjson``) the kubelet pulls
    private images with, e.g. ``kga-registry`` for GHCR. Outside dev an ExternalSecret makes each one
    (remote key ``<prefix><name without kga->``); in dev you create it (docs/secrets.md)."""
    priority_class_name: DnsSubdomain | None = None
    """PriorityClass of every pod; it must exist in the cluster. Empty: the cluster's default."""
    labels: Annotated[dict[QualifiedKey, str], AfterValidator(_label_values)] = Field(default_factory=dict)
    """Extra labels on every object and pod, e.g. a cost centre; not ``app.kubernetes.io/*`` nor a label
    the stack sets."""
    annotations: dict[QualifiedKey, str] = Field(default_factory=dict)
    """Extra annotations on every object and pod; not one the stack sets."""
    env: Annotated[dict[str, dict[str, str]], AfterValidator(_env_names)] = Field(default_factory=dict)
    """Extra environment variables by component (``app.kubernetes.io/component``: ``query``,
    ``indexer``, ``web``, ``redis``, ``backup``, ...), set on each container of its pods; never one
    the stack sets (change the setting that renders it instead)."""

    @property
    def empty(self) -> bool:
        return self == WorkloadSettings()


WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")
FIELD = "workloads"
"""Where the settings live in the environment file; problems name ``workloads.<field>``."""


def _template_path(kind: str) -> list[str] | None:
    if kind == "CronJob":
        return ["spec", "jobTemplate", "spec", "template"]
    return ["spec", "template"] if kind in WORKLOAD_KINDS else None


Problems = dict[str, list[str]]
"""Field path (``workloads.labels.team``) -> where the stack already sets it; one error line per field."""


def _merge(where: str, owned: Mapping[str, str], extra: Mapping[str, str], field: str, problems: Problems) -> Obj:
    for key, value in extra.items():
        if key in owned and owned[key] != value:
            problems.setdefault(f"{FIELD}.{field}.{key}", []).append(f"{where} ({owned[key]!r})")
    return {**owned, **{key: value for key, value in extra.items() if key not in owned}}


def _lines(problems: Problems) -> list[str]:
    return [
        f"{field}: the stack already sets it on {', '.join(dict.fromkeys(places))}; "
        "the stack's value is kept: remove it here, or change the setting that renders it"
        for field, places in problems.items()
    ]


def apply_to_manifest(
    manifest: Obj, settings: WorkloadSettings, configmaps: Mapping[str, Mapping[str, str]] | None = None
) -> tuple[Obj, list[str]]:
    """``manifest`` with ``settings`` applied, and the problems (``workloads.<field>: reason``).

    ``configmaps`` (name -> data) are the ConfigMaps pods read with ``envFrom``: their keys are env the stack owns.
    """
    out, problems = _apply(manifest, settings, configmaps or {}, {})
    return out, _lines(problems)


def _apply(
    manifest: Obj, settings: WorkloadSettings, configmaps: Mapping[str, Mapping[str, str]], problems: Problems
) -> tuple[Obj, Problems]:
    out = copy.deepcopy(manifest)
    name = f"{out['kind']} {out['metadata'].get('name')}"
    meta = out["metadata"]
    if settings.labels:
        meta["labels"] = _merge(name, meta.get("labels") or {}, settings.labels, "labels", problems)
    if settings.annotations:
        meta["annotations"] = _merge(name, meta.get("annotations") or {}, settings.annotations, "annotations", problems)
    path = _template_path(out["kind"])
    if path is not None:
        _apply_to_pod(_at(out, path), settings, f"{name} pod template", configmaps, problems)
    return out, problems


def _apply_to_pod(
    template: Obj, s: WorkloadSettings, where: str, configmaps: Mapping[str, Mapping[str, str]], problems: Problems
) -> None:
    meta = template.setdefault("metadata", {})
    if s.labels:
        meta["labels"] = _merge(where, meta.get("labels") or {}, s.labels, "labels", problems)
    if s.annotations:
        meta["annotations"] = _merge(where, meta.get("annotations") or {}, s.annotations, "annotations", problems)
    spec = template["spec"]
    if s.tolerations:
        spec["tolerations"] = [*(spec.get("tolerations") or []), *(t.to_k8s() for t in s.tolerations)]
    if s.node_selector:
        spec["nodeSelector"] = _merge(where, spec.get("nodeSelector") or {}, s.node_selector, "nodeSelector", problems)
    if s.image_pull_secrets:
        names = [ref["name"] for ref in spec.get("imagePullSecrets") or []]
        spec["imagePullSecrets"] = [{"name": n} for n in dict.fromkeys([*names, *s.image_pull_secrets])]
    if s.priority_class_name:
        spec["priorityClassName"] = s.priority_class_name
    component = (meta.get("labels") or {}).get("app.kubernetes.io/component", "")
    extra = s.env.get(component, {})
    for container in (spec.get("containers") or []) if extra else []:
        owned = {e["name"]: f"{where}, container {container['name']}" for e in container.get("env") or []}
        for source in container.get("envFrom") or []:
            ref = (source.get("configMapRef") or {}).get("name")
            owned |= {key: f"ConfigMap {ref} of container {container['name']}" for key in configmaps.get(ref or "", {})}
        for key in extra:
            if key in owned:
                problems.setdefault(f"{FIELD}.env.{component}.{key}", []).append(owned[key])
        container["env"] = [
            *(container.get("env") or []),
            *({"name": k, "value": v} for k, v in sorted(extra.items()) if k not in owned),
        ]


def _at(manifest: Obj, path: list[str]) -> Obj:
    for part in path:
        manifest = manifest[part]
    return manifest


def _pod_patches(before: Obj, after: Obj) -> list[cdk8s.JsonPatch]:
    """JSON patches that turn ``before``'s pod template into ``after``'s, field by field.

    Never one patch of the whole template: the typed ``k8s`` classes re-read their output after the
    patches, and a port given by name (``IntOrString``) would not survive that.
    """
    path = _template_path(before["kind"])
    if path is None:
        return []
    old, new = _at(before, path), _at(after, path)
    base = "/" + "/".join(path)
    ops = [
        cdk8s.JsonPatch.add(f"{base}/metadata/{key}", new["metadata"][key])
        for key in ("labels", "annotations")
        if new["metadata"].get(key) != (old.get("metadata") or {}).get(key)
    ]
    ops += [
        cdk8s.JsonPatch.add(f"{base}/spec/{key}", new["spec"][key])
        for key in ("tolerations", "nodeSelector", "imagePullSecrets", "priorityClassName")
        if new["spec"].get(key) != old["spec"].get(key)
    ]
    for i, (was, now) in enumerate(zip(old["spec"]["containers"], new["spec"]["containers"], strict=True)):
        env = f"{base}/spec/containers/{i}/env"
        added = (now.get("env") or [])[len(was.get("env") or []) :]
        if added and not was.get("env"):
            ops.append(cdk8s.JsonPatch.add(env, added))
        else:
            ops += [cdk8s.JsonPatch.add(f"{env}/-", item) for item in added]
    return ops


def _components(manifests: list[Obj]) -> set[str]:
    found = set()
    for manifest in manifests:
        path = _template_path(manifest["kind"])
        if path is None:
            continue
        template: Obj = manifest
        for part in path:
            template = template[part]
        found.add(((template.get("metadata") or {}).get("labels") or {}).get("app.kubernetes.io/component", ""))
    return found - {""}


def apply_to_chart(chart: Construct, settings: WorkloadSettings) -> None:
    """Patch every object under ``chart`` built so far; problems fail the synth (``workloads.<field>: reason``)."""
    if settings.empty:
        return
    objects = [cast(cdk8s.ApiObject, c) for c in chart.node.find_all() if cdk8s.ApiObject.is_api_object(c)]
    # Rendering is a jsii round trip per object: only what the settings touch or read.
    wanted = {*WORKLOAD_KINDS, *(["ConfigMap"] if settings.env else [])}
    everything = bool(settings.labels or settings.annotations)
    rendered: list[tuple[cdk8s.ApiObject, Obj]] = [(o, o.to_json()) for o in objects if everything or o.kind in wanted]
    configmaps = {m["metadata"]["name"]: m.get("data") or {} for _, m in rendered if m["kind"] == "ConfigMap"}
    found: Problems = {}
    for obj, manifest in rendered:
        patched, _ = _apply(manifest, settings, configmaps, found)
        meta, before = patched["metadata"], manifest["metadata"]
        for key, value in (meta.get("labels") or {}).items():
            if (before.get("labels") or {}).get(key) != value:
                obj.metadata.add_label(key, value)
        for key, value in (meta.get("annotations") or {}).items():
            if (before.get("annotations") or {}).get(key) != value:
                obj.metadata.add_annotation(key, value)
        for op in _pod_patches(manifest, patched):
            obj.add_json_patch(op)
    problems = _lines(found)
    components = _components([m for _, m in rendered])
    for component in settings.env:
        if component not in components:
            problems.append(
                f"{FIELD}.env.{component}: no workload has this component; components: {', '.join(sorted(components))}"
            )
    if problems:
        add_check(chart, lambda: problems)
