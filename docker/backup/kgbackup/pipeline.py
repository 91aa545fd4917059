"""Store-independent backup, verify, restore, list and prune flows."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from kgbackup import __version__
from kgbackup.errors import ChangedDuringDumpError, CorruptDumpError, NotFoundError
from kgbackup.indexer import Indexer
from kgbackup.logjson import log
from kgbackup.manifest import MANIFEST_NAME, DumpWriter, Manifest, new_backup_id, parse_backup_id, verify_object
from kgbackup.retention import RetentionPlan, plan_retention
from kgbackup.storage import Storage


@dataclass
class DumpInfo:
    """What a store reports about the dump it just wrote."""

    counts: dict[str, Any]
    source: dict[str, Any] = field(default_factory=dict)
    content: dict[str, Any] = field(default_factory=dict)


class Store(Protocol):
    """One stateful store: how to dump it, check a dump, and load a dump back."""

    kind: str
    extension: str
    dump_attempts: int
    """Dumps tried when one raises ``ChangedDuringDumpError``."""
    retry_seconds: float

    def dump(self, out: DumpWriter, work_dir: Path) -> DumpInfo:
        """Write the uncompressed logical dump into ``out``; return its counts."""
        ...

    def check_dump(self, gz_path: Path, manifest: Manifest, work_dir: Path) -> None:
        """Read the whole dump and compare its counts with the manifest; must not touch the store."""
        ...

    def restore(self, gz_path: Path, manifest: Manifest, force: bool, work_dir: Path) -> dict[str, Any]:
        """Load a checked dump into the live store; return what was restored."""
        ...

    def close(self) -> None:
        """Release connections and helper processes; called once the command is done."""
        ...


def _prefix(store: str, backup_id: str) -> str:
    return f"{store}/{backup_id}"


def size_of(counts: dict[str, Any]) -> int:
    """One number per backup for the sanity gate: records (Chroma), keys (Redis), nodes + relationships."""
    if "records" in counts:
        return int(counts["records"])
    if "keys" in counts:
        return int(counts["keys"])
    return int(counts.get("nodes", 0)) + int(counts.get("relationships", 0))


@dataclass(frozen=True)
class Gate:
    """When a new backup is held back from ``--latest`` (kept, but restored only by its id)."""

    max_drop: float = 0.5
    """Largest share the size may fall from the newest good backup."""
    accept: bool = False
    """Make it the latest anyway (after a deliberate clean-up)."""


def _held(counts: dict[str, Any], previous: Manifest | None, gate: Gate) -> str | None:
    size = size_of(counts)
    if size == 0:
        return "the store is empty"
    if previous is not None and size < (1 - gate.max_drop) * (before := size_of(previous.counts)):
        return (
            f"its size fell from {before} (backup {previous.backup_id}) to {size}, "
            f"more than the allowed share {gate.max_drop:g}"
        )
    return None


def _dump(
    store: Store, work_dir: Path, gz_path: Path, gzip_level: int, indexer: Indexer | None
) -> tuple[DumpInfo, DumpWriter]:
    """Dump until one attempt is consistent; refuse after ``store.dump_attempts``.

    With an ``indexer``, an attempt also needs it idle, and its commit tracker
    unchanged, from before the dump until after; the tracker is recorded.
    """
    attempts = max(store.dump_attempts, 1)
    for attempt in range(1, attempts + 1):
        try:
            before = indexer.before_dump() if indexer else None
            with DumpWriter(gz_path, gzip_level) as writer:
                info = store.dump(writer, work_dir)
            if indexer and before:
                indexer.after_dump(before)
                info.source["indexed_commits"] = before.tracker
            return info, writer
        except ChangedDuringDumpError as exc:
            if attempt == attempts:
                raise ChangedDuringDumpError(
                    f"{store.kind} changed during each of {attempts} dump(s), so no dump is one point in time "
                    f"(last: {exc}); nothing was recorded. Back up while nothing writes (e.g. no re-index "
                    "running), or allow more attempts"
                ) from exc
            log("backup.retry", level="warning", store=store.kind, attempt=attempt, of=attempts, reason=str(exc))
            time.sleep(store.retry_seconds)
    raise AssertionError("unreachable")


def run_backup(
    store: Store,
    storage: Storage,
    work_dir: Path,
    gzip_level: int = 3,
    gate: Gate | None = None,
    indexer: Indexer | None = None,
) -> Manifest:
    """Dump, upload the object, then the manifest (the manifest marks completion)."""
    gate = gate or Gate()
    started = time.monotonic()
    backup_id = new_backup_id()
    object_name = f"dump.{store.extension}.gz"
    gz_path = work_dir / object_name
    log("backup.start", store=store.kind, backup_id=backup_id, target=storage.description)
    info, writer = _dump(store, work_dir, gz_path, gzip_level, indexer)
    previous = _newest_good(storage, store.kind)
    held = None if gate.accept else _held(info.counts, previous, gate)
    manifest = Manifest(
        store=store.kind,
        backup_id=backup_id,
        object_name=object_name,
        sha256=writer.sha256,
        size_bytes=writer.size,
        uncompressed_bytes=writer.uncompressed_bytes,
        counts=info.counts,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        tool_version=__version__,
        source=info.source,
        content=info.content,
        held=held,
    )
    prefix = _prefix(store.kind, backup_id)
    storage.put_file(f"{prefix}/{object_name}", gz_path)
    storage.put_bytes(f"{prefix}/{MANIFEST_NAME}", manifest.to_json())
    gz_path.unlink(missing_ok=True)
    if held:
        log("backup.held", level="warning", store=store.kind, backup_id=backup_id, reason=held,
            latest=previous.backup_id if previous else None,
            hint="kept, but --latest skips it; restore it by --backup-id, or back up with --accept-drop")  # fmt: skip
    log(
        "backup.done",
        store=store.kind,
        backup_id=backup_id,
        bytes=manifest.size_bytes,
        sha256=manifest.sha256,
        counts=manifest.counts,
        held=held,
        seconds=round(time.monotonic() - started, 3),
    )
    return manifest


def list_backups(storage: Storage, store: str) -> tuple[dict[str, datetime], dict[str, datetime]]:
    """Split backup ids into complete (manifest present) and incomplete ones."""
    complete: dict[str, datetime] = {}
    incomplete: dict[str, datetime] = {}
    for name in storage.list_dirs(store):
        try:
            when = parse_backup_id(name)
        except ValueError:
            continue  # not ours: never list or prune foreign folders
        if storage.exists(f"{_prefix(store, name)}/{MANIFEST_NAME}"):
            complete[name] = when
        else:
            incomplete[name] = when
    return complete, incomplete


def _newest_good(storage: Storage, store: str) -> Manifest | None:
    """The newest complete backup that is not held: what ``--latest`` restores."""
    complete, _ = list_backups(storage, store)
    for backup_id in sorted(complete, reverse=True):
        manifest = load_manifest(storage, store, backup_id)
        if not manifest.held:
            return manifest
    return None


def held_backups(storage: Storage, store: str, complete: dict[str, datetime]) -> dict[str, str]:
    """Held backups among ``complete``, with their reasons."""
    held = {}
    for backup_id in complete:
        reason = load_manifest(storage, store, backup_id).held
        if reason:
            held[backup_id] = reason
    return held


def load_manifest(storage: Storage, store: str, backup_id: str | None) -> Manifest:
    """Fetch the manifest of ``backup_id``, or of the newest good (complete, not held) backup when ``None``."""
    if backup_id is None:
        newest = _newest_good(storage, store)
        if newest is None:
            complete, _ = list_backups(storage, store)
            held = f" ({len(complete)} held back: restore one by --backup-id)" if complete else ""
            raise NotFoundError(f"no complete {store} backup in {storage.description}{held}")
        return newest
    where = f"{storage.description}/{_prefix(store, backup_id)}"
    try:
        manifest = Manifest.from_json(storage.get_bytes(f"{_prefix(store, backup_id)}/{MANIFEST_NAME}"), where)
    except NotFoundError as exc:
        raise NotFoundError(f"backup {backup_id!r} of {store} not found (no manifest at {where})") from exc
    if manifest.store != store or manifest.backup_id != backup_id:
        raise CorruptDumpError(f"{where}: manifest is for {manifest.store}/{manifest.backup_id}")
    return manifest


def fetch_and_check(store: Store, storage: Storage, backup_id: str | None, work_dir: Path) -> tuple[Manifest, Path]:
    """Download, verify size + sha256, then let the store read it all and check counts."""
    manifest = load_manifest(storage, store.kind, backup_id)
    gz_path = work_dir / manifest.object_name
    log("verify.start", store=store.kind, backup_id=manifest.backup_id)
    storage.get_file(f"{_prefix(store.kind, manifest.backup_id)}/{manifest.object_name}", gz_path)
    verify_object(gz_path, manifest)
    store.check_dump(gz_path, manifest, work_dir)
    log("verify.done", store=store.kind, backup_id=manifest.backup_id, counts=manifest.counts)
    return manifest, gz_path


def run_restore(store: Store, storage: Storage, backup_id: str | None, force: bool, work_dir: Path) -> dict[str, Any]:
    """Every check runs before the first write to the live store."""
    started = time.monotonic()
    manifest, gz_path = fetch_and_check(store, storage, backup_id, work_dir)
    log("restore.start", store=store.kind, backup_id=manifest.backup_id, force=force)
    restored = store.restore(gz_path, manifest, force, work_dir)
    # The indexer's tracker as of the backup: written back, the next re-index replays what came after.
    tracker = {"indexed_commits": manifest.source["indexed_commits"]} if "indexed_commits" in manifest.source else {}
    log(
        "restore.done",
        store=store.kind,
        backup_id=manifest.backup_id,
        restored=restored,
        **tracker,
        seconds=round(time.monotonic() - started, 3),
    )
    return restored


def prune(storage: Storage, store: str, keep_daily: int, keep_weekly: int, dry_run: bool = False) -> RetentionPlan:
    complete, incomplete = list_backups(storage, store)
    held = held_backups(storage, store, complete)
    plan = plan_retention(complete, incomplete, keep_daily, keep_weekly, datetime.now(UTC), held=set(held))
    for backup_id in plan.delete:
        if not dry_run:
            storage.delete_prefix(_prefix(store, backup_id))
        log("prune.delete", store=store, backup_id=backup_id, dry_run=dry_run)
    log("prune.done", store=store, kept=len(plan.keep), deleted=len(plan.delete), dry_run=dry_run)
    return plan


# No dump line we write comes near this (a Chroma page of 1000 records at dimension
# 1536 is about 9 MiB); a longer one is damage, and reading it whole would let a bad
# object decide how much memory a restore takes.
MAX_LINE_BYTES = 64 << 20


def read_gzip_lines(gz_path: Path, max_line: int | None = None) -> Iterator[bytes]:
    """Iterate the lines of a gzip dump, turning decompression errors and overlong lines into clear errors."""
    import gzip
    import zlib

    max_line = MAX_LINE_BYTES if max_line is None else max_line
    try:
        with gzip.open(gz_path, "rb") as fh:
            number = 0
            while line := fh.readline(max_line + 1):
                number += 1
                if len(line) > max_line:
                    raise CorruptDumpError(f"{gz_path.name} line {number}: longer than {max_line} bytes")
                yield line
    except (OSError, EOFError, zlib.error) as exc:
        raise CorruptDumpError(f"{gz_path.name}: dump does not decompress cleanly: {exc}") from exc


def copy_gzip_to(gz_path: Path, out: BinaryIO) -> int:
    """Decompress a dump into ``out`` in chunks; returns the byte count."""
    import gzip
    import zlib

    total = 0
    try:
        with gzip.open(gz_path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                out.write(chunk)
                total += len(chunk)
    except (OSError, EOFError, zlib.error) as exc:
        raise CorruptDumpError(f"{gz_path.name}: dump does not decompress cleanly: {exc}") from exc
    return total
