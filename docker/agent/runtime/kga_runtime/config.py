"""Settings of the runtime layer, read once from the environment (names in docs/agent-runtime.md)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


class ConfigError(ValueError):
    """A setting has a value the runtime layer cannot use; the message names the variable."""


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}: expected an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name}: must be >= {minimum}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}: expected a number, got {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{name}: must be > 0, got {value}")
    return value


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env.get(name, "").strip().lower() or default
    if value not in choices:
        raise ConfigError(f"{name}: expected one of {', '.join(choices)}, got {value!r}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = _choice(env, name, "true" if default else "false", ("true", "false", "1", "0"))
    return value in ("true", "1")


@dataclass(frozen=True, kw_only=True)
class Config:
    """Everything the launcher reads from the environment."""

    app: str = "src.api.main:app"
    app_dir: str = ""
    host: str = "0.0.0.0"
    port: int = 8000
    runtime_port: int = 8001
    log_format: str = "json"
    log_level: str = "INFO"
    request_id_header: str = "x-request-id"
    metrics: bool = True
    liveness_stall_seconds: float = 300.0
    ready_health_max_age_seconds: float = 30.0
    ready_max_loop_lag_seconds: float = 2.0
    max_in_flight: int = 8
    health_poll_seconds: float = 5.0
    chroma_mode: str = "http"
    chroma_host: str = "localhost"
    chroma_port: int = 8000
    redis_url: str = ""
    cache_llm_ttl_seconds: int = 86400
    cache_embeddings_ttl_seconds: int = 604800

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        env = os.environ if env is None else env
        return cls(
            app=env.get("KGA_APP", "").strip() or cls.app,
            app_dir=env.get("KGA_APP_DIR", "").strip(),
            host=env.get("HOST", "").strip() or cls.host,
            port=_int(env, "PORT", cls.port, 1),
            runtime_port=_int(env, "KGA_RUNTIME_PORT", cls.runtime_port, 1),
            log_format=_choice(env, "KGA_LOG_FORMAT", cls.log_format, ("json", "text")),
            log_level=_choice(
                env, "LOG_LEVEL", cls.log_level.lower(), ("debug", "info", "warning", "error", "critical")
            ).upper(),
            request_id_header=(env.get("KGA_REQUEST_ID_HEADER", "").strip() or cls.request_id_header).lower(),
            metrics=_bool(env, "KGA_METRICS", cls.metrics),
            liveness_stall_seconds=_float(env, "KGA_LIVENESS_STALL_SECONDS", cls.liveness_stall_seconds),
            ready_health_max_age_seconds=_float(
                env, "KGA_READY_HEALTH_MAX_AGE_SECONDS", cls.ready_health_max_age_seconds
            ),
            ready_max_loop_lag_seconds=_float(env, "KGA_READY_MAX_LOOP_LAG_SECONDS", cls.ready_max_loop_lag_seconds),
            max_in_flight=_int(env, "KGA_MAX_IN_FLIGHT", cls.max_in_flight, 1),
            health_poll_seconds=_float(env, "KGA_HEALTH_POLL_SECONDS", cls.health_poll_seconds),
            chroma_mode=_choice(env, "KGA_CHROMA_MODE", cls.chroma_mode, ("http", "embedded")),
            chroma_host=env.get("CHROMA_HOST", "").strip() or cls.chroma_host,
            chroma_port=_int(env, "CHROMA_PORT", cls.chroma_port, 1),
            redis_url=env.get("REDIS_URL", "").strip(),
            cache_llm_ttl_seconds=_int(env, "KGA_CACHE_LLM_TTL_SECONDS", cls.cache_llm_ttl_seconds),
            cache_embeddings_ttl_seconds=_int(
                env, "KGA_CACHE_EMBEDDINGS_TTL_SECONDS", cls.cache_embeddings_ttl_seconds
            ),
        )
