"""A reference to one key of a Secret: how values reach pods without entering manifests."""

from __future__ import annotations

from ._plus import k8s
from .model import Spec


class SecretRef(Spec):
    name: str
    """Secret name in the environment's namespace."""
    key: str
    """Key within the Secret."""
    optional: bool = False
    """Whether the pod may start without it."""

    def env(self, variable: str) -> k8s.EnvVar:
        """An env var whose value Kubernetes reads from the Secret at pod start."""
        return k8s.EnvVar(name=variable, value_from=k8s.EnvVarSource(secret_key_ref=k8s.SecretKeySelector(
            name=self.name, key=self.key, optional=True if self.optional else None)))
