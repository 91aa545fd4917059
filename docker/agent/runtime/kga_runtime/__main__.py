"""``python -m kga_runtime [--check]``: load the app, apply the adapters, serve it (docs/agent-runtime.md)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
from typing import Any

from . import adapters
from .config import Config, ConfigError
from .health import State, heartbeat, poll_health, side_server
from .logs import LogWriter, Scrubber, configure
from .metrics import Metrics
from .middleware import RuntimeMiddleware


def _load_app(cfg: Config) -> Any:
    if cfg.app_dir and cfg.app_dir not in sys.path:
        sys.path.insert(0, cfg.app_dir)
    if ":" not in cfg.app:
        raise ConfigError(f"KGA_APP: expected module:attribute, got {cfg.app!r}")
    return adapters.resolve(cfg.app)


def _redis_factory(url: str) -> Any:
    client: list[Any] = []

    def make() -> Any:
        if not client:
            import redis

            client.append(redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2))
        return client[0]

    return make


def run(cfg: Config) -> int:
    scrub = Scrubber.from_env(os.environ)
    log = LogWriter(scrub, cfg.log_format)
    configure(log, cfg.log_level)
    metrics = Metrics()
    state = State()
    ctx = adapters.Context(cfg, metrics, log, _redis_factory(cfg.redis_url))
    # Adapters patch app symbols before the app object is imported, so module-level code sees them too.
    if cfg.app_dir and cfg.app_dir not in sys.path:
        sys.path.insert(0, cfg.app_dir)
    for adapter in adapters.ADAPTERS:
        if adapter.enabled(cfg):
            adapter.apply(ctx)
            log.write("INFO", "kga.runtime", f"adapter {adapter.name} on ({', '.join(adapter.symbols)})")
        else:
            log.write("INFO", "kga.runtime", f"adapter {adapter.name} off ({adapter.switch})")
    if not cfg.redis_url:
        log.write("WARNING", "kga.runtime", "REDIS_URL is not set: LLM and embedding caching are off")
    app = _load_app(cfg)
    configure(log, cfg.log_level)  # the app may have added its own sinks on import

    import uvicorn

    wrapped = RuntimeMiddleware(app, cfg, state, metrics, log)
    server = uvicorn.Server(
        uvicorn.Config(wrapped, host=cfg.host, port=cfg.port, log_config=None, access_log=False, lifespan="on")
    )
    probes = side_server(state, cfg, metrics)
    stop = threading.Event()
    threading.Thread(target=probes.serve_forever, name="kga-probes", daemon=True).start()
    threading.Thread(target=poll_health, args=(state, cfg, stop), name="kga-health-poll", daemon=True).start()
    log.write("INFO", "kga.runtime", f"serving {cfg.app} on {cfg.host}:{cfg.port}, probes on :{cfg.runtime_port}")

    async def main() -> None:
        beat = asyncio.create_task(heartbeat(state, metrics))
        try:
            await server.serve()
        finally:
            beat.cancel()

    try:
        asyncio.run(main())
    finally:
        stop.set()
        probes.shutdown()
    return 0


def check(cfg: Config) -> int:
    if cfg.app_dir and cfg.app_dir not in sys.path:
        sys.path.insert(0, cfg.app_dir)
    missing = adapters.check(cfg.app)
    for line in missing:
        print(f"kga_runtime --check: missing {line}", file=sys.stderr)
    if missing:
        return 1
    count = 1 + sum(len(a.symbols) for a in adapters.ADAPTERS)
    print(f"kga_runtime --check: {count} symbols resolve ({cfg.app} and {len(adapters.ADAPTERS)} adapters)")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kga_runtime", description=__doc__)
    ap.add_argument("--check", action="store_true", help="import every app symbol the adapters rely on, then exit")
    args = ap.parse_args(argv)
    try:
        cfg = Config.from_env()
    except ConfigError as exc:
        print(f"kga_runtime: {exc}", file=sys.stderr)
        return 2
    return check(cfg) if args.check else run(cfg)


if __name__ == "__main__":
    sys.exit(main())
