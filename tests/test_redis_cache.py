"""RedisCache: the rendered config and ACL, proven on a real redis-server started on loopback."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from backup_servers import run_cli
from rendered import made_up, run_redis

from kgstack.redis_cache import ACL_RULES, PROBE, SECRET_KEYS, RedisCache, RedisSettings

Manifests = dict[str, dict[str, dict[str, Any]]]
PASSWORDS = {user: made_up("kga-redis", SECRET_KEYS[user]) for user in ACL_RULES}
"""The made-up Secret values tests/rendered.py materializes."""


def redis_pod(manifests: Manifests) -> dict[str, Any]:
    return manifests["prod"]["StatefulSet/kga-prod-redis"]["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def test_config_bounds_memory_and_persists_like_a_cache(environments: dict[str, Any]) -> None:
    settings: RedisSettings = environments["prod"].stores.redis
    config = RedisCache.config(settings)
    assert f"maxmemory {int(2 * 2**30 * 0.75)}" in config  # 75% of the 2Gi limit
    assert "maxmemory-policy allkeys-lru" in config
    assert "appendonly no" in config and "save 900 1" in config
    assert "requirepass" not in config and "aclfile /run/redis/users.acl" in config


def test_no_password_in_manifests_or_argv(manifests: Manifests) -> None:
    pod = redis_pod(manifests)
    for container in pod["initContainers"] + pod["containers"]:
        text = str(container.get("command", [])) + str(container.get("args", []))
        assert not any(pw in text for pw in PASSWORDS.values())
        secret_env = [e["name"] for e in container.get("env", []) if "secretKeyRef" in str(e)]
        # Files where the software reads a file; redis_exporter reads only REDIS_PASSWORD.
        assert secret_env == (["REDIS_PASSWORD"] if container["name"] == "exporter" else [])
    secret = next(v for v in pod["volumes"] if v["name"] == "secret")["secret"]
    assert secret["secretName"] == "kga-redis" and secret["defaultMode"] == 0o400
    run = next(v for v in pod["volumes"] if v["name"] == "run")["emptyDir"]
    assert run["medium"] == "Memory"


def test_exporter_sidecar_and_authenticating_probes(manifests: Manifests) -> None:
    redis_c, exporter = redis_pod(manifests)["containers"]
    assert redis_c["readinessProbe"]["exec"]["command"][-1] == PROBE
    assert "env" not in redis_c
    assert exporter["ports"] == [{"name": "metrics", "containerPort": 9121, "protocol": "TCP"}]
    env = {e["name"]: e.get("value") or e["valueFrom"] for e in exporter["env"]}
    assert env["REDIS_USER"] == "exporter"
    # Issue 9 defect 1: REDIS_PASSWORD_FILE is a JSON map of URI to password, not a password file.
    assert "REDIS_PASSWORD_FILE" not in env
    assert env["REDIS_PASSWORD"] == {"secretKeyRef": {"name": "kga-redis", "key": "exporter-password"}}
    assert [m["mountPath"] for m in exporter["volumeMounts"]] == ["/tmp"]  # no Secret files it does not read
    probe_volume = next(v for v in redis_pod(manifests)["volumes"] if v["name"] == "probe")["secret"]
    assert probe_volume["items"] == [{"key": "exporter-password", "path": "exporter-password"}]
    service = manifests["prod"]["Service/kga-prod-redis"]["spec"]
    assert service["clusterIP"] == "None"
    assert [p["name"] for p in service["ports"]] == ["redis", "metrics"]


def test_agent_gets_redis_url_from_the_secret(manifests: Manifests) -> None:
    env = manifests["prod"]["Deployment/kga-prod-query"]["spec"]["template"]["spec"]["containers"][0]["env"]
    url = next(e for e in env if e["name"] == "REDIS_URL")
    assert url["valueFrom"]["secretKeyRef"] == {"name": "kga-redis", "key": "url"}


@pytest.fixture
def live_redis(tmp_path: Path) -> Iterator[int]:
    """redis-server with dist/dev's redis.conf and the ACL file its init container renders (tests/rendered.py)."""
    with run_redis("dev", tmp_path) as pod:
        assert {user: pod.password(user) for user in ACL_RULES} == PASSWORDS
        yield pod.port


def client(port: int, user: str, password: str | None = None) -> redis.Redis:
    return redis.Redis(port=port, username=user, password=password or PASSWORDS[user], decode_responses=True)


def test_acl_users_on_a_real_server(live_redis: int) -> None:
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=live_redis).ping()  # the default user is off
    app = client(live_redis, "app")
    app.set("k", "v")
    assert app.get("k") == "v"
    dangerous_commands = (
        ["FLUSHALL"],
        ["CONFIG", "GET", "maxmemory"],
        ["KEYS", "*"],
        ["SAVE"],
        ["REPLICAOF", "NO", "ONE"],
    )
    for dangerous in dangerous_commands:
        with pytest.raises(redis.exceptions.NoPermissionError):
            app.execute_command(*dangerous)
    exporter = client(live_redis, "exporter")
    assert int(exporter.info("memory")["maxmemory"]) == int(256 * 2**20 * 0.75)
    with pytest.raises(redis.exceptions.NoPermissionError):
        exporter.set("k", "x")
    # Issue 19 defect 5: neither the app nor the exporter runs Lua.
    lua = (
        ["EVAL", "return 1", "0"],
        ["EVAL_RO", "return 1", "0"],
        ["EVALSHA", "e0e1f9fabfc9d4800c877a703b823ac0578ff8db", "0"],
        ["SCRIPT", "LOAD", "return 1"],
        ["FUNCTION", "LOAD", "#!lua name=kga\nredis.register_function('f', function() return 1 end)"],
        ["FCALL", "f", "0"],
    )
    for user in (app, exporter):
        for command in lua:
            with pytest.raises(redis.exceptions.NoPermissionError):
                user.execute_command(*command)
    with pytest.raises(redis.AuthenticationError):
        client(live_redis, "app", "wrong").ping()


def test_probe_command_authenticates(live_redis: int, tmp_path: Path) -> None:
    def probe(password: str) -> int:
        (tmp_path / "exporter-password").write_text(password)
        command = PROBE.replace("/secrets/", f"{tmp_path}/").replace("redis-cli", f"redis-cli -p {live_redis}")
        return subprocess.run(
            ["sh", "-c", command], env={k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"}
        ).returncode

    assert (probe(PASSWORDS["exporter"]), probe("wrong")) == (0, 1)


def test_backup_user_can_dump_and_restore_with_kgbackup(
    live_redis: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The CronJob's user and flags against the stack's ACL: SYNC, REPLCONF, RESTORE, FLUSHALL."""
    app = client(live_redis, "app")
    app.hset("h", mapping={"a": "1"})
    app.set("s", "v", ex=3600)
    monkeypatch.setenv("REDIS_PASSWORD", PASSWORDS["backup"])
    flags = ["--target", f"file://{tmp_path / 'backups'}", "--redis-url", f"redis://backup@127.0.0.1:{live_redis}/0"]
    code, lines = run_cli("backup", "redis", *flags)
    assert code == 0, lines
    app.delete("h")
    code, lines = run_cli("restore", "redis", "--latest", "--force", *flags)
    assert code == 0, lines
    assert app.hgetall("h") == {"a": "1"} and app.ttl("s") > 0
