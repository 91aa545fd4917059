"""Synth-time checks: a callable that returns problem strings, registered on a node, and their messages."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING

import jsii
from constructs import Construct, IValidation

from .footprint import Footprint
from .quantity import parse_quantity

if TYPE_CHECKING:
    from .environment import Quota


@jsii.implements(IValidation)
class _Check:
    def __init__(self, check: Callable[[], list[str]]) -> None:
        self._check = check

    def validate(self) -> list[str]:
        return self._check()


def add_check(construct: Construct, check: Callable[[], list[str]]) -> None:
    """Run ``check`` when the app synthesizes; each returned string is one error."""
    construct.node.add_validation(_Check(check))


def collect_errors(root: Construct) -> list[str]:
    """Every validation error under ``root``, as ``<construct path>: <message>``."""
    errors: list[str] = []
    for child in root.node.find_all():
        node = child.node  # each attribute access is a round trip to the jsii kernel
        errors.extend(f"{node.path}: {message}" for message in node.validate())
    return errors


QUOTA_HEADROOM = Decimal("1.2")
"""The quota to set: what the stack needs at maximum scale plus 20%, so the next small change still fits."""

_GI = Decimal(2) ** 30


def _cores(value: Decimal) -> str:
    shown = f"{value.quantize(Decimal('0.001')).normalize():f}"
    return f"{shown} core" if shown == "1" else f"{shown} cores"


def _gib(value: Decimal) -> str:
    return f"{(value / _GI).quantize(Decimal('0.01')).normalize():f}Gi"


def _count(value: Decimal) -> str:
    return str(int(value))


def quota_problems(footprints: Sequence[Footprint], quota: Quota) -> list[str]:
    """The ResourceQuota must admit every workload at maximum scale plus rollout surge.

    One line per field that is too small (current value, need, the value to set), then the
    breakdown by workload once, every amount in one unit per resource (cores, Gi, counts).
    """
    units: tuple[tuple[str, Callable[[Decimal], str]], ...] = (("cpu", _cores), ("memory", _gib))
    dimensions: list[tuple[str, str, Callable[[Footprint], Decimal], Decimal, Callable[[Decimal], str]]] = [
        (f"{kind}.{key}", f"quota.{kind}.{key}", _compute(kind, key), parse_quantity(getattr(amounts, key)), unit)
        for kind, amounts in (("requests", quota.requests), ("limits", quota.limits))
        for key, unit in units
    ]
    dimensions += [
        ("pods", "quota.pods", _pods, Decimal(quota.pods), _count),
        ("storage", "quota.storage", _storage, parse_quantity(quota.storage), _gib),
        ("claims", "quota.persistentVolumeClaims", _claims, Decimal(quota.persistent_volume_claims), _count),
    ]
    problems: list[str] = []
    short: list[tuple[str, Callable[[Footprint], Decimal], Callable[[Decimal], str]]] = []
    for label, field, amount, have, unit in dimensions:
        need = sum((amount(f) for f in footprints), Decimal(0))
        if need <= have:
            continue
        problems.append(
            f"{field}: is {unit(have)} but the workloads at maximum scale plus rollout surge need {unit(need)}; "
            f"set {field}: {_suggest(label, need)} (20% headroom)"
        )
        short.append((label, amount, unit))
    if problems:
        workloads = "; ".join(
            f"{f.resource} ({f.pods} {'pod' if f.pods == 1 else 'pods'})"
            + "".join(f", {label} {unit(amount(f))}" for label, amount, unit in short if label != "pods")
            for f in footprints
            if any(amount(f) for _, amount, _ in short)
        )
        problems.append(f"quota: what each workload needs at maximum scale plus rollout surge: {workloads}")
    return problems


def _compute(kind: str, key: str) -> Callable[[Footprint], Decimal]:
    return lambda f: f.total(kind, key)


def _pods(f: Footprint) -> Decimal:
    return Decimal(f.pods)


def _storage(f: Footprint) -> Decimal:
    return f.storage


def _claims(f: Footprint) -> Decimal:
    return Decimal(f.claims)


def _suggest(label: str, need: Decimal) -> str:
    """A value to paste into the environment file: rounded up to whole cores, Gi or counts."""
    value = need * QUOTA_HEADROOM
    if label.endswith("memory") or label == "storage":
        return f"{math.ceil(value / _GI)}Gi"
    if label.endswith("cpu"):
        return f'"{math.ceil(value)}"'
    return str(math.ceil(value))


_CHECK = re.compile(r"^(?P<chart>[^/:\s]+)(?:/(?P<path>[^:\s]+))?: (?P<message>.*)$", re.S)
_FIELD = re.compile(r"^[a-z][A-Za-z0-9]*(\.[a-zA-Z][A-Za-z0-9]*|\[\d+\])*: ")


def locate(problems: Iterable[str], sources: Mapping[str, str]) -> list[str]:
    """Turn ``<chart>/<construct path>: reason`` into ``<environment file>: field.path: reason``.

    ``sources`` maps a chart id (the environment name) to its file. A check whose message
    starts with a field path of the environment file (``quota.pods: ...``) is reported at
    that field; any other keeps the construct path or rendered file, which names the object at fault.
    """
    located = []
    for problem in problems:
        match = _CHECK.match(problem)
        if match is None or match["chart"] not in sources:
            located.append(problem)
            continue
        message = match["message"]
        path = match["path"] or ""
        # A rendered object's problem (``<chart>/<file>.yaml: spec...``) keeps the file: it names the object.
        at_field = _FIELD.match(message) and not path.endswith(".yaml")
        where = f"{match['chart']}/{path}: " if path and not at_field else ""
        located.append(f"{sources[match['chart']]}: {where}{message}")
    return located
