"""Command line: ``kgbackup {backup,restore,verify,list,prune} {redis,chroma,memgraph}``.

Every flag falls back to an environment variable, so Kubernetes Jobs configure
the tool with env and Secrets; passwords are read from env or files, never argv.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import traceback
from collections.abc import Sequence
from pathlib import Path

from kgbackup import __version__
from kgbackup.errors import ConfigError, KgBackupError
from kgbackup.indexer import Indexer
from kgbackup.logjson import log
from kgbackup.pipeline import Gate, Store, fetch_and_check, list_backups, load_manifest, prune, run_backup, run_restore
from kgbackup.storage import Storage, open_storage

STORES = ("redis", "chroma", "memgraph")


def _env(*names: str, default: str | None = None) -> str | None:
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return default


def _secret(env_name: str, file_path: str | None) -> str | None:
    """A password from a file (mounted Secret) or an env var; the file wins."""
    if file_path:
        try:
            return Path(file_path).read_text().rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(f"cannot read password file {file_path}: {exc}") from exc
    return os.environ.get(env_name) or None


def _int(value: str | None, name: str) -> int:
    try:
        return int(value or "")
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer, got {value!r}") from exc


def _float(value: str | None, name: str) -> float:
    try:
        return float(value or "")
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number, got {value!r}") from exc


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("store", choices=STORES)
    p.add_argument("--target", default=_env("KGB_TARGET"), help="s3://bucket/prefix or file:///dir [KGB_TARGET]")
    p.add_argument("--s3-endpoint-url", default=_env("KGB_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL"),
                   help="S3-compatible endpoint [KGB_S3_ENDPOINT_URL, AWS_ENDPOINT_URL]")  # fmt: skip
    p.add_argument("--work-dir", default=_env("KGB_WORK_DIR"), help="spool directory for dumps [KGB_WORK_DIR]")


def _add_store_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("redis")
    g.add_argument("--redis-url", default=_env("KGB_REDIS_URL", "REDIS_URL", default="redis://127.0.0.1:6379/0"),
                   help="[KGB_REDIS_URL, REDIS_URL]; password: REDIS_PASSWORD or --redis-password-file")  # fmt: skip
    g.add_argument("--redis-password-file", default=_env("REDIS_PASSWORD_FILE"), help="[REDIS_PASSWORD_FILE]")
    g.add_argument("--redis-server-bin", default=_env("KGB_REDIS_SERVER_BIN", default="redis-server"))
    g = p.add_argument_group("chroma")
    g.add_argument("--chroma-host", default=_env("CHROMA_HOST", default="127.0.0.1"), help="[CHROMA_HOST]")
    g.add_argument("--chroma-port", default=_env("CHROMA_PORT", default="8000"), help="[CHROMA_PORT]")
    g.add_argument("--chroma-ssl", action="store_true", default=_env("CHROMA_SSL") in ("1", "true"))
    g.add_argument("--chroma-tenant", default=_env("CHROMA_TENANT", default="default_tenant"))
    g.add_argument("--chroma-database", default=_env("CHROMA_DATABASE", default="default_database"))
    g.add_argument("--chroma-page-size", default=_env("KGB_CHROMA_PAGE_SIZE", default="250"),
                   help="records per read page and dump line [KGB_CHROMA_PAGE_SIZE]")  # fmt: skip
    g.add_argument("--chroma-upsert-batch", default=_env("KGB_CHROMA_UPSERT_BATCH", default="1000"),
                   help="records per restore upsert [KGB_CHROMA_UPSERT_BATCH]")  # fmt: skip
    g.add_argument("--chroma-upsert-workers", default=_env("KGB_CHROMA_UPSERT_WORKERS", default="2"),
                   help="restore upserts in flight [KGB_CHROMA_UPSERT_WORKERS]")  # fmt: skip
    g.add_argument("--chroma-attempts", default=_env("KGB_CHROMA_ATTEMPTS", default="3"),
                   help="dumps tried while the store keeps changing, then refused [KGB_CHROMA_ATTEMPTS]")  # fmt: skip
    g.add_argument("--chroma-retry-seconds", default=_env("KGB_CHROMA_RETRY_SECONDS", default="60"),
                   help="pause between those dumps [KGB_CHROMA_RETRY_SECONDS]")  # fmt: skip
    g = p.add_argument_group("memgraph")
    g.add_argument("--memgraph-url", default=_env("KGB_MEMGRAPH_URL", "GRAPH_STORE_URL", default="bolt://127.0.0.1:7687"),
                   help="[KGB_MEMGRAPH_URL, GRAPH_STORE_URL]; password from GRAPH_STORE_PASSWORD")  # fmt: skip
    g.add_argument("--memgraph-user", default=_env("GRAPH_STORE_USER"), help="[GRAPH_STORE_USER]")
    g.add_argument("--memgraph-password-file", default=_env("GRAPH_STORE_PASSWORD_FILE"))


def _add_selector(p: argparse.ArgumentParser) -> None:
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--latest", action="store_true", help="newest complete backup")
    which.add_argument("--backup-id", help="a backup id as shown by `kgbackup list`")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kgbackup", description=__doc__)
    parser.add_argument("--version", action="version", version=f"kgbackup {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    backup = sub.add_parser("backup", help="dump a store to the target")
    backup.add_argument("--gzip-level", default=_env("KGB_GZIP_LEVEL", default="3"))
    backup.add_argument("--prune", action="store_true", default=_env("KGB_PRUNE") in ("1", "true"),
                        help="apply retention after a successful backup [KGB_PRUNE]")  # fmt: skip
    backup.add_argument("--indexer-url", default=_env("KGB_INDEXER_URL"),
                        help="the agent's indexer: dump only while it is idle, and record its commit tracker "
                        "[KGB_INDEXER_URL]")  # fmt: skip
    backup.add_argument("--max-drop", default=_env("KGB_MAX_DROP", default="0.5"),
                        help="a backup whose size falls by more than this share from the newest good one, or of "
                        "an empty store, is kept but held back from --latest [KGB_MAX_DROP]")  # fmt: skip
    backup.add_argument("--accept-drop", action="store_true", default=_env("KGB_ACCEPT_DROP") in ("1", "true"),
                        help="make it the latest even so (a deliberate clean-up) [KGB_ACCEPT_DROP]")  # fmt: skip
    backup.add_argument("--held-exit-code", default=_env("KGB_HELD_EXIT_CODE", default="0"),
                        help="exit with this code when the backup is held back, so a scheduler can tell and alert "
                        "(0: succeed as usual) [KGB_HELD_EXIT_CODE]")  # fmt: skip
    restore = sub.add_parser("restore", help="verify a backup, then load it into the store")
    restore.add_argument("--force", action="store_true", help="replace existing data in the target")
    verify = sub.add_parser("verify", help="download and check a backup without touching the store")
    listing = sub.add_parser("list", help="list backups")
    pruning = sub.add_parser("prune", help="apply retention")
    pruning.add_argument("--dry-run", action="store_true")
    for p in (backup, restore, verify, listing, pruning):
        _add_common(p)
    for p in (backup, restore, verify):
        _add_store_flags(p)
    for p in (restore, verify):
        _add_selector(p)
    for p in (backup, pruning):
        p.add_argument("--keep-daily", default=_env("KGB_KEEP_DAILY", default="7"), help="[KGB_KEEP_DAILY]")
        p.add_argument("--keep-weekly", default=_env("KGB_KEEP_WEEKLY", default="4"), help="[KGB_KEEP_WEEKLY]")
    return parser


def make_store(args: argparse.Namespace) -> Store:
    if args.store == "redis":
        from kgbackup.redis_store import RedisConfig, RedisStore

        password = _secret("REDIS_PASSWORD", args.redis_password_file)
        return RedisStore(RedisConfig(url=args.redis_url, password=password, server_bin=args.redis_server_bin))
    if args.store == "chroma":
        from kgbackup.chroma_store import ChromaConfig, ChromaStore

        return ChromaStore(ChromaConfig(
            host=args.chroma_host, port=_int(args.chroma_port, "--chroma-port"), ssl=args.chroma_ssl,
            tenant=args.chroma_tenant, database=args.chroma_database,
            auth_token=os.environ.get("CHROMA_AUTH_TOKEN") or None,
            page_size=_int(args.chroma_page_size, "--chroma-page-size"),
            upsert_batch=_int(args.chroma_upsert_batch, "--chroma-upsert-batch"),
            upsert_workers=_int(args.chroma_upsert_workers, "--chroma-upsert-workers"),
            attempts=_int(args.chroma_attempts, "--chroma-attempts"),
            retry_seconds=_float(args.chroma_retry_seconds, "--chroma-retry-seconds"),
        ))  # fmt: skip
    from kgbackup.memgraph_store import MemgraphConfig, MemgraphStore

    password = _secret("GRAPH_STORE_PASSWORD", args.memgraph_password_file)
    return MemgraphStore(MemgraphConfig(url=args.memgraph_url, user=args.memgraph_user, password=password))


def _backup(args: argparse.Namespace, store: Store, storage: Storage, work_dir: Path) -> int:
    """Back up, then prune if asked; ``--held-exit-code`` when the new backup is held back."""
    max_drop = _float(args.max_drop, "--max-drop")
    if not 0 <= max_drop <= 1:
        raise ConfigError(f"--max-drop must be a share between 0 and 1, got {max_drop}")
    gate = Gate(max_drop=max_drop, accept=args.accept_drop)
    indexer = Indexer(args.indexer_url) if args.indexer_url else None
    held_exit = _int(args.held_exit_code, "--held-exit-code")
    if not 0 <= held_exit <= 255 or held_exit in (1, 2):
        raise ConfigError(f"--held-exit-code must be 0 or 3 to 255 (1 and 2 mean failed and usage), got {held_exit}")
    manifest = run_backup(store, storage, work_dir, _int(args.gzip_level, "--gzip-level"), gate, indexer)
    if args.prune:
        daily, weekly = _int(args.keep_daily, "--keep-daily"), _int(args.keep_weekly, "--keep-weekly")
        prune(storage, args.store, daily, weekly)
    if manifest.held:
        return held_exit
    return 0


def _run(args: argparse.Namespace, work_dir: Path) -> int:
    """Run the command; the exit code when it did not fail (failures raise)."""
    if not args.target:
        raise ConfigError("no target: pass --target or set KGB_TARGET")
    storage = open_storage(args.target, args.s3_endpoint_url)
    if args.command == "list":
        complete, incomplete = list_backups(storage, args.store)
        for backup_id in sorted(complete, reverse=True):
            m = load_manifest(storage, args.store, backup_id)
            log("backup", store=args.store, backup_id=backup_id, bytes=m.size_bytes, counts=m.counts, held=m.held)
        for backup_id in sorted(incomplete, reverse=True):
            log("backup.incomplete", store=args.store, backup_id=backup_id)
        return 0
    if args.command == "prune":
        daily, weekly = _int(args.keep_daily, "--keep-daily"), _int(args.keep_weekly, "--keep-weekly")
        prune(storage, args.store, daily, weekly, args.dry_run)
        return 0
    store = make_store(args)
    selected: str | None = None if getattr(args, "latest", False) else getattr(args, "backup_id", None)
    try:
        if args.command == "backup":
            return _backup(args, store, storage, work_dir)
        if args.command == "verify":
            fetch_and_check(store, storage, selected, work_dir)
        else:
            run_restore(store, storage, selected, args.force, work_dir)
    finally:
        store.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Exit codes: 0 ok, 1 failed (one JSON error line on stdout), 2 bad usage, and ``--held-exit-code``
    for a backup that was written but held back (0 unless set)."""
    args = build_parser().parse_args(argv)
    work_root = args.work_dir or None
    if work_root:
        Path(work_root).mkdir(parents=True, exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix="kgbackup-", dir=work_root))
    try:
        return _run(args, work_dir)
    except KgBackupError as exc:
        log("failed", level="error", command=args.command, store=args.store, error=str(exc),
            error_type=type(exc).__name__)  # fmt: skip
        return 1
    except KeyboardInterrupt:
        log("interrupted", level="error", command=args.command, store=args.store)
        return 130
    except Exception as exc:  # a bug: keep the traceback, but still as one JSON line
        log("crashed", level="error", command=args.command, store=args.store, error=repr(exc),
            traceback=traceback.format_exc())  # fmt: skip
        return 1
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
