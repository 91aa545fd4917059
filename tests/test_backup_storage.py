"""Targets, manifests and retention of the backup tool (file:// and moto S3)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from backup_servers import BACKUP_DIR, error_of, run_cli, s3_endpoint, s3_target

from kgbackup.errors import ConfigError, CorruptDumpError, NotFoundError
from kgbackup.manifest import DumpWriter, Manifest, new_backup_id, parse_backup_id, verify_object
from kgbackup.pipeline import DumpInfo, Gate, load_manifest, run_backup
from kgbackup.retention import plan_retention
from kgbackup.storage import FileStorage, Storage, open_storage

pytestmark = pytest.mark.backup
__all__ = ["s3_endpoint", "s3_target"]  # fixtures used by this module

NOW = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)  # a Friday


def stamps(*ages_hours: float) -> dict[str, datetime]:
    return {new_backup_id(NOW - timedelta(hours=h)): NOW - timedelta(hours=h) for h in ages_hours}


def test_backup_id_roundtrip_and_order() -> None:
    a, b = new_backup_id(NOW), new_backup_id(NOW + timedelta(milliseconds=1))
    assert a == "20260320T120000.000Z" and a < b
    assert parse_backup_id(b) == NOW + timedelta(milliseconds=1)
    with pytest.raises(ValueError):
        parse_backup_id("lost+found")


def test_retention_keeps_newest_per_day_and_week() -> None:
    # Two backups a day for 40 days.
    complete = stamps(*[d * 24 + h for d in range(40) for h in (1, 13)])
    plan = plan_retention(complete, {}, keep_daily=7, keep_weekly=4, now=NOW)
    kept = sorted((complete[k] for k in plan.keep), reverse=True)
    days = {(t.date()) for t in kept}
    assert len(plan.keep) == len(days)  # one per day kept at most
    assert kept[0] == NOW - timedelta(hours=1)
    last7 = {(NOW - timedelta(hours=1) - timedelta(days=d)).date() for d in range(7)}
    assert last7 <= days
    weeks = {t.isocalendar()[:2] for t in kept}
    # 7 days (Mar 14-20) cover ISO weeks 11 and 12; weekly adds the newest of weeks 9 and 10.
    assert len(weeks) == 4 and len(plan.keep) == 9
    assert set(plan.keep) | set(plan.delete) == set(complete)


def test_retention_always_keeps_newest_and_fresh_incomplete() -> None:
    complete = stamps(100, 200)
    incomplete = {**stamps(1), **stamps(300)}
    plan = plan_retention(complete, incomplete, keep_daily=0, keep_weekly=0, now=NOW)
    assert plan.keep == sorted([max(complete), max(incomplete)])
    assert len(plan.delete) == 2


def test_manifest_rejects_garbage() -> None:
    with pytest.raises(CorruptDumpError, match="not valid"):
        Manifest.from_json(b"{not json", "x")
    with pytest.raises(CorruptDumpError, match="unsupported manifest format"):
        Manifest.from_json(b'{"format_version": 99}', "x")
    with pytest.raises(CorruptDumpError, match="not valid"):
        Manifest.from_json(b'{"format_version": 1, "store": "redis"}', "x")


def test_dump_writer_checksum_and_size(tmp_path: Path) -> None:
    path = tmp_path / "d.gz"
    with DumpWriter(path) as writer:
        for _ in range(100):
            writer.write(b"x" * 10_000)
    manifest = Manifest("redis", "id", "d.gz", writer.sha256, writer.size, writer.uncompressed_bytes, {}, "", "0")
    verify_object(path, manifest)
    assert manifest.uncompressed_bytes == 1_000_000 and path.stat().st_size == writer.size
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(CorruptDumpError, match="truncated or replaced"):
        verify_object(path, manifest)


def test_file_storage_refuses_escaping_keys(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path / "root")
    with pytest.raises(ConfigError):
        storage.put_bytes("../outside", b"x")
    with pytest.raises(ConfigError, match="unsupported target"):
        open_storage("ftp://host/x", None)


def fabricate(storage: Storage, store: str, when: datetime, complete: bool = True, held: str | None = None) -> str:
    backup_id = new_backup_id(when)
    storage.put_bytes(f"{store}/{backup_id}/dump.rdb.gz", b"data")
    if complete:
        manifest = Manifest(
            store, backup_id, "dump.rdb.gz", "0" * 64, 4, 4, {"keys": 1}, when.isoformat(), "0", held=held
        )
        storage.put_bytes(f"{store}/{backup_id}/manifest.json", manifest.to_json())
    return backup_id


def check_prune(storage: Storage, target: str, *extra: str) -> None:
    now = datetime.now(UTC)
    ids = [fabricate(storage, "redis", now - timedelta(days=d)) for d in range(20)]
    stale = fabricate(storage, "redis", now - timedelta(days=2, hours=1), complete=False)
    other_store = fabricate(storage, "chroma", now - timedelta(days=100))

    code, lines = run_cli("prune", "redis", "--target", target, "--keep-daily", "3", "--keep-weekly", "2", *extra)
    assert code == 0, lines
    left = set(storage.list_dirs("redis"))
    assert set(ids[:3]) <= left and stale not in left
    assert 3 <= len(left) <= 5  # 3 days, plus up to 2 older weekly copies
    assert storage.list_dirs("chroma") == [other_store]  # other stores untouched

    code, lines = run_cli("list", "redis", "--target", target, *extra)
    assert code == 0
    assert [line["backup_id"] for line in lines] == sorted(left, reverse=True)


def test_prune_and_list_file_target(tmp_path: Path) -> None:
    check_prune(FileStorage(tmp_path), f"file://{tmp_path}")


def test_prune_and_list_s3_target(s3_target: str, s3_endpoint: str) -> None:
    check_prune(open_storage(s3_target, s3_endpoint), s3_target, "--s3-endpoint-url", s3_endpoint)


def test_unknown_backup_id_and_missing_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, lines = run_cli("verify", "redis", "--backup-id", "20200101T000000.000Z", "--target", f"file://{tmp_path}")
    assert code == 1 and "not found" in error_of(lines)
    monkeypatch.delenv("KGB_TARGET", raising=False)
    code, lines = run_cli("list", "redis")
    assert code == 1 and "no target" in error_of(lines)


def test_manifest_for_another_backup_is_rejected(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path)
    real = fabricate(storage, "redis", NOW)
    copy = new_backup_id(NOW + timedelta(seconds=1))
    storage.put_bytes(f"redis/{copy}/manifest.json", storage.get_bytes(f"redis/{real}/manifest.json"))
    code, lines = run_cli("verify", "redis", "--latest", "--target", f"file://{tmp_path}")
    assert code == 1 and "manifest is for redis/" in error_of(lines)


def _pins(path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-\[\]]+)==(\S+)", line.strip())
        if match:
            pins[re.sub(r"\[.*\]", "", match.group(1)).lower()] = match.group(2)
    return pins


def test_runtime_and_test_pins_agree() -> None:
    """The tests must exercise the same client versions the image ships."""
    runtime = _pins(BACKUP_DIR / "requirements.txt")
    tests = _pins(BACKUP_DIR.parent.parent / "requirements" / "backup-test.txt")
    assert runtime and all("==" in line or not line.strip() or line.startswith("#")
                           for line in (BACKUP_DIR / "requirements.txt").read_text().splitlines())  # fmt: skip
    assert runtime.pop("chromadb-client") == tests["chromadb"]  # the thin client, same release
    assert {k: tests.get(k) for k in runtime} == runtime


def test_manifest_json_is_stable(tmp_path: Path) -> None:
    manifest = Manifest("chroma", "id", "dump.jsonl.gz", "a" * 64, 1, 2, {"records": 3}, "now", "0.1.0")
    data: dict[str, Any] = json.loads(manifest.to_json())
    assert data["tool"] == "kgbackup" and data["format_version"] == 1 and data["sha256"] == "a" * 64
    assert Manifest.from_json(manifest.to_json(), "x") == manifest


def test_dump_lines_are_read_with_a_bounded_buffer(tmp_path: Path) -> None:
    """A 64 MiB line with no newline is refused after reading about the cap, never held whole."""
    import gzip
    import tracemalloc

    from kgbackup.pipeline import read_gzip_lines

    dump = tmp_path / "dump.jsonl.gz"
    with gzip.open(dump, "wb", compresslevel=1) as fh:
        fh.write(b'{"kind":"header"}\n')
        for _ in range(64):
            fh.write(b"x" * (1 << 20))
    tracemalloc.start()
    try:
        lines = read_gzip_lines(dump, max_line=1 << 20)
        assert next(lines) == b'{"kind":"header"}\n'
        with pytest.raises(CorruptDumpError, match="line 2: longer than 1048576 bytes"):
            next(lines)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, peak


class SizedStore:
    """A store of ``size`` records for the pipeline (the dump is a line of text; no server needed)."""

    kind = "chroma"
    extension = "jsonl"
    dump_attempts = 1
    retry_seconds = 0.0

    def __init__(self, size: int) -> None:
        self.size = size

    def dump(self, out: DumpWriter, work_dir: Path) -> DumpInfo:
        out.write(f"{self.size}\n".encode())
        return DumpInfo(counts={"collections": {"c": self.size}, "records": self.size})


def test_sudden_drop_or_empty_store_is_kept_but_not_latest(s3_target: str, s3_endpoint: str, tmp_path: Path) -> None:
    storage = open_storage(s3_target, s3_endpoint)
    good = run_backup(SizedStore(1000), storage, tmp_path)
    assert good.held is None
    dropped = run_backup(SizedStore(400), storage, tmp_path)  # a 60% drop; 50% is allowed
    assert dropped.held and "fell from 1000" in dropped.held and good.backup_id in dropped.held
    empty = run_backup(SizedStore(0), storage, tmp_path)
    assert empty.held == "the store is empty"
    assert load_manifest(storage, "chroma", None).backup_id == good.backup_id  # what --latest restores
    assert load_manifest(storage, "chroma", dropped.backup_id).held  # still there, by its id
    slight = run_backup(SizedStore(600), storage, tmp_path, gate=Gate(max_drop=0.5))  # compared with the good one
    assert slight.held is None and load_manifest(storage, "chroma", None).backup_id == slight.backup_id
    accepted = run_backup(SizedStore(10), storage, tmp_path, gate=Gate(accept=True))  # a deliberate clean-up
    assert accepted.held is None and load_manifest(storage, "chroma", None).backup_id == accepted.backup_id

    code, lines = run_cli("list", "chroma", "--target", s3_target, "--s3-endpoint-url", s3_endpoint)
    assert code == 0
    held = {line["backup_id"]: line["held"] for line in lines}
    assert held[dropped.backup_id] and held[empty.backup_id] and not held[good.backup_id]


def test_held_backups_alone_find_no_latest(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path)
    run_backup(SizedStore(0), storage, tmp_path)
    with pytest.raises(NotFoundError, match=r"1 held back: restore one by --backup-id"):
        load_manifest(storage, "chroma", None)


def test_retention_never_prunes_the_newest_good_backup() -> None:
    """Dev's 3 daily and 1 weekly copies: five bad nights in a row must not take the last good one."""
    complete = stamps(*[d * 24 + 2 for d in range(8)])  # one backup a night for 8 nights
    newest_first = sorted(complete, reverse=True)
    held = set(newest_first[:5])  # the store was wiped five nights ago
    plan = plan_retention(complete, {}, keep_daily=3, keep_weekly=1, now=NOW, held=held)
    good = sorted(set(complete) - held, reverse=True)
    assert good[0] in plan.keep  # the newest good backup, and the daily slots go to good ones
    assert set(good) <= set(plan.keep)  # 3 good ones left, all within the 3 daily slots
    assert set(plan.keep) & held == set(newest_first[:3])  # the newest held ones stay for inspection
    without_gate = plan_retention(complete, {}, keep_daily=3, keep_weekly=1, now=NOW)
    assert not set(good) & set(without_gate.keep)  # what happened before: every good copy pruned


def test_prune_keeps_the_newest_good_backup_on_s3(s3_target: str, s3_endpoint: str) -> None:
    storage = open_storage(s3_target, s3_endpoint)
    now = datetime.now(UTC)
    good = fabricate(storage, "redis", now - timedelta(days=9))
    bad = [fabricate(storage, "redis", now - timedelta(days=d), held="the store is empty") for d in range(8)]
    code, lines = run_cli("prune", "redis", "--target", s3_target, "--s3-endpoint-url", s3_endpoint,
                          "--keep-daily", "3", "--keep-weekly", "1")  # fmt: skip
    assert code == 0, lines
    assert set(storage.list_dirs("redis")) == {good, *bad[:3]}
