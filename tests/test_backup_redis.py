"""Redis backup/restore against real redis-server processes on loopback."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from backup_servers import (
    BACKUP_DIR,
    RedisServer,
    dump_object,
    error_of,
    redis_factory,
    run_cli,
    s3_endpoint,
    s3_target,
)

pytestmark = pytest.mark.backup
__all__ = ["redis_factory", "s3_endpoint", "s3_target"]  # fixtures used by this module

TTL_MS = 3_600_000


def populate(server: RedisServer) -> None:
    """Every core type, some with TTLs, in two databases."""
    r = server.client(0)
    r.set("str:plain", "hello")
    r.set("str:ttl", b"\x00binary\xff", px=TTL_MS)
    r.hset("hash:1", mapping={"a": "1", "b": "two"})
    r.rpush("list:1", "x", "y", "z")
    r.sadd("set:1", "m1", "m2")
    r.zadd("zset:1", {"p": 1.5, "q": -2})
    r.pexpire("zset:1", TTL_MS)
    r.xadd("stream:1", {"f": "v1"}, id="1-1")
    r.xadd("stream:1", {"f": "v2"}, id="2-0")
    r.xgroup_create("stream:1", "workers", id="0")
    for i in range(1200):  # more than one SCAN batch
        r.set(f"bulk:{i}", i)
    r3 = server.client(3)
    r3.set("db3:key", "in db 3", px=TTL_MS)
    r3.hset("db3:hash", "k", "v")


def read_value(r: Any, key: bytes, kind: bytes) -> Any:
    """The full value of one key, whatever its type."""
    if kind == b"string":
        return r.get(key)
    if kind == b"hash":
        return r.hgetall(key)
    if kind == b"list":
        return r.lrange(key, 0, -1)
    if kind == b"set":
        return r.smembers(key)
    if kind == b"zset":
        return r.zrange(key, 0, -1, withscores=True)
    assert kind == b"stream", kind
    return r.xrange(key), [g["name"] for g in r.xinfo_groups(key)]


def snapshot(server: RedisServer) -> dict[tuple[int, bytes], tuple[bytes, Any, bool]]:
    """(db, key) -> (type, value, has_ttl) for every key of dbs 0 and 3."""
    out: dict[tuple[int, bytes], tuple[bytes, Any, bool]] = {}
    for db in (0, 3):
        r = server.client(db)
        for key in r.scan_iter(count=500):
            kind = r.type(key)
            out[(db, key)] = (kind, read_value(r, key, kind), r.pttl(key) > 0)
    return out


def target(tmp_path: Path) -> str:
    return f"file://{tmp_path / 'backups'}"


def backup(server: RedisServer, dest: str, *extra: str) -> list[dict[str, Any]]:
    code, lines = run_cli("backup", "redis", "--target", dest, "--redis-url", server.url, *extra)
    assert code == 0, lines
    return lines


def restore(server: RedisServer, dest: str, *extra: str) -> tuple[int, list[dict[str, Any]]]:
    return run_cli("restore", "redis", "--latest", "--target", dest, "--redis-url", server.url, *extra)


@pytest.fixture(autouse=True)
def _password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_PASSWORD", RedisServer.password)


def test_roundtrip_all_types_file_target(redis_factory: Any, tmp_path: Path) -> None:
    server = redis_factory()
    populate(server)
    before = snapshot(server)
    lines = backup(server, target(tmp_path))
    done = next(line for line in lines if line["event"] == "backup.done")
    assert done["counts"]["dbs"] == {"0": {"keys": 1207, "expires": 2}, "3": {"keys": 2, "expires": 1}}

    server.client().flushall()
    code, lines = restore(server, target(tmp_path))
    assert code == 0, lines
    assert snapshot(server) == before
    assert 0 < server.client(0).pttl("str:ttl") <= TTL_MS


def test_restore_to_other_server_via_s3(redis_factory: Any, s3_target: str, s3_endpoint: str) -> None:
    source, fresh = redis_factory(), redis_factory()
    populate(source)
    backup(source, s3_target, "--s3-endpoint-url", s3_endpoint)
    code, lines = restore(fresh, s3_target, "--s3-endpoint-url", s3_endpoint)
    assert code == 0, lines
    assert snapshot(fresh) == snapshot(source)


def test_refuses_non_empty_target_then_force_is_idempotent(redis_factory: Any, tmp_path: Path) -> None:
    server = redis_factory()
    populate(server)
    before = snapshot(server)
    backup(server, target(tmp_path))
    server.client().set("written:after", "backup")

    code, lines = restore(server, target(tmp_path))
    assert code == 1
    assert "not empty" in error_of(lines) and "--force" in error_of(lines)
    assert server.client().get("written:after") == b"backup"

    for _ in range(2):  # re-running a forced restore gives the same result
        code, lines = restore(server, target(tmp_path), "--force")
        assert code == 0, lines
        assert snapshot(server) == before


def test_checksum_mismatch_leaves_target_untouched(redis_factory: Any, tmp_path: Path) -> None:
    server = redis_factory()
    populate(server)
    backup(server, target(tmp_path))
    obj, _ = dump_object(tmp_path / "backups", "redis")
    data = bytearray(obj.read_bytes())
    data[len(data) // 2] ^= 0xFF
    obj.write_bytes(bytes(data))
    server.client().set("live", "data")

    code, lines = restore(server, target(tmp_path), "--force")
    assert code == 1
    assert "sha256 mismatch" in error_of(lines)
    assert server.client().dbsize() == 1208 and server.client().get("live") == b"data"


def _rewrite(obj: Path, manifest: Path, payload: bytes) -> None:
    """Replace the object and make the manifest agree, as a bad upload would."""
    obj.write_bytes(payload)
    meta = json.loads(manifest.read_text())
    meta.update(sha256=hashlib.sha256(payload).hexdigest(), size_bytes=len(payload))
    manifest.write_text(json.dumps(meta))


@pytest.mark.parametrize("damage", ["truncated_gzip", "truncated_rdb", "not_rdb"])
def test_corrupt_dump_with_matching_manifest_is_rejected(redis_factory: Any, tmp_path: Path, damage: str) -> None:
    server = redis_factory()
    populate(server)
    backup(server, target(tmp_path))
    obj, manifest = dump_object(tmp_path / "backups", "redis")
    rdb = gzip.decompress(obj.read_bytes())
    payload = {
        "truncated_gzip": obj.read_bytes()[: obj.stat().st_size // 2],
        "truncated_rdb": gzip.compress(rdb[: len(rdb) // 2]),
        "not_rdb": gzip.compress(b"hello world, not a snapshot"),
    }[damage]
    _rewrite(obj, manifest, payload)
    server.client().flushall()
    server.client().set("live", "data")

    code, lines = restore(server, target(tmp_path), "--force")
    assert code == 1
    message = error_of(lines)
    assert any(word in message for word in ("decompress", "could not load", "not an RDB")), message
    assert server.client().dbsize() == 1 and server.client().get("live") == b"data"


def test_count_mismatch_is_rejected(redis_factory: Any, tmp_path: Path) -> None:
    server = redis_factory()
    populate(server)
    backup(server, target(tmp_path))
    _, manifest = dump_object(tmp_path / "backups", "redis")
    meta = json.loads(manifest.read_text())
    meta["counts"]["dbs"]["0"]["keys"] += 5
    manifest.write_text(json.dumps(meta))
    server.client().flushall()

    code, lines = run_cli("verify", "redis", "--latest", "--target", target(tmp_path), "--redis-url", server.url)
    assert code == 1
    assert "manifest says 1212" in error_of(lines)
    assert server.client().dbsize() == 0


def test_password_file_and_wrong_password(redis_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = redis_factory()
    server.client().set("k", "v")
    monkeypatch.delenv("REDIS_PASSWORD")
    secret = tmp_path / "pw"
    secret.write_text(RedisServer.password + "\n")
    backup(server, target(tmp_path), "--redis-password-file", str(secret))

    monkeypatch.setenv("REDIS_PASSWORD", "wrong")
    code, lines = run_cli("backup", "redis", "--target", target(tmp_path), "--redis-url", server.url)
    assert code == 1
    assert "cannot reach Redis" in error_of(lines)


def _redis_children() -> list[int]:
    """redis-server processes started by this test process (the private restore servers)."""
    me = str(os.getpid())
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)
        except OSError:
            continue
        if "redis-server" in fields[0] and fields[1].split()[1] == me:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.parametrize("command", ["verify", "restore"])
def test_private_server_is_stopped_after_each_command(redis_factory: Any, tmp_path: Path, command: str) -> None:
    server = redis_factory()
    populate(server)
    backup(server, target(tmp_path))
    server.client().flushall()
    extra = ["--force"] if command == "restore" else []
    code, lines = run_cli(command, "redis", "--latest", "--target", target(tmp_path), "--redis-url", server.url, *extra)
    assert code == 0, lines
    assert not [p for p in _redis_children() if p != server.proc.pid]


def test_restore_as_acl_user_and_refused_restore(redis_factory: Any, tmp_path: Path, monkeypatch: Any) -> None:
    """A named ACL user authenticates the restore stream; a target refusing RESTORE is one clear error."""
    source, fresh = redis_factory(), redis_factory()
    populate(source)
    backup(source, target(tmp_path))
    fresh.client().acl_setuser("restorer", enabled=True, passwords=["+restorer-pw"], keys=["*"],
                               commands=["+@all"])  # fmt: skip
    monkeypatch.setenv("REDIS_PASSWORD", "restorer-pw")
    url = f"redis://restorer@127.0.0.1:{fresh.port}/0"
    code, lines = run_cli("restore", "redis", "--latest", "--target", target(tmp_path), "--redis-url", url)
    assert code == 0, lines
    assert snapshot(fresh) == snapshot(source)

    fresh.client().acl_setuser("restorer", enabled=True, commands=["-restore"])
    code, lines = run_cli("restore", "redis", "--latest", "--force", "--target", target(tmp_path), "--redis-url", url)
    assert code == 1
    assert "target Redis refused RESTORE: -NOPERM" in error_of(lines)


def test_restore_into_unix_socket_target(redis_factory: Any, tmp_path: Path, monkeypatch: Any) -> None:
    """The restore stream uses redis-py's connection, so unix:// (and TLS) targets work too."""
    from kgbackup.redis_store import LocalRedis

    source = redis_factory()
    populate(source)
    backup(source, target(tmp_path))
    monkeypatch.delenv("REDIS_PASSWORD")  # the socket-only server has no password
    empty = tmp_path / "unix-target"
    empty.mkdir()
    with LocalRedis("redis-server", empty / "none.rdb", timeout=30) as sock_server:
        url = f"unix://{sock_server.socket_path}?db=0"
        code, lines = run_cli("restore", "redis", "--latest", "--target", target(tmp_path), "--redis-url", url)
        assert code == 0, lines
        restored = {(db, k) for db in (0, 3) for k in sock_server.client(db).scan_iter(count=500)}
    assert restored == set(snapshot(source))


def test_cli_user_error_is_one_json_line_without_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "kgbackup", "restore", "redis", "--latest", "--target", target(tmp_path)],
        capture_output=True,
        text=True,
        cwd=BACKUP_DIR,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stdout + proc.stderr
    (line,) = [json.loads(x) for x in proc.stdout.splitlines()]
    assert line["level"] == "error" and "no complete redis backup" in line["error"]
