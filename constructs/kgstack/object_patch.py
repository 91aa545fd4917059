"""One-off changes to rendered objects (``patches:`` in the environment file), as kustomize would make them.

A patch names one object of the environment by kind and name and changes it with
either a strategic-merge patch (``merge:``, a partial object) or RFC 6902
operations (``json:``). ``app.py`` applies every patch after rendering, then runs the
schema check and the cross-reference gate on the result, so a patch can never
write an object that the gate would refuse. A patch that does not apply names the
field (``patches[0].json[1].path: ...``) and nothing is written.

The strategic merge follows Kubernetes' rules for the lists a pod spec and a
Service hold: items of ``containers``, ``initContainers``, ``env``, ``volumes``,
``volumeMounts`` and ``imagePullSecrets`` merge by ``name``, container ``ports``
by ``containerPort``, Service ``ports`` by ``port``; every other list is replaced.
``null`` removes a field, and an item with ``$patch: delete`` removes that item.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, Self

from pydantic import Field, model_validator

from .model import FieldError, Spec

Obj = dict[str, Any]

MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "name",
    "imagePullSecrets": "name",
}
"""List field -> the key its items merge by (Kubernetes' ``patchMergeKey``); ``ports`` is decided by its items."""


class PatchError(Exception):
    """A patch that does not apply: ``path`` is the field of the patch, relative to ``patches[i]``."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class PatchTarget(Spec):
    """The object a patch changes."""

    kind: str
    """Its ``kind``, e.g. ``Deployment``."""
    name: str
    """Its ``metadata.name``, e.g. ``kga-prod-query``."""


class JsonOperation(Spec):
    """One RFC 6902 operation; ``path`` and ``from`` are JSON pointers into the object."""

    op: Literal["add", "remove", "replace", "move", "copy", "test"]
    """What to do at ``path``."""
    path: Annotated[str, Field(pattern=r"^(/.*)?$")]
    """JSON pointer, e.g. ``/spec/template/spec/containers/0/resources/limits/memory``."""
    value: Any = None
    """The value for add, replace and test."""
    from_: Annotated[str | None, Field(alias="from", pattern=r"^(/.*)?$")] = None
    """Source pointer for move and copy."""

    @model_validator(mode="after")
    def _operands(self) -> Self:
        if self.op in ("move", "copy") and self.from_ is None:
            raise FieldError(("from", f"required with op {self.op}"))
        if self.op in ("add", "replace", "test") and "value" not in self.model_fields_set:
            raise FieldError(("value", f"required with op {self.op}"))
        return self


class ObjectPatch(Spec):
    """A one-off change to one rendered object: ``merge`` (strategic merge) or ``json`` (RFC 6902)."""

    target: PatchTarget
    """The object to change (kind and name as in ``dist/<env>/``)."""
    merge: dict[str, Any] | None = None
    """A partial object merged into the target the way ``kubectl patch --type strategic`` does."""
    json_: Annotated[list[JsonOperation] | None, Field(alias="json")] = None
    """RFC 6902 operations applied in order, like ``kubectl patch --type json``."""
    reason: str
    """Why this change is not a setting (a one-off should say so, and go when the setting exists)."""

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        if (self.merge is None) == (self.json_ is None):
            raise FieldError(("merge", "set exactly one of merge and json"))
        return self


# ------------------------------------------------------------------ applying


def apply_patches(objects: Mapping[str, Obj], patches: Sequence[ObjectPatch], field: str = "patches") -> dict[str, Obj]:
    """``objects`` (file name -> object) with every patch applied in order; raises :class:`PatchError`
    with the path ``patches[i]...`` of the first one that does not apply."""
    out = {name: copy.deepcopy(obj) for name, obj in objects.items()}
    for i, patch in enumerate(patches):
        where = f"{field}[{i}]"
        found = [
            name
            for name, obj in out.items()
            if obj.get("kind") == patch.target.kind and obj["metadata"].get("name") == patch.target.name
        ]
        if not found:
            names = sorted(o["metadata"]["name"] for o in out.values() if o.get("kind") == patch.target.kind)
            close = difflib.get_close_matches(patch.target.name, names, n=1)
            hint = (
                f"did you mean {close[0]}?" if close else f"the {patch.target.kind}s are: {', '.join(names) or 'none'}"
            )
            raise PatchError(f"{where}.target", f"no {patch.target.kind} named {patch.target.name}; {hint}")
        (name,) = found
        before = out[name]
        if patch.merge is not None:
            after = _merge(before, patch.merge, f"{where}.merge")
        else:
            after = copy.deepcopy(before)
            for j, operation in enumerate(patch.json_ or []):
                after = _operate(after, operation, f"{where}.json[{j}]")
        if not isinstance(after, dict) or (after.get("kind"), (after.get("metadata") or {}).get("name")) != (
            before["kind"],
            before["metadata"]["name"],
        ):
            raise PatchError(where, "a patch may not change an object's kind or name (add a setting or an object)")
        out[name] = after
    return out


def _merge(target: Any, patch: Any, path: str) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if not isinstance(target, dict):
        if target is None:
            target = {}
        else:
            raise PatchError(path, f"is a mapping in the patch but a {type(target).__name__} in the object")
    out = dict(target)
    for key, value in patch.items():
        here = f"{path}.{key}"
        if value is None:
            out.pop(key, None)
        elif isinstance(value, list) and isinstance(out.get(key), list):
            out[key] = _merge_list(key, out[key], value, here)
        elif isinstance(value, dict):
            out[key] = _merge(out.get(key), value, here)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _merge_list(field: str, target: list[Any], patch: list[Any], path: str) -> list[Any]:
    key = MERGE_KEYS.get(field)
    if field == "ports" and all(isinstance(p, dict) for p in [*target, *patch]):
        key = "containerPort" if any("containerPort" in p for p in [*target, *patch]) else "port"
    if key is None or not all(isinstance(item, dict) for item in [*target, *patch]):
        return copy.deepcopy(patch)
    out = list(target)
    for i, item in enumerate(patch):
        if key not in item:
            raise PatchError(f"{path}[{i}]", f"an item of {field} needs its merge key {key!r}")
        at = next((n for n, existing in enumerate(out) if existing.get(key) == item[key]), None)
        directive = item.get("$patch")
        if directive == "delete":
            if at is None:
                raise PatchError(f"{path}[{i}]", f"no item with {key} {item[key]!r} to delete")
            out.pop(at)
        elif at is None:
            out.append({k: v for k, v in item.items() if k != "$patch"})
        else:
            out[at] = _merge(out[at], {k: v for k, v in item.items() if k != "$patch"}, f"{path}[{i}]")
    return out


def _tokens(pointer: str, path: str) -> list[str]:
    if pointer == "":
        return []
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/")]


def _parent(doc: Any, pointer: str, path: str) -> tuple[Any, str]:
    tokens = _tokens(pointer, path)
    if not tokens:
        raise PatchError(path, "the whole object cannot be the target; point into it")
    node = doc
    walked = ""
    for token in tokens[:-1]:
        walked += f"/{token}"
        node = _child(node, token, walked, path)
    return node, tokens[-1]


def _child(node: Any, token: str, walked: str, path: str) -> Any:
    if isinstance(node, dict) and token in node:
        return node[token]
    if isinstance(node, list) and token.isdigit() and int(token) < len(node):
        return node[int(token)]
    raise PatchError(path, f"{walked} does not exist in the object")


def _index(node: list[Any], token: str, path: str, *, adding: bool) -> int:
    if adding and token == "-":
        return len(node)
    limit = len(node) if adding else len(node) - 1
    if not token.isdigit() or int(token) > limit:
        raise PatchError(path, f"{token!r} is not an index of a list of {len(node)} items")
    return int(token)


def _get(doc: Any, pointer: str, path: str) -> Any:
    node = doc
    walked = ""
    for token in _tokens(pointer, path):
        walked += f"/{token}"
        node = _child(node, token, walked, path)
    return node


def _operate(doc: Obj, operation: JsonOperation, where: str) -> Obj:
    path = f"{where}.path"
    op, pointer = operation.op, operation.path
    if op == "test":
        if _get(doc, pointer, path) != operation.value:
            raise PatchError(f"{where}.value", f"test failed: {pointer} is {_get(doc, pointer, path)!r}")
        return doc
    if op in ("move", "copy"):
        value = copy.deepcopy(_get(doc, operation.from_ or "", f"{where}.from"))
        if op == "move":
            _remove(doc, operation.from_ or "", f"{where}.from")
        _add(doc, pointer, value, path)
        return doc
    if op == "remove":
        _remove(doc, pointer, path)
    elif op == "replace":
        _get(doc, pointer, path)  # must exist
        _remove(doc, pointer, path)
        _add(doc, pointer, copy.deepcopy(operation.value), path)
    else:
        _add(doc, pointer, copy.deepcopy(operation.value), path)
    return doc


def _add(doc: Any, pointer: str, value: Any, path: str) -> None:
    parent, token = _parent(doc, pointer, path)
    if isinstance(parent, dict):
        parent[token] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, token, path, adding=True), value)
    else:
        raise PatchError(path, f"{pointer}: the parent is a {type(parent).__name__}, not a mapping or list")


def _remove(doc: Any, pointer: str, path: str) -> None:
    parent, token = _parent(doc, pointer, path)
    if isinstance(parent, dict) and token in parent:
        del parent[token]
    elif isinstance(parent, list):
        parent.pop(_index(parent, token, path, adding=False))
    else:
        raise PatchError(path, f"{pointer} does not exist in the object")
