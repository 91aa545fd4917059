"""Backup targets: S3-compatible object storage, or a local directory (``file://``).

Both move whole files between a local spool path and the target, so a dump is
never held in memory: boto3 streams multipart uploads/downloads from disk.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from kgbackup.errors import ConfigError, NotFoundError, StoreError


class Storage(Protocol):
    """What the backup pipeline needs from a target; keys are ``/``-separated."""

    description: str

    def put_file(self, key: str, path: Path) -> None: ...

    def get_file(self, key: str, path: Path) -> None: ...

    def put_bytes(self, key: str, data: bytes) -> None: ...

    def get_bytes(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...

    def list_dirs(self, prefix: str) -> list[str]: ...

    def delete_prefix(self, prefix: str) -> int: ...


class FileStorage:
    """A directory tree; for tests, development, or a mounted volume."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.description = f"file://{root}"

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        # Keys come from manifests and flags: never let one escape the root.
        if self.root.resolve() not in path.parents and path != self.root.resolve():
            raise ConfigError(f"key escapes the target directory: {key!r}")
        return path

    def put_file(self, key: str, path: Path) -> None:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".part")
        shutil.copyfile(path, tmp)
        os.replace(tmp, dest)  # atomic: a reader never sees half a file

    def get_file(self, key: str, path: Path) -> None:
        src = self._path(key)
        if not src.is_file():
            raise NotFoundError(f"{self.description}/{key} does not exist")
        shutil.copyfile(src, path)

    def put_bytes(self, key: str, data: bytes) -> None:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".part")
        tmp.write_bytes(data)
        os.replace(tmp, dest)

    def get_bytes(self, key: str) -> bytes:
        src = self._path(key)
        if not src.is_file():
            raise NotFoundError(f"{self.description}/{key} does not exist")
        return src.read_bytes()

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list_dirs(self, prefix: str) -> list[str]:
        base = self._path(prefix)
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if p.is_dir())

    def delete_prefix(self, prefix: str) -> int:
        base = self._path(prefix)
        if not base.exists():
            return 0
        count = sum(1 for p in base.rglob("*") if p.is_file())
        shutil.rmtree(base)
        return count


class S3Storage:
    """A bucket and key prefix on any S3-compatible endpoint.

    Credentials come from boto3's standard chain (env vars, web identity
    token for workload identity, instance profile): never from flags.
    """

    def __init__(self, bucket: str, prefix: str, endpoint_url: str | None) -> None:
        import boto3  # deferred: the file:// target must work without boto3 loaded
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.description = f"s3://{bucket}/{self.prefix}".rstrip("/")
        config = Config(retries={"max_attempts": 5, "mode": "standard"})
        self.client: Any = boto3.client("s3", endpoint_url=endpoint_url, config=config)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, what: str, key: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run one boto3 call, mapping its errors to ours (``key`` is for messages)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(*args, **kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("404", "NoSuchKey", "NotFound"):
                raise NotFoundError(f"{self.description}/{key} does not exist") from exc
            raise StoreError(f"S3 {what} failed on {self.description}: {exc}") from exc
        except BotoCoreError as exc:
            raise StoreError(f"S3 {what} failed on {self.description}: {exc}") from exc

    def put_file(self, key: str, path: Path) -> None:
        self._call("upload", key, self.client.upload_file, str(path), self.bucket, self._key(key))

    def get_file(self, key: str, path: Path) -> None:
        self._call("download", key, self.client.download_file, self.bucket, self._key(key), str(path))

    def put_bytes(self, key: str, data: bytes) -> None:
        self._call("put", key, self.client.put_object, Bucket=self.bucket, Key=self._key(key), Body=data)

    def get_bytes(self, key: str) -> bytes:
        resp = self._call("get", key, self.client.get_object, Bucket=self.bucket, Key=self._key(key))
        body: bytes = resp["Body"].read()
        return body

    def exists(self, key: str) -> bool:
        try:
            self._call("head", key, self.client.head_object, Bucket=self.bucket, Key=self._key(key))
        except NotFoundError:
            return False
        return True

    def list_dirs(self, prefix: str) -> list[str]:
        full = self._key(prefix).rstrip("/") + "/"
        paginator = self.client.get_paginator("list_objects_v2")
        names: list[str] = []
        # Pages are fetched lazily: materialise them inside _call so errors are mapped.
        pages = self._call(
            "list", prefix, lambda: list(paginator.paginate(Bucket=self.bucket, Prefix=full, Delimiter="/"))
        )
        for page in pages:
            for entry in page.get("CommonPrefixes", []):
                names.append(entry["Prefix"][len(full) :].rstrip("/"))
        return sorted(names)

    def delete_prefix(self, prefix: str) -> int:
        full = self._key(prefix).rstrip("/") + "/"
        paginator = self.client.get_paginator("list_objects_v2")
        deleted = 0
        pages = self._call("list", prefix, lambda: list(paginator.paginate(Bucket=self.bucket, Prefix=full)))
        for page in pages:
            objects = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if objects:
                self._call(
                    "delete", prefix, self.client.delete_objects, Bucket=self.bucket, Delete={"Objects": objects}
                )
                deleted += len(objects)
        return deleted


def open_storage(target: str, endpoint_url: str | None) -> Storage:
    """Build a target from ``s3://bucket/prefix`` or ``file:///path``."""
    parsed = urlparse(target)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ConfigError(f"file:// target must be an absolute path, got {target!r}")
        return FileStorage(Path(parsed.path))
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ConfigError(f"s3:// target needs a bucket: {target!r}")
        return S3Storage(parsed.netloc, parsed.path, endpoint_url or None)
    raise ConfigError(f"unsupported target {target!r}: use s3://bucket/prefix or file:///path")
