"""Redis: RDB snapshot over the replication protocol; restore via a throwaway redis-server.

Backup asks the server for a full sync (what ``redis-cli --rdb`` does) and streams
the RDB payload into the dump. The snapshot is then loaded once into a private
redis-server on a unix socket to prove it loads and to count keys per database.

Restore loads the RDB into that private server (the one that check_dump
counted) and copies every key into the target with RESTORE, so the target needs
no file access, no restart and no downtime, and keeps its own configuration
and ACLs. A Lua script in the private server turns each SCAN batch into
``RESTORE key ttl payload REPLACE`` commands already in wire format; this
process forwards those bytes to the target while the script builds the next
batch and the target stores the previous ones. No per-key work happens in
Python and there is no per-key round trip, which MIGRATE would make (it reads
every reply byte by byte, and each wait for the target costs a scheduler
wake-up; measured in bench/README.md).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import redis
from redis.connection import parse_url

from kgbackup.errors import ConfigError, CorruptDumpError, RefusedError, StoreError
from kgbackup.logjson import log
from kgbackup.manifest import DumpWriter, Manifest
from kgbackup.pipeline import DumpInfo, copy_gzip_to

_CHUNK = 1 << 20
_EOF_MARK_LEN = 40
_RDB_MAGIC = b"REDIS"


@dataclass
class RedisConfig:
    url: str
    password: str | None
    server_bin: str = "redis-server"
    # Keys per SCAN batch on restore: bounds the RESTORE stream held in memory at once.
    # 200 restored 100k keys 2-4x faster than 1000 (bench/README.md): replies of a few
    # tens of KiB leave the private server in one write.
    batch: int = 200
    sync_timeout: float = 300.0
    load_timeout: float = 600.0


def client_kwargs(cfg: RedisConfig, db: int) -> dict[str, Any]:
    """redis-py kwargs for one database; the password never travels in argv."""
    try:
        kwargs: dict[str, Any] = parse_url(cfg.url)  # type: ignore[no-untyped-call]
    except ValueError as exc:
        raise ConfigError(f"invalid Redis URL: {exc}") from exc
    if cfg.password is not None:
        kwargs["password"] = cfg.password
    kwargs["db"] = db
    kwargs.setdefault("socket_timeout", 60)
    kwargs.setdefault("socket_connect_timeout", 10)
    return kwargs


def keyspace(client: redis.Redis) -> dict[int, dict[str, int]]:
    """``{db: {"keys": n, "expires": m}}`` from INFO keyspace."""
    info: dict[str, Any] = client.info("keyspace")
    spaces: dict[int, dict[str, int]] = {}
    for name, stats in info.items():
        if name.startswith("db") and isinstance(stats, dict):
            spaces[int(name[2:])] = {"keys": int(stats["keys"]), "expires": int(stats.get("expires", 0))}
    return spaces


def _read_bulk_header(reader: BinaryIO) -> bytes:
    """Skip the master's keep-alive newlines; return the ``$...`` header line."""
    while True:
        line = reader.readline()
        if not line:
            raise StoreError("Redis closed the connection before sending the RDB")
        if line in (b"\n", b"\r\n"):
            continue  # sent every second while the master runs BGSAVE
        if line.startswith(b"-"):
            raise StoreError(f"Redis refused SYNC: {line[1:].decode(errors='replace').strip()}")
        if not line.startswith(b"$"):
            raise StoreError(f"unexpected SYNC reply: {line[:80]!r}")
        return line.rstrip(b"\r\n")


def _stream_sized(reader: BinaryIO, length: int, sinks: list[Any]) -> int:
    remaining = length
    while remaining:
        chunk = reader.read(min(_CHUNK, remaining))
        if not chunk:
            raise StoreError(f"RDB transfer cut short: {length - remaining} of {length} bytes")
        for sink in sinks:
            sink.write(chunk)
        remaining -= len(chunk)
    return length


def _stream_until_mark(reader: Any, mark: bytes, sinks: list[Any]) -> int:
    """Diskless sync: no length up front, the payload ends with a 40-byte random mark."""
    tail = b""
    total = 0
    while True:
        chunk = reader.read1(_CHUNK)
        if not chunk:
            raise StoreError("RDB transfer cut short (no end-of-file mark)")
        buf = tail + chunk
        end = buf.find(mark)
        body = buf[:end] if end >= 0 else buf[:-_EOF_MARK_LEN]
        for sink in sinks:
            sink.write(body)
        total += len(body)
        if end >= 0:
            return total
        tail = buf[-_EOF_MARK_LEN:] if len(buf) >= _EOF_MARK_LEN else buf


def stream_rdb(cfg: RedisConfig, sinks: list[Any]) -> int:
    """Run a full sync on a raw redis-py connection and copy the RDB payload to ``sinks``."""
    pool = redis.ConnectionPool(**client_kwargs(cfg, 0))
    conn: Any = pool.make_connection()
    try:
        conn.connect()
        try:
            # Redis >= 7: send only the snapshot, not the replication stream after it.
            conn.send_command("REPLCONF", "rdb-only", "1")
            conn.read_response()
        except redis.ResponseError:
            pass
        conn.send_command("SYNC")
        sock: socket.socket = conn._sock  # raw socket: the payload is not RESP
        sock.settimeout(cfg.sync_timeout)
        reader = sock.makefile("rb")
        header = _read_bulk_header(reader)
        if header.startswith(b"$EOF:"):
            return _stream_until_mark(reader, header[5:], sinks)
        return _stream_sized(reader, int(header[1:]), sinks)
    except (redis.RedisError, OSError) as exc:
        raise StoreError(f"RDB sync from {pool.connection_kwargs.get('host')} failed: {exc}") from exc
    finally:
        conn.disconnect()


def rdb_version(path: Path) -> int:
    """Format version from the ``REDIS00NN`` header; rejects anything else."""
    with path.open("rb") as fh:
        head = fh.read(9)
    if len(head) != 9 or not head.startswith(_RDB_MAGIC) or not head[5:].isdigit():
        raise CorruptDumpError(f"{path.name} is not an RDB file (header {head!r})")
    return int(head[5:])


_MAX_SOCKET_PATH = 104
"""Bytes a unix socket path may have (sun_path: 108 on Linux, 104 on macOS, with the NUL)."""


class LocalRedis:
    """A private redis-server on a unix socket, loaded from one RDB file."""

    def __init__(self, binary: str, rdb_path: Path, timeout: float) -> None:
        self.binary = binary
        self.rdb_path = rdb_path
        self.timeout = timeout
        self.socket_path = rdb_path.parent / "redis.sock"
        self._socket_dir: Path | None = None
        self.log_path = rdb_path.parent / "redis-local.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def _command(self) -> list[str]:
        if shutil.which(self.binary) is None:
            raise ConfigError(f"redis-server binary {self.binary!r} not found (set --redis-server-bin)")
        return [
            self.binary,
            "--port", "0",  # no TCP listener at all
            "--unixsocket", str(self.socket_path),
            "--unixsocketperm", "700",
            "--dir", str(self.rdb_path.parent),
            "--dbfilename", self.rdb_path.name,
            "--save", "",
            "--appendonly", "no",
            "--databases", "256",
            "--logfile", str(self.log_path),
        ]  # fmt: skip

    def _log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(lines[-3:])

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(unix_socket_path=str(self.socket_path), db=db)

    def __enter__(self) -> LocalRedis:
        if len(str(self.socket_path).encode()) >= _MAX_SOCKET_PATH:
            # A deep work dir: the socket goes to a private folder under $TMPDIR instead.
            self._socket_dir = Path(tempfile.mkdtemp(prefix="kgb-"))
            self.socket_path = self._socket_dir / "redis.sock"
        self.proc = subprocess.Popen(self._command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._stop()
                raise CorruptDumpError(f"redis-server could not load {self.rdb_path.name}: {self._log_tail()}")
            try:
                self.client().ping()  # raises BusyLoadingError until the RDB is loaded
                return self
            except (redis.ConnectionError, redis.BusyLoadingError):
                time.sleep(0.05)
        self._stop()
        raise StoreError(f"redis-server did not load {self.rdb_path.name} within {self.timeout}s")

    def _stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # no save points: exits without writing
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop()


# SCAN one batch, then DUMP + PTTL each key into a RESTORE command in RESP. A key
# that expired meanwhile is skipped: RESTORE with ttl 0 would make it persistent.
# The pieces go into one table and are joined once (no intermediate strings).
_RESTORE_STREAM_LUA = """
local scan = redis.call('SCAN', ARGV[1], 'COUNT', ARGV[2])
local out, i, n = {}, 0, 0
for _, key in ipairs(scan[2]) do
  local payload = redis.call('DUMP', key)
  local ttl = redis.call('PTTL', key)
  if payload and ttl ~= -2 and ttl ~= 0 then
    ttl = tostring(math.max(ttl, 0))
    n = n + 1
    out[i + 1] = '*5\\r\\n$7\\r\\nRESTORE\\r\\n$'
    out[i + 2] = #key
    out[i + 3] = '\\r\\n'
    out[i + 4] = key
    out[i + 5] = '\\r\\n$'
    out[i + 6] = #ttl
    out[i + 7] = '\\r\\n'
    out[i + 8] = ttl
    out[i + 9] = '\\r\\n$'
    out[i + 10] = #payload
    out[i + 11] = '\\r\\n'
    out[i + 12] = payload
    out[i + 13] = '\\r\\n$7\\r\\nREPLACE\\r\\n'
    i = i + 13
  end
end
return {scan[1], n, table.concat(out)}
"""


# Batches sent to the target whose replies are not read yet.
_TARGET_DEPTH = 2


class _ReplyReader:
    """Counts the target's one-line replies to RESTORE; the first error line is raised."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def expect(self, n: int) -> None:
        """Consume the next ``n`` replies; later ones stay buffered for the next call."""
        while n:
            while b"\r\n" not in self.buffer:
                chunk = self.sock.recv(1 << 16)
                if not chunk:
                    raise StoreError("target Redis closed the connection during restore")
                self.buffer += chunk
            *complete, rest = self.buffer.split(b"\r\n", n)  # at most n complete lines
            for line in complete:
                if not line.startswith(b"+"):
                    raise StoreError(
                        f"target Redis refused RESTORE: {line.decode(errors='replace')} (safe to re-run with --force)"
                    )
            self.buffer = rest
            n -= len(complete)


def _major_minor(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".")[:2])


class RedisStore:
    kind = "redis"
    # A forked snapshot is consistent by itself: no retries.
    dump_attempts = 1
    retry_seconds = 0.0
    extension = "rdb"

    def __init__(self, cfg: RedisConfig) -> None:
        self.cfg = cfg
        # The private server check_dump loaded and counted; restore copies from it
        # instead of loading the same RDB a second time.
        self._checked: tuple[Path, LocalRedis] | None = None

    def close(self) -> None:
        if self._checked is not None:
            self._checked[1].__exit__(None, None, None)
            self._checked = None

    def _client(self, db: int) -> redis.Redis:
        # Through a pool: parse_url's unix:// keys (path, connection_class) are pool arguments.
        return redis.Redis(connection_pool=redis.ConnectionPool(**client_kwargs(self.cfg, db)))

    def _count_snapshot(self, rdb_path: Path) -> tuple[dict[int, dict[str, int]], str]:
        with LocalRedis(self.cfg.server_bin, rdb_path, self.cfg.load_timeout) as local:
            server: dict[str, Any] = local.client().info("server")
            return keyspace(local.client()), str(server["redis_version"])

    def dump(self, out: DumpWriter, work_dir: Path) -> DumpInfo:
        try:
            source_version = str(self._client(0).info("server")["redis_version"])
        except redis.RedisError as exc:
            raise StoreError(f"cannot reach Redis: {exc}") from exc
        rdb_dir = work_dir / "redis-backup"
        rdb_dir.mkdir(exist_ok=True)
        raw = rdb_dir / "dump.rdb"
        with raw.open("wb") as raw_file:
            size = stream_rdb(self.cfg, [out, raw_file])
        version = rdb_version(raw)
        # Loading the snapshot proves it is usable and gives exact per-db counts.
        spaces, local_version = self._count_snapshot(raw)
        shutil.rmtree(rdb_dir)
        counts = {
            "keys": sum(s["keys"] for s in spaces.values()),
            "dbs": {str(db): s for db, s in sorted(spaces.items())},
        }
        log("redis.snapshot", bytes=size, rdb_version=version, counts=counts)
        source = {"redis_version": source_version, "rdb_version": version, "verified_with": local_version}
        return DumpInfo(counts=counts, source=source)

    def _unpack(self, gz_path: Path, work_dir: Path) -> Path:
        rdb_dir = work_dir / "redis-restore"
        rdb_dir.mkdir(exist_ok=True)
        raw = rdb_dir / "dump.rdb"
        with raw.open("wb") as fh:
            copy_gzip_to(gz_path, fh)
        rdb_version(raw)
        return raw

    def _check_counts(self, spaces: dict[int, dict[str, int]], manifest: Manifest) -> None:
        """Only keys with a TTL may have vanished since the backup: anything else is corruption."""
        expected: dict[str, dict[str, int]] = manifest.counts.get("dbs", {})
        for db in set(expected) | {str(d) for d in spaces}:
            want = expected.get(db, {"keys": 0, "expires": 0})
            have = spaces.get(int(db), {"keys": 0})["keys"]
            if not want["keys"] - want["expires"] <= have <= want["keys"]:
                raise CorruptDumpError(
                    f"backup {manifest.backup_id}: db{db} has {have} keys, manifest says "
                    f"{want['keys']} ({want['expires']} with TTL)"
                )

    def check_dump(self, gz_path: Path, manifest: Manifest, work_dir: Path) -> None:
        self.close()
        raw = self._unpack(gz_path, work_dir)
        local = LocalRedis(self.cfg.server_bin, raw, self.cfg.load_timeout).__enter__()
        self._checked = (raw, local)
        self._check_counts(keyspace(local.client()), manifest)

    def _loaded(self, gz_path: Path, manifest: Manifest, work_dir: Path) -> LocalRedis:
        """The checked private server for this dump, loading (and checking) it if needed."""
        if self._checked is None or self._checked[0] != work_dir / "redis-restore" / "dump.rdb":
            self.check_dump(gz_path, manifest, work_dir)
        assert self._checked is not None
        return self._checked[1]

    def _prepare_target(self, force: bool, local_version: str) -> None:
        try:
            target_version = str(self._client(0).info("server")["redis_version"])
            existing = keyspace(self._client(0))
        except redis.RedisError as exc:
            raise StoreError(f"cannot reach target Redis: {exc}") from exc
        if _major_minor(local_version) > _major_minor(target_version):
            # RESTORE rejects DUMP payloads written by a newer RDB format.
            raise StoreError(
                f"local redis-server {local_version} is newer than target Redis {target_version}: "
                "use a kgbackup image whose redis-server matches the target"
            )
        non_empty = {db: s["keys"] for db, s in existing.items() if s["keys"]}
        if non_empty and not force:
            raise RefusedError(
                f"target Redis is not empty (keys per db: {non_empty}); re-run with --force to replace it"
            )
        for db, keys in non_empty.items():
            # ASYNC: the old keys are freed by a server thread, not before our first RESTORE.
            self._client(db).flushdb(asynchronous=True)
            log("redis.flushdb", db=db, keys=keys)

    def _restore_db(self, local: LocalRedis, db: int) -> int:
        """Forward the private server's RESTORE stream for ``db``.

        Three things run at once: the script builds batch i+1, this process sends
        batch i, and the target stores batch i-1. At most ``_TARGET_DEPTH`` batches
        wait at the target; this process holds one.
        """
        script = local.client(db).script_load(_RESTORE_STREAM_LUA)
        src: Any = local.client(db).connection_pool.make_connection()
        # redis-py's own connection: AUTH (user or password), TLS, unix socket and SELECT as configured.
        dst: Any = redis.ConnectionPool(**client_kwargs(self.cfg, db)).make_connection()
        try:
            src.connect()
            dst.connect()
            replies = _ReplyReader(dst._sock)
            in_flight: deque[int] = deque()
            restored = 0
            src.send_command("EVALSHA", script, 0, 0, self.cfg.batch)
            while True:
                cursor, count, stream = src.read_response()
                if int(cursor):
                    src.send_command("EVALSHA", script, 0, cursor, self.cfg.batch)
                while len(in_flight) >= _TARGET_DEPTH:
                    replies.expect(in_flight.popleft())
                if count:
                    dst._sock.sendall(stream)
                    in_flight.append(int(count))
                    restored += int(count)
                if not int(cursor):
                    for n in in_flight:
                        replies.expect(n)
                    return restored
        except OSError as exc:
            raise StoreError(f"restore into target Redis failed (safe to re-run with --force): {exc}") from exc
        finally:
            src.disconnect()
            dst.disconnect()

    def restore(self, gz_path: Path, manifest: Manifest, force: bool, work_dir: Path) -> dict[str, Any]:
        try:
            local = self._loaded(gz_path, manifest, work_dir)
            spaces = keyspace(local.client())
            self._check_counts(spaces, manifest)
            self._prepare_target(force, str(local.client().info("server")["redis_version"]))
            restored: dict[str, int] = {}
            try:
                for db in sorted(spaces):
                    restored[str(db)] = self._restore_db(local, db)
                    log("redis.db_restored", db=db, keys=restored[str(db)])
            except redis.RedisError as exc:
                raise StoreError(f"restore into target Redis failed (safe to re-run with --force): {exc}") from exc
            self._verify_target(spaces)
        finally:
            self.close()
        shutil.rmtree(work_dir / "redis-restore", ignore_errors=True)
        return {"keys": sum(restored.values()), "dbs": restored}

    def _verify_target(self, spaces: dict[int, dict[str, int]]) -> None:
        target = keyspace(self._client(0))
        for db, want in spaces.items():
            have = target.get(db, {"keys": 0})["keys"]
            if not want["keys"] - want["expires"] <= have <= want["keys"]:
                raise StoreError(f"after restore db{db} has {have} keys, expected {want['keys']}")
