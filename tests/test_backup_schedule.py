"""BackupSchedule: staggered CronJobs that the kgbackup CLI accepts, and restore Jobs on demand."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import cdk8s
import pytest
import yaml
from backup_servers import cli
from conftest import ROOT, build, env_data

from kgstack import AgentStack
from kgstack.backup_schedule import restore_job
from kgstack.environment import EnvironmentFileError, parse_environment
from kgstack.publish import manifests
from kgstack.validation import collect_errors

Manifests = dict[str, dict[str, dict[str, Any]]]


def cronjobs(manifests: Manifests, env: str) -> dict[str, dict[str, Any]]:
    # The backup CronJobs only (the re-indexing CronJob has its own tests).
    return {k.rsplit("-", 1)[1]: v for k, v in manifests[env].items() if k.startswith(f"CronJob/kga-{env}-backup-")}


def test_one_cronjob_per_store_on_staggered_schedules(manifests: Manifests) -> None:
    jobs = cronjobs(manifests, "staging")
    assert {store: job["spec"]["schedule"] for store, job in jobs.items()} == {
        "redis": "15 2 * * *",
        "chroma": "45 2 * * *",
        "memgraph": "15 3 * * *",
    }
    assert set(cronjobs(manifests, "prod")) == {"redis", "chroma"}


@pytest.mark.parametrize("env", ["dev", "staging", "prod"])
def test_job_policies(manifests: Manifests, env: str) -> None:
    for job in cronjobs(manifests, env).values():
        spec = job["spec"]
        assert spec["concurrencyPolicy"] == "Forbid"
        assert spec["timeZone"] == "Etc/UTC"
        assert (spec["successfulJobsHistoryLimit"], spec["failedJobsHistoryLimit"]) == (3, 3)
        jspec = spec["jobTemplate"]["spec"]
        assert jspec["backoffLimit"] == 2 and jspec["activeDeadlineSeconds"] >= 600
        # A finished run (and its scratch PVCs) is gone before the next night's run of the store may
        # start: one that started an hour late (startingDeadlineSeconds) and ran to its deadline.
        latest_end = spec["startingDeadlineSeconds"] + jspec["activeDeadlineSeconds"]
        assert latest_end + jspec["ttlSecondsAfterFinished"] <= 86400
        assert jspec["template"]["spec"]["restartPolicy"] == "Never"


def _for_seconds(manifests: Manifests, env: str, alert: str) -> int:
    rules = [r for g in manifests[env][f"PrometheusRule/kga-{env}"]["spec"]["groups"] for r in g["rules"]]
    duration = next(r["for"] for r in rules if r.get("alert") == alert)
    return int(duration[:-1]) * {"s": 1, "m": 60, "h": 3600}[duration[-1]]


@pytest.mark.parametrize("env", ["dev", "staging", "prod"])
def test_a_failed_backup_job_is_kept_until_its_alert_is_seen(manifests: Manifests, env: str) -> None:
    """Issue 25: a 1 h TTL deleted the failed Job, which resolved KgaBackupJobFailed and took the logs its
    runbook reads. It is kept well past the alert's for: (8 h margin: a night's failure is there in the
    morning); KgaBackupFailedTwice then reads the CronJob's last success, not the expired Job."""
    margin = 8 * 3600
    for job in cronjobs(manifests, env).values():
        ttl = job["spec"]["jobTemplate"]["spec"]["ttlSecondsAfterFinished"]
        assert ttl >= _for_seconds(manifests, env, "KgaBackupJobFailed") + margin, ttl


def test_the_deadline_leaves_the_failed_job_a_day() -> None:
    with pytest.raises(EnvironmentFileError, match=r"deadlineSeconds: Input should be less than or equal to 43200"):
        parse_environment(env_data("dev", backup__deadlineSeconds=13 * 3600), source="dev.yaml")


def _scratch(manifests: Manifests, env: str, store: str) -> str:
    pod = cronjobs(manifests, env)[store]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (work,) = [v for v in pod["volumes"] if v["name"] == "work"]
    return str(work["ephemeral"]["volumeClaimTemplate"]["spec"]["resources"]["requests"]["storage"])


def test_the_scratch_volume_follows_the_store_it_backs_up(manifests: Manifests) -> None:
    """Issue 25: prod's 50Gi scratch against a 100Gi Chroma volume. Without backup.workSize each store's
    scratch is derived from its volume; Redis's holds the gzip dump and the RDB beside it."""
    prod = parse_environment(env_data("prod"), source="prod.yaml")
    assert prod.backup.work_size is None
    assert _scratch(manifests, "prod", "chroma") == prod.stores.chroma.storage_size == "100Gi"  # type: ignore[union-attr]
    assert _scratch(manifests, "prod", "redis") == "10Gi"  # 2 x 5Gi
    assert {_scratch(manifests, "dev", store) for store in cronjobs(manifests, "dev")} == {"5Gi"}  # explicit


def test_a_scratch_volume_smaller_than_the_store_is_refused_at_synth() -> None:
    env = parse_environment(env_data("prod", backup__workSize="50Gi"), source="prod.yaml")
    app, _ = build(env)
    errors = collect_errors(app)
    assert any(
        "backup.workSize: is 50Gi but the chroma backup spools up to 100Gi (1 x stores.chroma.storageSize 100Gi): "
        "set it to at least 100Gi, or remove it to size each store's scratch from its volume" in e
        for e in errors
    ), errors
    assert not any("redis backup spools" in e for e in errors)  # 10Gi fits


def test_credentials_secret_or_workload_identity(manifests: Manifests) -> None:
    def env_names(env: str) -> set[str]:
        pod = cronjobs(manifests, env)["redis"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        container = pod["containers"][0]
        return {e["name"] for e in container["env"]}

    assert "AWS_SHARED_CREDENTIALS_FILE" in env_names("dev")
    assert "AWS_SHARED_CREDENTIALS_FILE" not in env_names("prod")
    sa = manifests["prod"]["ServiceAccount/kga-prod-backup"]["metadata"]["annotations"]
    assert sa["eks.amazonaws.com/role-arn"] == "arn:aws:iam::444455556666:role/kga-prod"


@pytest.mark.parametrize("store", ["redis", "chroma", "memgraph"])
def test_the_cli_accepts_what_the_cronjob_passes(
    manifests: Manifests, store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = cronjobs(manifests, "staging")[store]
    container = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert all("valueFrom" not in var for var in container["env"])  # secrets arrive as files
    for var in container["env"]:
        monkeypatch.setenv(var["name"], var["value"])
    args = cli.build_parser().parse_args(container["args"])
    assert (args.command, args.store, args.prune) == ("backup", store, True)
    assert args.target == "s3://acme-kga-backups/staging"
    assert (args.keep_daily, args.keep_weekly, args.work_dir) == ("7", "4", "/work")
    expected = {
        "redis": ("redis_url", "redis://backup@kga-staging-redis:6379/0"),
        "chroma": ("chroma_host", "kga-staging-chroma"),
        "memgraph": ("memgraph_url", "bolt://kga-staging-memgraph:7687"),
    }[store]
    assert getattr(args, expected[0]) == expected[1]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    password_file = {"redis": args.redis_password_file, "memgraph": args.memgraph_password_file}.get(store)
    if password_file:
        assert password_file.rsplit("/", 1)[0] in mounts


def test_restore_job_is_rendered_on_demand(environments: dict[str, Any]) -> None:
    stack = AgentStack(cdk8s.App(), environments["staging"])
    job = restore_job(stack.backups, "chroma", backup_id="20261127T021500Z", force=True)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["restore", "chroma", "--backup-id", "20261127T021500Z", "--force"]
    assert job["metadata"]["name"] == "kga-staging-restore-chroma"
    # The restore pod is a backup pod for the network policies: same labels.
    assert job["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == "backup"
    # No deadline: it is watched by KgaRestoreRunningLong instead (the backup's 2 h would stop a large restore).
    assert "activeDeadlineSeconds" not in job["spec"]
    latest = restore_job(stack.backups, "redis", backup_id=None, force=False)
    assert latest["spec"]["template"]["spec"]["containers"][0]["args"] == ["restore", "redis", "--latest"]
    with pytest.raises(ValueError, match="not a timestamp id"):
        restore_job(stack.backups, "redis", backup_id="x; rm -rf /", force=False)


def test_restore_is_never_in_dist() -> None:
    assert not list((ROOT / "dist").rglob("job-*restore*"))


def test_app_prints_a_restore_job() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "app.py"), "restore", "prod", "redis"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    job = yaml.safe_load(result.stdout)
    assert (job["kind"], job["metadata"]["namespace"]) == ("Job", "kga-prod")
    missing = subprocess.run(
        [sys.executable, str(ROOT / "app.py"), "restore", "prod", "memgraph"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode == 2 and "has no memgraph store" in missing.stderr


def test_private_object_storage_only_for_the_backup_runs() -> None:
    """ "The internet" excludes private ranges; a VPC endpoint or MinIO is listed explicitly (second review, 7)."""
    env = parse_environment(env_data("dev", network__objectStorageCidrs=["10.20.0.0/16"]), source="dev.yaml")
    _, stack = build(env)
    objects = manifests(stack)
    policy = objects["networkpolicy-kga-dev-backup-redis.yaml"]["spec"]
    blocks = [to["ipBlock"] for rule in policy["egress"] for to in rule["to"] if "ipBlock" in to]
    assert {"cidr": "10.20.0.0/16"} in blocks
    query = objects["networkpolicy-kga-dev-query.yaml"]["spec"]
    assert all(to.get("ipBlock", {}).get("cidr") != "10.20.0.0/16" for rule in query["egress"] for to in rule["to"])


def test_the_listing_job_is_sized_for_a_listing(environments: dict[str, Any]) -> None:
    """Issue 21: the Job that runs `kgbackup list` asked for the dump's 50Gi volume and 1Gi of memory."""
    from kgstack.backup_schedule import list_job
    from kgstack.quantity import parse_quantity

    stack = AgentStack(cdk8s.App(), environments["prod"])
    pod = list_job(stack.backups, "chroma")["spec"]["template"]["spec"]
    (work,) = [v for v in pod["volumes"] if v["name"] == "work"]
    assert "ephemeral" not in work and parse_quantity(work["emptyDir"]["sizeLimit"]) <= parse_quantity("64Mi")
    limits = pod["containers"][0]["resources"]["limits"]
    assert parse_quantity(limits["memory"]) <= parse_quantity("256Mi")
    # A restore still moves a dump: the environment's scratch PVC and resources.
    restore = restore_job(stack.backups, "chroma", backup_id=None, force=False)["spec"]["template"]["spec"]
    (scratch,) = [v for v in restore["volumes"] if v["name"] == "work"]
    claim = scratch["ephemeral"]["volumeClaimTemplate"]["spec"]["resources"]["requests"]["storage"]
    assert parse_quantity(claim) == stack.backups.scratch_size("chroma")
    assert (
        restore["containers"][0]["resources"]["limits"]["memory"] == environments["prod"].backup.resources.limits.memory
    )


def test_kga_restore_running_long_watches_the_restore_job_as_rendered(
    environments: dict[str, Any], manifests: Manifests
) -> None:
    """The restore Job has no deadline; the alert that watches it must select it by its rendered name."""
    stack = AgentStack(cdk8s.App(), environments["staging"])
    rules = [r for g in manifests["staging"]["PrometheusRule/kga-staging"]["spec"]["groups"] for r in g["rules"]]
    (watch,) = [r["expr"] for r in rules if r.get("alert") == "KgaRestoreRunningLong"]
    for store in ("redis", "chroma", "memgraph"):
        job = restore_job(stack.backups, store, backup_id=None, force=False)  # type: ignore[arg-type]
        assert f'job_name="{job["metadata"]["name"]}"' in watch, store
        assert "activeDeadlineSeconds" not in job["spec"]
