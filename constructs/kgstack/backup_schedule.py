"""Scheduled, restorable backups: one CronJob per store running the kgbackup tool (docker/backup).

Dumps are logical and portable (RDB over replication, Chroma pages over its API,
Cypher over bolt), compressed, checksummed and uploaded to S3-compatible object
storage, then pruned to N daily and M weekly copies. :func:`restore_job`
renders the matching restore Job on demand; it is never part of dist/.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any, Literal, Self

from constructs import Construct
from pydantic import Field, model_validator

from ._plus import k8s, quantity
from .connections import Connections, Endpoint
from .footprint import Footprint
from .jobs import BACKUP_PERIOD_SECONDS, STARTING_DEADLINE_SECONDS, cron_job_spec, run_once_pod
from .model import ImageRef, Resources, Spec
from .naming import Identity, object_meta
from .network_policies import CidrPeer, ComponentPeer, InternetPeer, tcp
from .pod_security import checkov_skips, hardened_container, unpinned_skip
from .quantity import Quantity, format_memory, parse_quantity
from .secret_ref import SecretRef, secret_files
from .validation import add_check

Store = Literal["redis", "chroma", "memgraph"]
MAX_DEADLINE_SECONDS = 12 * 3600
SCRATCH_PER_VOLUME: dict[Store, int] = {
    # The Redis tool holds the gzip dump and the RDB it streams or unpacks (bounded by the volume that
    # persists it). A gzip Chroma dump is 6.2 KB a record while the server's data directory grows 7.9 KB
    # (0.72x at 20k records, about 0.78x for a large store: bench/chroma_footprint.py). A Memgraph Cypher
    # dump, gzip-compressed, is taken as no larger than the snapshots and WAL on its volume (not measured).
    "redis": 2,
    "chroma": 1,
    "memgraph": 1,
}
"""Scratch a store's backup or restore needs, per byte of the store's volume (``storageSize``)."""
_DEFAULT_RESOURCES = Resources.model_validate(
    {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}
)

_LIST_RESOURCES = Resources.model_validate(
    # `kgbackup list` (Python, boto3, one manifest at a time) peaks near 50 MiB.
    {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}}
)


class BackupSettings(Spec):
    """Where backups go, when they run and how many are kept."""

    target: Annotated[str, Field(pattern=r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[A-Za-z0-9._/-]*)?$")]
    """``s3://<bucket>/<prefix>``; each store writes under ``<prefix>/<store>/<timestamp>/``."""
    s3_endpoint_url: Annotated[str, Field(pattern=r"^https://\S+$")] | None = None
    """S3-compatible endpoint (MinIO, R2, GCS interop...); unset means AWS S3."""
    first_run: Annotated[str, Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")] = "02:15"
    """UTC time of the first store's backup; later stores follow ``staggerMinutes`` apart."""
    stagger_minutes: Annotated[int, Field(ge=5, le=240)] = 30
    """Gap between the stores' schedules, so dumps never compete for the same window."""
    keep_daily: Annotated[int, Field(ge=1)] = 7
    """Daily copies kept."""
    keep_weekly: Annotated[int, Field(ge=0)] = 4
    """Weekly copies kept on top of the daily ones."""
    credentials_secret: str | None = "kga-backup"
    """Secret whose ``credentials`` key is an AWS shared-credentials file; ``None`` uses workload identity (on
    Kubernetes ``cloud.workloadIdentity``'s, on ECS the backup task's role)."""
    deadline_seconds: Annotated[int, Field(ge=600, le=MAX_DEADLINE_SECONDS)] = 7200
    """A scheduled backup that takes longer is stopped (and alerted on). At most 12 h, so that a finished
    run's Job is kept for the rest of the day (see :func:`scheduled_ttl_seconds`). Restores have none."""
    resources: Resources = _DEFAULT_RESOURCES
    """Requests and limits of the backup container; Chroma pages are the largest consumer."""
    work_size: Quantity | None = None
    """Scratch volume (a per-run ephemeral PVC) for the compressed dump and what the tool unpacks beside it;
    ``None``: each store's from its volume (``SCRATCH_PER_VOLUME``). A size set here must hold the largest
    store's (checked at synth)."""

    @model_validator(mode="after")
    def _schedule_fits_a_day(self) -> Self:
        hour, minute = (int(x) for x in self.first_run.split(":"))
        if hour * 60 + minute + 2 * self.stagger_minutes >= 24 * 60:
            raise ValueError(f"firstRun {self.first_run} + 2 x staggerMinutes runs past midnight")
        return self


class StoreEndpoint(Spec):
    """How the backup tool reaches one store: plain settings plus secret references."""

    endpoint: Endpoint
    """The store's port; the CronJob of this store alone may reach it."""
    env: dict[str, str]
    """Plain variables, e.g. ``CHROMA_HOST``."""
    secret_files: dict[str, SecretRef] = Field(default_factory=dict)
    """Secret keys mounted as files, by the variable that names the file (``REDIS_PASSWORD_FILE``)."""
    reads: list[Endpoint] = Field(default_factory=list)
    """Further endpoints this store's runs read; default none. The indexer's API, for the stores it
    writes: a backup dumps only while it is idle and records its commit tracker (``KGB_INDEXER_URL``)."""


class BackupScheduleProps(Spec):
    identity: Identity
    """Release identity with component ``backup``."""
    namespace: str
    settings: BackupSettings
    image: ImageRef
    """The kgbackup image built from docker/backup."""
    stores: dict[Store, StoreEndpoint]
    """The stores present in this environment, in schedule order."""
    volume_sizes: dict[Store, Quantity]
    """Each store's data volume (``stores.<store>.storageSize``): its data, and so its dump, fits in it."""
    storage_class: str | None = None
    """StorageClass of the per-run scratch volume."""
    service_account_annotations: dict[str, str] = Field(default_factory=dict)
    """Workload identity for object storage (used when there is no credentials Secret)."""
    pod_labels: dict[str, str] = Field(default_factory=dict)
    object_storage_ports: list[Annotated[int, Field(ge=1, le=65535)]] = Field(default_factory=lambda: [443])
    """Ports of the object storage on the internet (S3 over HTTPS)."""
    object_storage_cidrs: list[str] = Field(default_factory=list)
    """Private ranges of the object storage (VPC endpoints, MinIO), reached on the same ports."""

    @model_validator(mode="after")
    def _every_store_is_sized(self) -> Self:
        if set(self.volume_sizes) != set(self.stores):
            raise ValueError(
                f"volume_sizes: sizes {sorted(self.volume_sizes)}, but the stores are {sorted(self.stores)}"
            )
        return self


BACKOFF_LIMIT = 2
"""Retries of a failed run; each attempt is a pod with its own scratch PVC, kept until the Job goes."""

CONTAINER = "kgbackup"
"""The one container of every backup, restore and listing pod."""

HELD_EXIT_CODE = 3
"""kgbackup's exit code (``--held-exit-code``) when a scheduled backup was written but held back (an empty
store, or a drop past ``--max-drop``): the Job fails at once, without retries that would write more of them,
so KgaBackupJobFailed fires and KgaBackupTooOld keeps counting from the newest good backup."""

RESTORE_SECONDS_PER_GIB: dict[Store, int] = {
    # Chroma: 100k records of dimension 1536 restored in 146 s on an idle 2-core machine and 430 s on a
    # loaded one (bench/README.md), 4.3 ms a record; the server's data grows 7.9 KB a record
    # (bench/chroma_footprint.py), 136k records a GiB: 590 s per GiB. The per-record cost grows with the
    # collection, so a large store is slower still. Redis: 100k keys in 1.8 s loaded, about 12 MB of RDB
    # (estimated from the keys, not measured): 150 s per GiB. Memgraph is not measured: Chroma's rate.
    "redis": 150,
    "chroma": 590,
    "memgraph": 590,
}
"""Restore time per GiB of the store's volume, from the benchmark's slow (loaded machine) runs."""
RESTORE_WATCH_FLOOR_SECONDS = 3600


def restore_watch_seconds(store: Store, volume_size: Quantity) -> int:
    """How long a restore of ``store`` may run before KgaRestoreRunningLong asks someone to look at its
    progress: a full volume at the measured rate, at least an hour. Nothing stops the restore."""
    gib = parse_quantity(volume_size) / 2**30
    return max(RESTORE_WATCH_FLOOR_SECONDS, int(gib * RESTORE_SECONDS_PER_GIB[store]))


def scheduled_ttl_seconds(deadline_seconds: int) -> int:
    """How long a finished scheduled Job, its pods' logs and their scratch PVCs are kept: until the next
    night's run of the same store may start, never into it (a run starts up to an hour late and stops at
    its deadline), so the volumes of two runs of one store never coexist. A failed Job stays for the rest
    of the day: KgaBackupJobFailed fires until it goes and its runbook reads its logs. With the 2 h
    default that is 21 h, at least 11 h with the longest deadline."""
    return BACKUP_PERIOD_SECONDS - STARTING_DEADLINE_SECONDS - deadline_seconds


TRACKER_FROM_RESTORE_LOG = (
    "import json, sys; "
    'done = [r for r in (json.loads(s) for s in sys.stdin if s.startswith("{")) if r.get("event") == "restore.done"]; '
    'sys.exit("the restore log records no indexed_commits") if not done or done[-1].get("indexed_commits") is None '
    'else json.dump(done[-1]["indexed_commits"], sys.stdout, indent=2)'
)
"""``python3 -c``: the indexer's commit tracker as of the backup, from a restore Job's log (stdin to stdout)."""
TRACKER_WRITE = (
    "import pathlib, sys; "
    'p = pathlib.Path("indexed_commits.json"); t = p.with_suffix(".restored"); '
    "t.write_bytes(sys.stdin.buffer.read()); t.replace(p)"
)
"""``python -c`` in the indexer's working directory: stdin becomes its ``indexed_commits.json`` (atomically)."""
TRACKED_STORES: tuple[Store, ...] = ("chroma", "memgraph")
"""Stores the indexer writes: their backups record its commit tracker, their restores hand it back."""

STORE_LABEL = "kga.dev/store"
"""Pod label of a backup or restore run: which store it may reach."""


class BackupSchedule(Construct):
    """ServiceAccount ``<release>-backup`` and CronJobs ``<release>-backup-<store>``."""

    def __init__(self, scope: Construct, id: str, *, props: BackupScheduleProps) -> None:
        super().__init__(scope, id)
        self.props = props
        self.name = props.identity.resource_name
        k8s.KubeServiceAccount(
            self,
            "ServiceAccount",
            metadata=object_meta(props.identity, props.namespace, annotations=props.service_account_annotations),
            automount_service_account_token=False,
        )
        s = props.settings
        hour, minute = (int(x) for x in s.first_run.split(":"))
        connections = Connections.of(self)
        add_check(self, self._scratch_problems)
        for index, (store, target) in enumerate(props.stores.items()):
            # Each run reaches its own store and object storage, nothing else.
            runner = self.peer(store)
            connections.allow(runner, target.endpoint, purpose=f"the {store} backup reads and restores {store}")
            for endpoint in target.reads:
                connections.allow(runner, endpoint, purpose=f"the {store} backup records the indexer's commit tracker")
            connections.allow_ports(
                runner, InternetPeer(), tcp(*props.object_storage_ports), purpose="object storage over HTTPS"
            )
            for cidr in props.object_storage_cidrs:
                connections.allow_ports(
                    runner, CidrPeer(cidr=cidr), tcp(*props.object_storage_ports), purpose="private object storage"
                )
            at = hour * 60 + minute + index * s.stagger_minutes
            k8s.KubeCronJob(
                self,
                store,
                metadata=object_meta(
                    props.identity,
                    props.namespace,
                    name=f"{self.name}-{store}",
                    annotations=checkov_skips(**unpinned_skip(props.image)),
                ),
                spec=cron_job_spec(
                    schedule=f"{at % 60} {at // 60} * * *",
                    labels=props.identity.labels,
                    job=self.job_spec(store, ["backup", store, "--prune"], held_exit_code=HELD_EXIT_CODE),
                ),
            )

    def peer(self, store: Store) -> ComponentPeer:
        """The pods of ``store``'s backup and restore runs."""
        return ComponentPeer(component=self.props.identity.component, pod_labels={STORE_LABEL: store})

    def scratch_size(self, store: Store) -> Decimal:
        """Bytes of the scratch volume of ``store``'s runs: ``backup.workSize``, or derived from its volume."""
        s = self.props.settings
        if s.work_size is not None:
            return parse_quantity(s.work_size)
        return self.scratch_needed(store)

    def scratch_needed(self, store: Store) -> Decimal:
        return parse_quantity(self.props.volume_sizes[store]) * SCRATCH_PER_VOLUME[store]

    def _scratch_problems(self) -> list[str]:
        """An explicit ``workSize`` must hold every store's dump, as the backup's memory must hold Redis's."""
        size = self.props.settings.work_size
        if size is None:
            return []
        short = [(store, self.scratch_needed(store)) for store in self.props.stores]
        short = [(store, needed) for store, needed in short if needed > parse_quantity(size)]
        return [
            f"backup.workSize: is {size} but the {store} backup spools up to {format_memory(needed)} "
            f"({SCRATCH_PER_VOLUME[store]} x stores.{store}.storageSize {self.props.volume_sizes[store]}): "
            f"set it to at least {format_memory(needed)}, or remove it to size each store's scratch from its volume"
            for store, needed in short
        ]

    def job_spec(
        self,
        store: Store,
        args: list[str],
        *,
        ttl_seconds: int | None = None,
        deadline: bool = True,
        resources: Resources | None = None,
        scratch: str | None = None,
        held_exit_code: int | None = None,
    ) -> k8s.JobSpec:
        """The pod that runs ``kgbackup <args>`` against ``store``; shared by backup, restore and list.

        ``ttl_seconds`` defaults to the scheduled runs' (:func:`scheduled_ttl_seconds`); ``deadline`` stops
        a run at ``backup.deadlineSeconds`` (restores run without one, see :func:`restore_job`).
        ``resources`` and ``scratch`` (an emptyDir of that size instead of the per-run PVC) size a
        command that moves no dump (``list``); by default the pod is sized for a dump. ``held_exit_code``
        (a backup's) fails the Job without retries when kgbackup exits with it."""
        p, s = self.props, self.props.settings
        if held_exit_code is not None:
            args = [*args, "--held-exit-code", str(held_exit_code)]
        if ttl_seconds is None:
            ttl_seconds = scheduled_ttl_seconds(s.deadline_seconds)
        endpoint = p.stores[store]
        env = {
            "KGB_TARGET": s.target,
            "KGB_WORK_DIR": "/work",
            "KGB_KEEP_DAILY": str(s.keep_daily),
            "KGB_KEEP_WEEKLY": str(s.keep_weekly),
            **({"KGB_S3_ENDPOINT_URL": s.s3_endpoint_url} if s.s3_endpoint_url else {}),
            **endpoint.env,
        }
        files = dict(endpoint.secret_files)
        if s.credentials_secret:
            files["AWS_SHARED_CREDENTIALS_FILE"] = SecretRef(name=s.credentials_secret, key="credentials")
        secret_volumes, secret_mounts, file_env = secret_files(files)
        container = hardened_container(
            name=CONTAINER,
            image=p.image.reference,
            resources=resources or s.resources,
            args=args,
            env=[*(k8s.EnvVar(name=k, value=v) for k, v in sorted(env.items())), *file_env],
            mounts=[k8s.VolumeMount(name="work", mount_path="/work"), *secret_mounts],
        )
        return k8s.JobSpec(
            backoff_limit=BACKOFF_LIMIT,
            pod_failure_policy=k8s.PodFailurePolicy(
                rules=[
                    k8s.PodFailurePolicyRule(
                        action="FailJob",
                        on_pod_conditions=[],  # required by the 1.27 schema; empty: exit codes decide
                        on_exit_codes=k8s.PodFailurePolicyOnExitCodesRequirement(
                            container_name=CONTAINER, operator="In", values=[held_exit_code]
                        ),
                    )
                ]
            )
            if held_exit_code is not None
            else None,
            active_deadline_seconds=s.deadline_seconds if deadline else None,
            ttl_seconds_after_finished=ttl_seconds,
            template=k8s.PodTemplateSpec(
                metadata=k8s.ObjectMeta(labels={**p.identity.labels, **p.pod_labels, STORE_LABEL: store}),
                spec=run_once_pod(
                    service_account=self.name,
                    container=container,
                    volumes=[
                        k8s.Volume(name="work", empty_dir=k8s.EmptyDirVolumeSource(size_limit=quantity(scratch)))
                        if scratch
                        # A per-run PVC: a dump can be larger than a node's free ephemeral disk.
                        else k8s.Volume(
                            name="work",
                            ephemeral=k8s.EphemeralVolumeSource(
                                volume_claim_template=k8s.PersistentVolumeClaimTemplate(
                                    spec=k8s.PersistentVolumeClaimSpec(
                                        access_modes=["ReadWriteOnce"],
                                        storage_class_name=p.storage_class,
                                        resources=k8s.ResourceRequirements(
                                            requests={"storage": quantity(format_memory(self.scratch_size(store)))}
                                        ),
                                    )
                                ),
                            ),
                        ),
                        k8s.Volume(name="tmp", empty_dir=k8s.EmptyDirVolumeSource(size_limit=quantity("256Mi"))),
                        *secret_volumes,
                    ],
                ),
            ),
        )

    def footprint(self) -> Footprint:
        # Forbid keeps one run per store; staggered runs rarely overlap, but the quota must allow it,
        # and the scratch volume of every attempt of a failing run until its Job is deleted.
        stores = len(self.props.stores)
        attempts = BACKOFF_LIMIT + 1
        return Footprint(
            resource=f"CronJob/{self.name}-*",
            max_pods=stores,
            surge=0,
            pod_resources=(self.props.settings.resources,),
            storage=sum((self.scratch_size(store) for store in self.props.stores), Decimal(0)) * attempts,
            claims=stores * attempts,
        )


def restore_job(schedule: BackupSchedule, store: Store, *, backup_id: str | None, force: bool) -> dict[str, Any]:
    """The manifest of a one-off restore Job for ``store`` (latest backup unless ``backup_id``).

    It verifies the checksum and counts before touching the store, refuses a
    non-empty store unless ``force``, and can be re-run safely.
    """
    if store not in schedule.props.stores:
        raise ValueError(f"this environment has no {store} store")
    if backup_id is not None and not re.fullmatch(r"[0-9TZ:.-]+", backup_id):
        raise ValueError(f"backup id {backup_id!r} is not a timestamp id as printed by `kgbackup list`")
    args = ["restore", store, *(["--backup-id", backup_id] if backup_id else ["--latest"])]
    if force:
        args.append("--force")
    # No deadline: the data's size is unknown at synth (its volume only bounds it) and the per-record cost
    # grows with the collection, so any fixed deadline either never fires or kills a restore that was
    # nearly done, leaving a half-loaded store. KgaRestoreRunningLong watches it instead.
    return _one_off(schedule, store, "restore", f"restore-{store}", args, ttl_seconds=7 * 86400, deadline=False)


def list_job(schedule: BackupSchedule, store: Store) -> dict[str, Any]:
    """A one-off Job that lists ``store``'s backups (``kgbackup list``): read-only, same access as the CronJob."""
    if store not in schedule.props.stores:
        raise ValueError(f"this environment has no {store} store")
    # It reads manifests from S3 and prints one line each: no dump, so no scratch PVC and no dump-sized memory.
    return _one_off(
        schedule, store, "backup-list", f"backups-{store}", ["list", store], ttl_seconds=3600,
        resources=_LIST_RESOURCES, scratch="64Mi",
    )  # fmt: skip


def _one_off(
    schedule: BackupSchedule,
    store: Store,
    component: str,
    name: str,
    args: list[str],
    *,
    ttl_seconds: int,
    deadline: bool = True,
    resources: Resources | None = None,
    scratch: str | None = None,
) -> dict[str, Any]:
    """A Job ``<release>-<name>`` running ``kgbackup <args>`` with the CronJob's pod (access, volumes)."""
    p = schedule.props
    job = k8s.KubeJob(
        Construct(schedule, f"OneOff-{name}"),
        "Job",
        metadata=object_meta(p.identity.of(component), p.namespace, name=f"{p.identity.instance}-{name}"),
        spec=schedule.job_spec(
            store, args, ttl_seconds=ttl_seconds, deadline=deadline, resources=resources, scratch=scratch
        ),
    )
    manifest: dict[str, Any] = job.to_json()
    return manifest
