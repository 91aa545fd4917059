"""The manifest (what a backup contains, and how to check it) and the dump writer."""

from __future__ import annotations

import gzip
import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from kgbackup.errors import CorruptDumpError

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
ID_FORMAT = "%Y%m%dT%H%M%S"
_CHUNK = 1 << 20


def new_backup_id(now: datetime | None = None) -> str:
    """UTC timestamp with milliseconds: sorts lexically in time order, readable in a bucket listing."""
    now = now or datetime.now(UTC)
    return now.strftime(ID_FORMAT) + f".{now.microsecond // 1000:03d}Z"


def parse_backup_id(backup_id: str) -> datetime:
    """Inverse of :func:`new_backup_id`; raises ``ValueError`` for foreign names."""
    stamp, _, rest = backup_id.partition(".")
    if not rest.endswith("Z") or not rest[:-1].isdigit():
        raise ValueError(backup_id)
    parsed = datetime.strptime(stamp, ID_FORMAT).replace(tzinfo=UTC)
    return parsed.replace(microsecond=int(rest[:-1]) * 1000)


@dataclass
class Manifest:
    """Written last, after the dump object: its presence marks a complete backup."""

    store: str
    backup_id: str
    object_name: str
    sha256: str
    size_bytes: int
    uncompressed_bytes: int
    counts: dict[str, Any]
    created_at: str
    tool_version: str
    source: dict[str, Any] = field(default_factory=dict)
    content: dict[str, Any] = field(default_factory=dict)
    """Per collection (Chroma): a digest of every record, checked by ``verify`` and after a restore."""
    held: str | None = None
    """Why this backup is not a restore candidate for ``--latest`` (a sudden drop, an empty store); kept."""
    compression: str = "gzip"
    format_version: int = FORMAT_VERSION
    tool: str = "kgbackup"

    def to_json(self) -> bytes:
        return (json.dumps(asdict(self), indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes, where: str) -> Manifest:
        """Parse and type-check; a manifest we cannot trust is a corrupt backup."""
        try:
            raw = json.loads(data)
            if raw.get("format_version") != FORMAT_VERSION:
                raise CorruptDumpError(f"{where}: unsupported manifest format {raw.get('format_version')!r}")
            manifest = cls(**raw)
        except (ValueError, TypeError) as exc:
            raise CorruptDumpError(f"{where}: manifest is not valid: {exc}") from exc
        _require_types(manifest, where)
        return manifest


def _require_types(m: Manifest, where: str) -> None:
    checks = [
        isinstance(m.sha256, str) and len(m.sha256) == 64,
        isinstance(m.size_bytes, int) and m.size_bytes >= 0,
        isinstance(m.counts, dict),
        isinstance(m.object_name, str) and "/" not in m.object_name,
        isinstance(m.content, dict),
        m.held is None or isinstance(m.held, str),
    ]
    if not all(checks):
        raise CorruptDumpError(f"{where}: manifest has missing or mistyped fields")


class _HashingSink:
    """File-like sink that hashes and counts the compressed bytes as they are written."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("wb")
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self._file.write(data)

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class DumpWriter:
    """Streams uncompressed dump bytes into ``path`` as gzip, hashing on the way."""

    def __init__(self, path: Path, level: int = 3) -> None:
        self.path = path
        self._sink = _HashingSink(path)
        # mtime=0 and no file name: identical input gives an identical object.
        self._gzip = gzip.GzipFile(filename="", mode="wb", fileobj=self._sink, compresslevel=level, mtime=0)
        self.uncompressed_bytes = 0

    def write(self, data: bytes) -> int:
        self.uncompressed_bytes += len(data)
        return self._gzip.write(data)

    def close(self) -> None:
        if not self._gzip.closed:
            self._gzip.close()
            self._sink.close()

    @property
    def sha256(self) -> str:
        return self._sink.sha.hexdigest()

    @property
    def size(self) -> int:
        return self._sink.size

    def __enter__(self) -> DumpWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def verify_object(path: Path, manifest: Manifest) -> None:
    """Check size and sha256 of a downloaded dump against its manifest."""
    size = path.stat().st_size
    if size != manifest.size_bytes:
        raise CorruptDumpError(
            f"backup {manifest.backup_id}: dump is {size} bytes, manifest says {manifest.size_bytes} "
            "(truncated or replaced object)"
        )
    sha = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            sha.update(chunk)
    if sha.hexdigest() != manifest.sha256:
        raise CorruptDumpError(
            f"backup {manifest.backup_id}: sha256 mismatch (object {sha.hexdigest()}, "
            f"manifest {manifest.sha256}); refusing to restore"
        )
