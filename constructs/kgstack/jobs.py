"""What every Job of the stack shares: backups, restores, listings and re-indexing."""

from __future__ import annotations

from collections.abc import Sequence

from ._plus import k8s
from .pod_security import pod_security_context

STARTING_DEADLINE_SECONDS = 3600
"""A scheduled run missed by more than this is skipped; a run may start this late."""
BACKUP_PERIOD_SECONDS = 86400
"""Backups and re-indexing run once a day."""


def run_once_pod(*, service_account: str, container: k8s.Container, volumes: Sequence[k8s.Volume]) -> k8s.PodSpec:
    """The pod of a Job (backups, restores, re-indexing): one hardened container, run once, never restarted.

    ``volumes`` must include the ``tmp`` volume :func:`hardened_container` mounts.
    """
    return k8s.PodSpec(
        service_account_name=service_account,
        automount_service_account_token=False,
        enable_service_links=False,
        restart_policy="Never",
        security_context=pod_security_context(),
        containers=[container],
        volumes=list(volumes),
    )


def cron_job_spec(*, schedule: str, labels: dict[str, str], job: k8s.JobSpec) -> k8s.CronJobSpec:
    """``job`` on ``schedule`` in UTC. One run at a time: a second would repeat the first's work
    against the same store or repositories. A run missed by more than an hour is skipped."""
    return k8s.CronJobSpec(
        schedule=schedule,
        time_zone="Etc/UTC",
        concurrency_policy="Forbid",
        starting_deadline_seconds=STARTING_DEADLINE_SECONDS,
        successful_jobs_history_limit=3,
        failed_jobs_history_limit=3,
        job_template=k8s.JobTemplateSpec(metadata=k8s.ObjectMeta(labels=labels), spec=job),
    )
