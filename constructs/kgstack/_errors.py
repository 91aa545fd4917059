"""Errors reach a library user as one line per problem, not as a jsii or pydantic trace.

A construct's synth-time check fails inside cdk8s's JavaScript (``App.synth``,
``Chart.toJson``), and jsii re-raises it in Python as a ``RuntimeError`` chained to
the JavaScript stack: some forty lines around the one that matters. A props model
refuses a value with pydantic's multi-line report. ``import kgstack`` installs an
exception hook that, for exactly these errors reaching the top of a program, prints
``error: <where>: <reason>`` lines naming the construct path or the prop, and leaves
every other exception to the hook that was there before.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import TracebackType
from typing import Any

from pydantic import ValidationError

from .model import FieldError, Spec
from .publish import SynthError, validation_problems

Hook = Callable[[type[BaseException], BaseException, TracebackType | None], Any]


def _our_models() -> set[str]:
    names, todo = set(), [Spec]
    while todo:
        model = todo.pop()
        names.add(model.__name__)
        todo.extend(model.__subclasses__())
    return names


def _path(model: str, loc: tuple[int | str, ...]) -> str:
    path = model
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def props_problems(error: ValidationError) -> list[str]:
    """``Model.field.path: reason`` per problem of one of our models (field names as in YAML)."""
    lines = []
    for e in error.errors():
        loc = tuple(e["loc"])
        cause = (e.get("ctx") or {}).get("error")
        if isinstance(cause, FieldError):
            lines += [f"{_path(error.title, (*loc, *path.split('.')))}: {reason}" for path, reason in cause.problems]
        else:
            lines.append(f"{_path(error.title, loc)}: {str(e['msg']).removeprefix('Value error, ')}")
    return lines


def problems(error: BaseException) -> list[str] | None:
    """One line per problem when ``error`` is a kgstack validation; ``None`` for anything else."""
    if isinstance(error, SynthError):
        return error.problems
    if isinstance(error, ValidationError) and error.title in _our_models():
        return props_problems(error)
    from .environment import EnvironmentFileError  # the environment model imports every construct

    if isinstance(error, EnvironmentFileError):
        return error.problems
    return validation_problems(error)


def install() -> None:
    """Wrap ``sys.excepthook`` once; restore tracebacks with ``sys.excepthook = sys.__excepthook__``."""
    previous: Hook = sys.excepthook
    if getattr(previous, "kgstack", False):
        return

    def hook(kind: type[BaseException], error: BaseException, trace: TracebackType | None) -> None:
        lines = problems(error)
        if lines is None:
            previous(kind, error, trace)
            return
        for line in lines:
            print(f"error: {line}", file=sys.stderr)

    hook.kgstack = True  # type: ignore[attr-defined]
    sys.excepthook = hook
