"""Liveness and readiness that do not need a free event loop, served by a thread.

The app's handlers are ``async def`` but run blocking work on the loop, so a
probe served by the app waits behind a query. Here a heartbeat task in the
loop stamps the time; the side server (its own thread) reads the stamp:
liveness fails only when the loop has not beaten for the stall limit (wedged,
not busy); readiness fails when the pod is saturated, late, or the app's own
``/health`` has not passed recently.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .config import Config
from .metrics import Metrics

_BEAT = 0.5


class State:
    """What the probes read; written by the loop, the middleware and the poller."""

    def __init__(self) -> None:
        now = time.monotonic()
        self.started = now
        self.last_beat = now
        self.measured_lag = 0.0
        self.in_flight = 0
        self.last_health_ok: float | None = None
        self.last_health_error = "not checked yet"
        self.lock = threading.Lock()

    def lag(self) -> float:
        """Loop lag now: the last measured one, or how late the next beat already is."""
        return max(self.measured_lag, time.monotonic() - self.last_beat - _BEAT, 0.0)

    def stalled_for(self) -> float:
        return time.monotonic() - self.last_beat


async def heartbeat(state: State, metrics: Metrics) -> None:
    """Runs in the app's loop for the life of the process."""
    while True:
        before = time.monotonic()
        await asyncio.sleep(_BEAT)
        now = time.monotonic()
        state.measured_lag = max(now - before - _BEAT, 0.0)
        state.last_beat = now
        metrics.loop_lag.set(state.measured_lag)


def liveness(state: State, cfg: Config) -> tuple[bool, dict[str, Any]]:
    stalled = state.stalled_for()
    ok = stalled < cfg.liveness_stall_seconds
    return ok, {"status": "alive" if ok else "stalled", "loop_stalled_seconds": round(stalled, 3)}


def readiness(state: State, cfg: Config) -> tuple[bool, dict[str, Any]]:
    reasons = []
    now = time.monotonic()
    if state.last_health_ok is None or now - state.last_health_ok > cfg.ready_health_max_age_seconds:
        reasons.append(
            f"app /health not passed within {cfg.ready_health_max_age_seconds:g}s: {state.last_health_error}"
        )
    if state.in_flight >= cfg.max_in_flight:
        reasons.append(f"{state.in_flight} requests in flight (limit {cfg.max_in_flight})")
    lag = state.lag()
    if lag >= cfg.ready_max_loop_lag_seconds:
        reasons.append(f"event loop {lag:.1f}s late (limit {cfg.ready_max_loop_lag_seconds:g}s)")
    body = {"status": "ready" if not reasons else "not ready", "in_flight": state.in_flight, "loop_lag_seconds": lag}
    if reasons:
        body["reason"] = "; ".join(reasons)
    return not reasons, body


def poll_health(state: State, cfg: Config, stop: threading.Event) -> None:
    """Calls the app's own /health over loopback every poll interval (in this thread)."""
    url = f"http://127.0.0.1:{cfg.port}/health"
    while not stop.wait(cfg.health_poll_seconds if state.last_health_ok else 0.5):
        try:
            with urllib.request.urlopen(url, timeout=cfg.ready_health_max_age_seconds) as resp:
                ok = resp.status == 200
            if ok:
                state.last_health_ok = time.monotonic()
        except Exception as exc:
            state.last_health_error = f"{type(exc).__name__}: {exc}"


def side_server(state: State, cfg: Config, metrics: Metrics) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/livez":
                self._json(*liveness(state, cfg))
            elif path == "/readyz":
                self._json(*readiness(state, cfg))
            elif path == "/metrics" and cfg.metrics:
                self._send(200, metrics.render(), "text/plain; version=0.0.4; charset=utf-8")
            else:
                self._send(404, b"not found\n", "text/plain")

        def _json(self, ok: bool, body: dict[str, Any]) -> None:
            self._send(200 if ok else 503, json.dumps(body).encode(), "application/json")

        def _send(self, status: int, data: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = _SideServer((cfg.host, cfg.runtime_port), Handler)
    server.daemon_threads = True
    return server


class _SideServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """socketserver prints a traceback to stderr, outside the JSON log. A prober that gave up before the
        answer (a kubelet timeout) resets its connection: not our error. Anything else goes to the log."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        logging.getLogger("kga.runtime").exception("probe request from %s failed", client_address[0])
