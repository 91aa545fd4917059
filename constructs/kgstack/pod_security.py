"""The restricted security settings every pod in the stack starts from.

Pod Security Standards ``restricted`` plus a read-only root filesystem and no
service-account token. A construct that must loosen one of these does it
explicitly, next to a comment saying why.
"""

from __future__ import annotations

from ._plus import k8s

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
