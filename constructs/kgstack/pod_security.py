"""The restricted security settings every pod in the stack starts from.

Pod Security Standards ``restricted`` plus a read-only root filesystem and no
service-account token. A construct that must loosen one of these does it
explicitly, next to a comment saying why.
"""

from __future__ import annotations

from collections.abc import Sequence

from ._plus import k8s, quantities
from .model import ImageRef, Resources

RUNTIME_UID = 10001
"""UID/GID of every container we build (docker/): non-root and above 10000."""


def pod_security_context(uid: int = RUNTIME_UID) -> k8s.PodSecurityContext:
    return k8s.PodSecurityContext(
        run_as_non_root=True,
        run_as_user=uid,
        run_as_group=uid,
        fs_group=uid,
        # Skip the recursive chown of large volumes on every start.
        fs_group_change_policy="OnRootMismatch",
        seccomp_profile=k8s.SeccompProfile(type="RuntimeDefault"),
    )


def container_security_context() -> k8s.SecurityContext:
    return k8s.SecurityContext(
        allow_privilege_escalation=False,
        privileged=False,
        read_only_root_filesystem=True,
        run_as_non_root=True,
        capabilities=k8s.Capabilities(drop=["ALL"]),
        seccomp_profile=k8s.SeccompProfile(type="RuntimeDefault"),
    )


def hardened_container(
    *,
    name: str,
    image: str,
    resources: Resources,
    ports: Sequence[k8s.ContainerPort] = (),
    mounts: Sequence[k8s.VolumeMount] = (),
    **fields: object,
) -> k8s.Container:
    """A container with the stack's defaults: restricted context, requests and limits, /tmp mounted.

    ``ports`` come from the endpoints the container serves (``Endpoint.container_port``).
    ``fields`` are further ``k8s.Container`` fields (command, env, probes, ...).
    The pod must define a ``tmp`` volume.
    """
    return k8s.Container(
        name=name,
        image=image,
        # A digest never changes, a tag may: re-pull only what is not pinned.
        image_pull_policy="IfNotPresent" if "@sha256:" in image else "Always",
        ports=list(ports) or None,
        resources=k8s.ResourceRequirements(
            requests=quantities(resources.requests.as_dict()), limits=quantities(resources.limits.as_dict())
        ),
        security_context=container_security_context(),
        volume_mounts=[*mounts, k8s.VolumeMount(name="tmp", mount_path="/tmp")],
        **fields,  # type: ignore[arg-type]
    )


def checkov_skips(**reasons: str) -> dict[str, str]:
    """Inline checkov skips as annotations: ``checkov_skips(CKV_K8S_35="why")``.

    Every skip in the stack goes through here, next to the code it excuses.
    """
    return {f"checkov.io/skip{i}": f"{check}={reason}" for i, (check, reason) in enumerate(reasons.items(), 1)}


def unpinned_skip(*images: ImageRef) -> dict[str, str]:
    """The CKV_K8S_43 (image digest) skip reason when any of ``images`` is pinned by tag only."""
    if all(image.digest for image in images):
        return {}
    return {
        "CKV_K8S_43": "tag-only until released: our images' digests come only from environments/releases/"
        "images.yaml (the release workflow), upstream ones must be pinned in prod; an environment with an "
        "unreleased image is never synced automatically"
    }
