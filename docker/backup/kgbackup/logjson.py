"""One-line JSON logs on stdout, so the cluster's log pipeline can parse every line."""

import json
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

_stream: TextIO | None = None


def set_stream(stream: TextIO | None) -> None:
    """Redirect logs (tests); ``None`` means the current ``sys.stdout``."""
    global _stream
    _stream = stream


def log(event: str, level: str = "info", **fields: Any) -> None:
    """Write one JSON object per line; unknown types fall back to ``str``."""
    record: dict[str, Any] = {
        "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "level": level,
        "event": event,
    }
    record.update(fields)
    out = _stream if _stream is not None else sys.stdout
    out.write(json.dumps(record, default=str, sort_keys=False) + "\n")
    out.flush()
