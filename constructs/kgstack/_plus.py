"""The only import of cdk8s-plus: moving to a newer cdk8s-plus-XX is one line here."""

from cdk8s_plus_27 import k8s

__all__ = ["k8s"]
