"""One log line per record, JSON (or text), with the request ID, credentials scrubbed.

Both of the app's logging paths end here: loguru (the app's logger) gets a
single sink, and the standard library's root logger (uvicorn, LangChain,
httpx) a single handler. Scrubbing happens at that one exit, always.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO

REQUEST_ID: ContextVar[str | None] = ContextVar("kga_request_id", default=None)

# Env names whose values are credentials (the contract: GITHUB_TOKEN, every *_API_KEY, passwords).
_SECRET_NAME = re.compile(r"(^GITHUB_TOKEN$|_API_KEY$|_TOKEN$|PASSWORD|SECRET)", re.I)
# userinfo of any URL: scheme://user[:password]@host
_USERINFO = re.compile(r"(?P<scheme>\b[a-z][a-z0-9+.-]*://)[^/\s@'\"]+@", re.I)
_MIN_SECRET = 6  # shorter values ("true", "0") would blank out ordinary words
MASK = "***"


class Scrubber:
    """Replaces credential values and URL userinfo in text."""

    def __init__(self, secrets: Iterable[str]) -> None:
        values = sorted({s for s in secrets if len(s) >= _MIN_SECRET}, key=len, reverse=True)
        self._secrets = re.compile("|".join(re.escape(v) for v in values)) if values else None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Scrubber:
        return cls(value.strip() for name, value in env.items() if _SECRET_NAME.search(name) and value.strip())

    def __call__(self, text: str) -> str:
        if self._secrets is not None:
            text = self._secrets.sub(MASK, text)
        return _USERINFO.sub(rf"\g<scheme>{MASK}@", text)


class LogWriter:
    """Formats and writes one line per record (thread-safe)."""

    def __init__(self, scrub: Scrubber, fmt: str = "json", stream: TextIO | None = None) -> None:
        self.scrub = scrub
        self.fmt = fmt
        self.stream = stream or sys.stdout
        self._lock = threading.Lock()

    def write(self, level: str, logger: str, msg: str, exc: str | None = None, **extra: Any) -> None:
        ts = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        rid = REQUEST_ID.get()
        msg = self.scrub(msg)
        if self.fmt == "json":
            record: dict[str, Any] = {"ts": ts, "level": level, "logger": logger, "msg": msg, "request_id": rid}
            if exc:
                record["exc"] = self.scrub(exc)
            if extra:
                record.update({k: self.scrub(v) if isinstance(v, str) else v for k, v in extra.items()})
            line = json.dumps(record, default=str, ensure_ascii=False)
        else:
            fields = " ".join(f"{k}={v}" for k, v in extra.items())
            line = f"{ts} {level:<8} {logger} [{rid or '-'}] {msg}" + (f" {self.scrub(fields)}" if fields else "")
            if exc:
                line += "\n" + self.scrub(exc)
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()


class _StdlibHandler(logging.Handler):
    def __init__(self, writer: LogWriter) -> None:
        super().__init__()
        self.writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        try:
            exc = self.formatter.formatException(record.exc_info) if record.exc_info and self.formatter else None
            if record.exc_info and exc is None:
                exc = logging.Formatter().formatException(record.exc_info)
            self.writer.write(record.levelname, record.name, record.getMessage(), exc)
        except Exception:
            self.handleError(record)


def _loguru_sink(writer: LogWriter) -> Any:
    def sink(message: Any) -> None:
        rec = message.record
        exc = None
        if rec["exception"] is not None:
            import traceback

            e = rec["exception"]
            exc = "".join(traceback.format_exception(e.type, e.value, e.traceback))
        writer.write(rec["level"].name, rec["name"] or "app", rec["message"], exc)

    return sink


def configure(writer: LogWriter, level: str) -> None:
    """Route the root logger and loguru to ``writer`` (again after the app is imported: it may add sinks)."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(_StdlibHandler(writer))
    root.setLevel(level)
    logging.captureWarnings(True)  # warnings.warn goes to stderr otherwise, as a line outside the format
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "fastapi"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
    try:
        from loguru import logger
    except ImportError:  # the app logs through loguru; a bare stand-in may not
        return
    logger.remove()
    logger.add(_loguru_sink(writer), level=level, format="{message}", backtrace=False, diagnose=False)
