"""One place for the recommended labels and resource names.

Every object carries the ``app.kubernetes.io`` labels; selectors use the same
labels minus ``version`` so that a release never orphans its own pods.
"""

from __future__ import annotations

from ._plus import k8s
from .model import Spec

APP_NAME = "kga"
"""Default ``app.kubernetes.io/name`` of every object."""
PART_OF = "knowledge-graph-agent"
"""Default ``app.kubernetes.io/part-of``."""
MANAGED_BY = "cdk8s"


class Identity(Spec):
    """Who an object belongs to: the recommended labels, and its stable name.

    ``instance`` is the environment's release name, ``component`` the tier
    (``query``, ``indexer``, ``redis``), ``name`` the application (``kga`` unless
    another app reuses the constructs under its own name).
    """

    instance: str
    """``app.kubernetes.io/instance``: the release, one per environment."""
    version: str
    """``app.kubernetes.io/version``: the app version; left out of selectors."""
    component: str = ""
    """``app.kubernetes.io/component``: the tier; empty for release-wide objects."""
    name: str = APP_NAME
    """``app.kubernetes.io/name``: the application; default ``kga``."""
    part_of: str = PART_OF
    """``app.kubernetes.io/part-of``: the larger system; default ``knowledge-graph-agent``."""

    def of(self, component: str) -> Identity:
        """The same release, another component."""
        return self.model_copy(update={"component": component})

    @property
    def resource_name(self) -> str:
        """Readable and stable: ``<instance>-<component>``, no hash suffix."""
        return f"{self.instance}-{self.component}" if self.component else self.instance

    @property
    def selector(self) -> dict[str, str]:
        """Labels that select this component's pods; never includes ``version``."""
        labels = {
            "app.kubernetes.io/name": self.name,
            "app.kubernetes.io/instance": self.instance,
        }
        if self.component:
            labels["app.kubernetes.io/component"] = self.component
        return labels

    @property
    def labels(self) -> dict[str, str]:
        """The full recommended label set for metadata and pod templates."""
        return {
            **self.selector,
            "app.kubernetes.io/version": self.version,
            "app.kubernetes.io/part-of": self.part_of,
            "app.kubernetes.io/managed-by": MANAGED_BY,
        }


def object_meta(
    identity: Identity,
    namespace: str | None,
    *,
    name: str | None = None,
    annotations: dict[str, str] | None = None,
) -> k8s.ObjectMeta:
    """Metadata for an object of ``identity``: its stable name and full label set."""
    return k8s.ObjectMeta(
        name=name or identity.resource_name,
        namespace=namespace,
        labels=identity.labels,
        annotations=annotations or None,
    )
