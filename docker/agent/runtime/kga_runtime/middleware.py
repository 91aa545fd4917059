"""ASGI middleware around the app: request ID, in-flight count, metrics per route, one access line."""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .config import Config
from .health import State
from .logs import REQUEST_ID, LogWriter
from .metrics import Metrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# The poller's own calls are not load: they would keep one request "in flight" forever on a busy pod.
_NOT_LOAD = frozenset({"/health"})
_QUERY_ROUTE = ("POST", "/api/v1/query")
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def route_templates(app: Any) -> list[tuple[re.Pattern[str], str]]:
    """The app's route templates with their regexes, parameter-free ones first.

    Read from the app's OpenAPI paths (full paths, router prefixes included) plus
    its top-level routes; matching on our side keeps the label independent of how
    a FastAPI release nests included routers in the ASGI scope.
    """
    from starlette.routing import compile_path

    paths: list[str] = []
    # A broken schema must not stop the app; its top-level routes still count.
    with contextlib.suppress(Exception):
        paths += list(app.openapi().get("paths", {}))
    paths += [p for p in (getattr(r, "path", None) for r in getattr(app, "routes", [])) if isinstance(p, str)]
    unique = sorted(set(paths), key=lambda p: (p.count("{"), -len(p)))
    return [(compile_path(p)[0], p) for p in unique]


class RuntimeMiddleware:
    def __init__(self, app: ASGIApp, cfg: Config, state: State, metrics: Metrics, log: LogWriter) -> None:
        self.app = app
        self.templates = route_templates(app)
        self.cfg = cfg
        self.state = state
        self.metrics = metrics
        self.log = log
        self.header = cfg.request_id_header.encode("latin-1")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope.get("headers") or []).get(self.header, b"").decode("latin-1")
        rid = incoming if _VALID_ID.match(incoming) else uuid.uuid4().hex
        token = REQUEST_ID.set(rid)
        load = scope.get("path") not in _NOT_LOAD
        start = time.monotonic()
        status = 500
        done = False

        def finish() -> None:
            nonlocal done
            if done:
                return
            done = True
            if load:
                with self.state.lock:
                    self.state.in_flight -= 1
                    self.metrics.in_flight.set(self.state.in_flight)
            path = scope.get("path", "")
            route = next((t for rx, t in self.templates if rx.match(path)), "unmatched")
            method = scope.get("method", "GET")
            elapsed = time.monotonic() - start
            if self.cfg.metrics:
                self.metrics.requests.labels(method, route, str(status)).inc()
                self.metrics.duration.labels(method, route).observe(elapsed)
                if (method, route) == _QUERY_ROUTE:
                    self.metrics.queries.labels("succeeded" if status < 400 else "failed").inc()
            if load:
                self.log.write(
                    "INFO",
                    "kga.access",
                    f"{method} {scope.get('path', '')} {status}",
                    route=route,
                    status=status,
                    duration_seconds=round(elapsed, 4),
                )

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != self.header]
                message["headers"] = [*headers, (self.header, rid.encode("latin-1"))]
            # The last body chunk completes the request: count it before the client can see the
            # response (and read /metrics), and not the background tasks that may follow.
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                finish()
            await send(message)

        if load:
            with self.state.lock:
                self.state.in_flight += 1
                self.metrics.in_flight.set(self.state.in_flight)
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            finish()
            REQUEST_ID.reset(token)
