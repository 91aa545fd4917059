"""The Argo CD Applications of every environment, as one chart rendered to ``dist/argocd/``.

Kept out of ``dist/<env>/``: an environment's folder is what its Application
syncs, and an Application must not sync (and prune) itself. ``dist/argocd/``
holds one ``application-<instance>.yaml`` per environment plus a
``kustomization.yaml``; apply it once by hand, or point an app-of-apps at it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import cdk8s
from constructs import Construct
from pydantic import Field

from .argocd_application import ArgoCdApplication, GitOpsSettings, automated_by_default
from .model import Spec
from .naming import APP_NAME, Identity
from .releases import unreleased

if TYPE_CHECKING:
    from .environment import Environment

CHART_ID = "argocd"
"""Also the folder name under ``dist/``."""


class GitOpsTarget(Spec):
    """One environment as Argo CD sees it."""

    name: str
    """Environment name; ``dist/<name>`` is the synced path."""
    instance: str
    """Release name; also the Application's name."""
    namespace: str
    """Destination namespace."""
    stage: str
    """dev, staging or prod: decides automated sync unless the settings say otherwise."""
    version: str
    """The release's app version, for the ``app.kubernetes.io/version`` label."""
    settings: GitOpsSettings
    unreleased: list[str] = Field(default_factory=list)
    """Our images the environment deploys that were never released; any holds automated sync back."""

    @classmethod
    def of(cls, env: Environment, settings: GitOpsSettings) -> GitOpsTarget:
        return cls(
            name=env.name,
            instance=env.instance,
            namespace=env.namespace,
            stage=str(env.stage),
            version=env.images.agent.tag,
            settings=settings,
            unreleased=unreleased(env),
        )

    @property
    def automated(self) -> bool:
        # Never sync automatically what no registry holds: every pod would sit in ImagePullBackOff.
        if self.unreleased:
            return False
        if self.settings.automated is not None:
            return self.settings.automated
        return automated_by_default(self.stage)


class GitOpsChart(cdk8s.Chart):
    """An ``Application`` per target, each syncing ``<dist>/<env>``."""

    def __init__(self, scope: Construct, targets: Iterable[GitOpsTarget], *, dist: str = "dist") -> None:
        super().__init__(scope, CHART_ID, disable_resource_name_hashes=True)
        self.applications: dict[str, ArgoCdApplication] = {}
        for target in sorted(targets, key=lambda t: t.name):
            self.applications[target.name] = ArgoCdApplication(
                self,
                target.name,
                name=target.instance,
                namespace=target.namespace,
                path=f"{dist}/{target.name}",
                settings=target.settings,
                automated=target.automated,
                labels=Identity(
                    name=APP_NAME, instance=target.instance, version=target.version, component="gitops"
                ).labels,
            )
