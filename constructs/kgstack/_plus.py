"""The only import of cdk8s-plus: moving to a newer cdk8s-plus-XX is one line here.

Also the cached value helpers: ``k8s.Quantity`` and ``k8s.IntOrString`` are
immutable jsii objects, and each factory call is a round trip to the kernel.
"""

from functools import cache

from cdk8s_plus_27 import k8s

__all__ = ["int_or_string", "k8s", "quantities", "quantity"]


@cache
def quantity(value: str | int) -> k8s.Quantity:
    """``k8s.Quantity`` for ``"500m"`` or ``3``, made once per value."""
    return k8s.Quantity.from_number(value) if isinstance(value, int) else k8s.Quantity.from_string(value)


@cache
def int_or_string(value: str | int) -> k8s.IntOrString:
    """``k8s.IntOrString`` for a port name or a number, made once per value."""
    return k8s.IntOrString.from_number(value) if isinstance(value, int) else k8s.IntOrString.from_string(value)


def quantities(amounts: dict[str, str]) -> dict[str, k8s.Quantity]:
    return {key: quantity(value) for key, value in amounts.items()}
