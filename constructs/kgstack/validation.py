"""Synth-time checks: a callable that returns problem strings, registered on a node."""

from __future__ import annotations

from collections.abc import Callable

import jsii
from constructs import Construct, IValidation


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
