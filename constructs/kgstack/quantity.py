"""Kubernetes resource quantities: parsed once, compared exactly.

Invariants such as "requests <= limits" and "the quota covers every workload at
maximum scale" need arithmetic on strings like ``500m`` and ``4Gi``. Decimal
keeps that exact, so ``0.1 + 0.2`` CPU never fails a comparison by rounding.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator

_SUFFIXES: dict[str, Decimal] = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
}
_QUANTITY = re.compile(r"^(?P<number>\d+(\.\d+)?)(?P<suffix>m|k|M|G|T|Ki|Mi|Gi|Ti)?$")


def parse_quantity(text: str) -> Decimal:
    """Return the value of a Kubernetes quantity in base units (cores, bytes)."""
    match = _QUANTITY.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a Kubernetes quantity (examples: 250m, 1.5, 512Mi, 4Gi)")
    return Decimal(match["number"]) * _SUFFIXES[match["suffix"] or ""]


def format_cpu(cores: Decimal) -> str:
    """Render cores the way a reviewer reads them: whole cores, else millicores."""
    if cores == cores.to_integral_value():
        return str(int(cores))
    return f"{int(cores * 1000)}m"


def format_memory(size: Decimal) -> str:
    """Render bytes in the largest binary unit that keeps the value whole."""
    for suffix in ("Ti", "Gi", "Mi", "Ki"):
        unit = _SUFFIXES[suffix]
        if size % unit == 0:
            return f"{int(size / unit)}{suffix}"
    return str(int(size))


def _as_text(value: object) -> object:
    # YAML reads `cpu: 2` as an int; Kubernetes treats it as the quantity "2".
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


def _check(text: str) -> str:
    if parse_quantity(text) == 0:
        # Well formed, and meaningless: the API server refuses an empty volume, a zero request gives the
        # HPA's utilisation no base, and a zero limit or quota lets nothing run.
        raise ValueError(f"{text!r} is zero: every size, request, limit and quota here must be more than 0")
    return text


Quantity = Annotated[str, BeforeValidator(_as_text), AfterValidator(_check)]
"""A quantity kept as written (for the manifest), checked for form and for meaning (more than zero)."""
