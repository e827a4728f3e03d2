"""Storage behind one small interface, chosen by URL scheme: a local directory or S3.

The archiver needs only whole-object writes that are atomic (a reader sees the old object,
no object, or the whole new one), existence checks, reads and listings. Local writes go to a
temporary file that is fsynced and renamed; S3 PUTs are atomic by nature. S3 goes through boto3
with an optional endpoint (moto, MinIO), adaptive retries with backoff on throttling and 5xx,
and optional server-side encryption. This is the only module that imports boto3, and the only
one that reads or writes archive objects (the query engine reads Parquet through DuckDB, given
the URLs and credentials this module hands it).
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from eventvault.errors import StorageError
from eventvault.settings import StorageSettings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

T = TypeVar("T")
_RETRIABLE_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout",
                    "RequestTimeTooSkewed", "InternalError", "ServiceUnavailable", "503", "500"}


class Storage(Protocol):
    """What eventvault needs of an object store. Keys are relative, '/'-separated."""

    url: str

    def put(self, key: str, data: bytes) -> None:
        """Write ``data`` at ``key`` atomically, replacing what was there."""

    def exists(self, key: str) -> bool:
        """Whether an object is at ``key``."""

    def get(self, key: str) -> bytes:
        """The bytes of the object at ``key``."""

    def list(self, prefix: str = "") -> Iterator[str]:
        """Keys under ``prefix``, in lexicographic order."""

    def topics(self) -> tuple[str, ...]:
        """Topics with a ``topic=<name>/`` folder at the root, sorted."""


def open_storage(settings: StorageSettings) -> Storage:
    """The storage for ``settings.url``: ``s3://bucket/prefix``, ``file://path`` or a path."""
    if settings.is_s3:
        bucket, prefix = settings.bucket_and_prefix()
        return S3Storage(bucket, prefix, settings)
    return LocalStorage(settings.local_root())


class LocalStorage:
    """A directory on a local file system."""

    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().absolute()
        self.url = f"file://{self.root}"

    def _path(self, key: str) -> Path:
        return self.root / key

    def put(self, key: str, data: bytes) -> None:
        """Write via a temporary file, fsync, rename, and fsync the directory."""
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise StorageError(f"cannot write {path}: {exc}", url=self.url, key=key) from exc

    def exists(self, key: str) -> bool:
        """Whether the file exists."""
        return self._path(key).is_file()

    def get(self, key: str) -> bytes:
        """Read the file."""
        try:
            return self._path(key).read_bytes()
        except OSError as exc:
            raise StorageError(f"cannot read {self._path(key)}: {exc}", url=self.url,
                               key=key) from exc

    def topics(self) -> tuple[str, ...]:
        """Topic folders at the root."""
        if not self.root.is_dir():
            return ()
        return tuple(sorted(p.name[6:] for p in self.root.iterdir()
                            if p.is_dir() and p.name.startswith("topic=")))

    def list(self, prefix: str = "") -> Iterator[str]:
        """Files under the root whose key starts with ``prefix`` (temporary files skipped)."""
        if not self.root.is_dir():
            return iter(())
        keys = (p.relative_to(self.root).as_posix() for p in self.root.rglob("*")
                if p.is_file() and not p.name.startswith(".tmp-"))
        return iter(sorted(k for k in keys if k.startswith(prefix)))


class S3Storage:
    """A bucket and key prefix in S3 (or anything that speaks its API)."""

    def __init__(self, bucket: str, prefix: str, settings: StorageSettings,
                 client: S3Client | None = None) -> None:
        self.bucket = bucket
        self.prefix = f"{prefix}/" if prefix else ""
        self.url = f"s3://{bucket}/{self.prefix}"
        self.settings = settings
        self.client = client or s3_client(settings)
        self._extra: dict[str, str] = {}
        if settings.sse:
            self._extra["ServerSideEncryption"] = settings.sse
        if settings.sse == "aws:kms" and settings.sse_kms_key_id:
            self._extra["SSEKMSKeyId"] = settings.sse_kms_key_id
        self._transfer = TransferConfig(multipart_threshold=64 << 20, multipart_chunksize=32 << 20,
                                        use_threads=False)

    def put(self, key: str, data: bytes) -> None:
        """Upload (multipart above 64 MiB), retrying throttling and 5xx with backoff."""
        full = self.prefix + key
        self._retry(key, lambda: self.client.upload_fileobj(
            io.BytesIO(data), self.bucket, full, ExtraArgs=self._extra or None,
            Config=self._transfer))

    def exists(self, key: str) -> bool:
        """HEAD the object."""
        def head() -> bool:
            try:
                self.client.head_object(Bucket=self.bucket, Key=self.prefix + key)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                    return False
                raise
            return True
        return self._retry(key, head)

    def get(self, key: str) -> bytes:
        """GET the object."""
        def get() -> bytes:
            return self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)["Body"].read()
        return self._retry(key, get)

    def list(self, prefix: str = "") -> Iterator[str]:
        """LIST keys under the prefix, page by page."""
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix + prefix)
        for page in pages:
            for obj in page.get("Contents", []):
                yield obj["Key"][len(self.prefix):]

    def topics(self) -> tuple[str, ...]:
        """Topic folders under the prefix (one delimited LIST, not every object)."""
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix + "topic=", Delimiter="/")
        names = [p["Prefix"][len(self.prefix) + 6:].rstrip("/")
                 for page in pages for p in page.get("CommonPrefixes", [])]
        return tuple(sorted(names))

    def _retry(self, key: str, call: Callable[[], T]) -> T:
        """Botocore retries each call; this outer loop outlasts longer S3 brown-outs."""
        attempts = self.settings.max_attempts
        for attempt in range(1, attempts + 1):
            try:
                return call()
            except (ClientError, BotoCoreError) as exc:
                if attempt == attempts or not _retriable(exc):
                    raise StorageError(f"S3 {self.url}{key}: {exc}", url=self.url, key=key,
                                       retriable=_retriable(exc)) from exc
                time.sleep(min(20.0, 0.2 * 2 ** attempt) * random.uniform(0.5, 1.0))  # noqa: S311
        raise AssertionError("unreachable")


def _retriable(exc: Exception) -> bool:
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return code in _RETRIABLE_CODES or status >= 500 or status == 429
    return True  # connection resets, timeouts, incomplete reads


def s3_client(settings: StorageSettings) -> S3Client:
    """A boto3 S3 client for eventvault's settings (credentials fall back to boto3's chain)."""
    secret = settings.secret_access_key.get_secret_value() if settings.secret_access_key \
        else None
    return boto3.client(
        "s3", endpoint_url=settings.endpoint_url, region_name=settings.region,
        aws_access_key_id=settings.access_key_id, aws_secret_access_key=secret,
        config=Config(retries={"mode": "adaptive", "max_attempts": 5},
                      connect_timeout=10, read_timeout=60,
                      s3={"addressing_style": "path"} if settings.endpoint_url else None),
    )


def s3_credentials(settings: StorageSettings) -> tuple[str | None, str | None]:
    """The access key id and secret that eventvault uses: from settings, else boto3's chain."""
    if settings.access_key_id:
        secret = settings.secret_access_key
        return settings.access_key_id, secret.get_secret_value() if secret else None
    found = boto3.Session().get_credentials()
    if found is None:
        return None, None
    frozen = found.get_frozen_credentials()
    return frozen.access_key, frozen.secret_key
