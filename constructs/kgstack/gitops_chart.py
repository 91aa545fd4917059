"""The Argo CD bundle of one cluster, rendered to ``dist/argocd/<cluster>/``.

Kept out of ``dist/<env>/``: an environment's folder is what its Application
syncs, and an Application must not sync (and prune) itself. ``dist/argocd/<cluster>/``
holds, for the cluster's API server only, an Application per platform chart
(``application-<cluster>-<chart>.yaml``), one for the platform's own objects in
``platform/`` (``application-<cluster>-platform.yaml``), and one ``application-<instance>.yaml``
per environment on the cluster, plus a ``kustomization.yaml``. Apply it once by
hand, or point an app-of-apps at it: two environments on one cluster share its
platform, and no Application reaches another cluster.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import cdk8s
from constructs import Construct
from pydantic import Field

from .agent_secrets import reloader_ignore_differences
from .argocd_application import (
    SYNC_WAVE_ANNOTATION,
    ApplicationSource,
    ApplicationSourceHelm,
    ArgoCdApplication,
    GitOpsSettings,
    IgnoreDifference,
    automated_by_default,
)
from .cluster_platform import Cluster, HelmRelease
from .model import Spec
from .naming import APP_NAME, Identity
from .releases import unreleased

if TYPE_CHECKING:
    from .environment import Environment

CHART_ID = "argocd"
"""Also the folder name under ``dist/``; each cluster's bundle is ``dist/argocd/<cluster>/``."""
PLATFORM_FOLDER = "platform"
"""``dist/argocd/<cluster>/platform/``: the platform's own objects (not an Application's folder of itself)."""


def platform_application(cluster: Cluster, chart: str = PLATFORM_FOLDER) -> str:
    """The Application of a platform chart, or of the platform's objects: one Argo CD may manage several
    clusters, so the name carries the cluster's."""
    return f"{cluster.name}-{chart}"


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
    cluster: Cluster
    """Where the environment runs: its Application's destination server."""
    unreleased: list[str] = Field(default_factory=list)
    """Our images the environment deploys that were never released; any holds automated sync back."""
    ignore_differences: list[IgnoreDifference] = Field(default_factory=list)
    """Fields of the environment's objects that a controller in the cluster owns (Reloader's roll marker):
    left out of the diff, and kept live by a sync."""

    @classmethod
    def of(
        cls, env: Environment, settings: GitOpsSettings, objects: Mapping[str, Mapping[str, Any]] | None = None
    ) -> GitOpsTarget:
        """``env`` as Argo CD sees it; ``objects``, its rendered objects, give the fields Reloader writes."""
        return cls(
            name=env.name,
            instance=env.instance,
            namespace=env.placement.namespace,
            stage=str(env.stage),
            version=env.images.agent.tag,
            settings=settings,
            cluster=env.placement.cluster,
            unreleased=unreleased(env),
            ignore_differences=reloader_ignore_differences(objects or {}),
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
    """One cluster's bundle: the platform's Applications, then an ``Application`` per target on the cluster."""

    def __init__(
        self,
        scope: Construct,
        targets: Iterable[GitOpsTarget],
        *,
        cluster: Cluster,
        releases: Iterable[HelmRelease] = (),
        dist: str = "dist",
    ) -> None:
        super().__init__(scope, f"{CHART_ID}-{cluster.name}", disable_resource_name_hashes=True)
        mine = sorted((t for t in targets if t.cluster == cluster), key=lambda t: t.name)
        if not mine:
            raise ValueError(f"cluster {cluster.name}: no environment runs on it")
        self.cluster = cluster
        self.applications: dict[str, ArgoCdApplication] = {}
        # The platform follows the strictest environment on the cluster: manual when any is.
        base = mine[0].settings
        automated = all(t.automated for t in mine)
        platform_labels = {"app.kubernetes.io/part-of": "platform", "app.kubernetes.io/managed-by": "cdk8s"}
        for release in releases:
            self.applications[platform_application(cluster, release.key)] = ArgoCdApplication(
                self,
                release.key,
                name=platform_application(cluster, release.key),
                namespace=release.namespace,
                settings=base,
                automated=automated,
                server=cluster.server,
                source=ApplicationSource(
                    repo_url=release.repo_url,
                    target_revision=release.version,
                    chart=release.chart,
                    helm=ApplicationSourceHelm(release_name=release.release, values_object=release.values or None),
                ),
                labels=platform_labels,
                annotations={SYNC_WAVE_ANNOTATION: str(release.wave)},
                create_namespace=True,
            )
        self.applications[platform_application(cluster)] = ArgoCdApplication(
            self,
            "platform",
            name=platform_application(cluster),
            namespace="default",
            settings=base,
            automated=automated,
            server=cluster.server,
            path=f"{dist}/{CHART_ID}/{cluster.name}/{PLATFORM_FOLDER}",
            labels=platform_labels,
            annotations={SYNC_WAVE_ANNOTATION: "-2"},
        )
        for target in mine:
            self.applications[target.name] = ArgoCdApplication(
                self,
                target.name,
                name=target.instance,
                namespace=target.namespace,
                path=f"{dist}/{target.name}",
                settings=target.settings,
                automated=target.automated,
                server=cluster.server,
                labels=Identity(
                    name=APP_NAME, instance=target.instance, version=target.version, component="gitops"
                ).labels,
                ignore_differences=target.ignore_differences,
            )
