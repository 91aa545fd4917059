"""A reference to one key of a Secret: how values reach pods without entering manifests."""

from __future__ import annotations

from ._plus import k8s
from .connections import Endpoint
from .model import Spec


class SecretRef(Spec):
    name: str
    """Secret name in the environment's namespace."""
    key: str
    """Key within the Secret."""
    optional: bool = False
    """Whether the pod may start without it."""
    endpoint: Endpoint | None = None
    """The Service the value addresses (a store's URL), if any: a construct whose pods read this
    reference declares the connection to it (``Connections``), so its NetworkPolicies allow it."""

    def env(self, variable: str) -> k8s.EnvVar:
        """An env var whose value Kubernetes reads from the Secret at pod start."""
        return k8s.EnvVar(
            name=variable,
            value_from=k8s.EnvVarSource(
                secret_key_ref=k8s.SecretKeySelector(
                    name=self.name, key=self.key, optional=True if self.optional else None
                )
            ),
        )


def secret_files(
    refs: dict[str, SecretRef], root: str = "/secrets"
) -> tuple[list[k8s.Volume], list[k8s.VolumeMount], list[k8s.EnvVar]]:
    """Mount each referenced key as a file and point ``<VAR>`` (e.g. ``REDIS_PASSWORD_FILE``) at it.

    Files rather than env vars: they are not inherited by child processes, not shown
    by ``kubectl describe``, and they update in place when the Secret rotates.
    """
    by_secret: dict[str, list[str]] = {}
    for ref in refs.values():
        by_secret.setdefault(ref.name, []).append(ref.key)
    volumes = [
        k8s.Volume(
            name=f"secret-{name}",
            secret=k8s.SecretVolumeSource(
                secret_name=name, default_mode=0o400, items=[k8s.KeyToPath(key=k, path=k) for k in sorted(set(keys))]
            ),
        )
        for name, keys in sorted(by_secret.items())
    ]
    mounts = [
        k8s.VolumeMount(name=f"secret-{name}", mount_path=f"{root}/{name}", read_only=True)
        for name in sorted(by_secret)
    ]
    env = [k8s.EnvVar(name=var, value=f"{root}/{ref.name}/{ref.key}") for var, ref in sorted(refs.items())]
    return volumes, mounts, env
