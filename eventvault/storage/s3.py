"""Storage in S3 (or anything that speaks its API: moto, MinIO).

With :mod:`eventvault.storage.s3_client`, the only modules that import boto3.
Objects below 64 MiB are one PUT; larger ones are multipart uploads in 32 MiB parts, completed
in one request, so either way a reader sees the old object or the whole new one. ``create``
sends ``If-None-Match: *`` (S3's conditional write), so it never replaces an object. botocore
sends each request once; this module's own loop retries with backoff through brown-outs
(SlowDown, 5xx, dropped connections), logs every retry with its cause at WARNING, and gives up
at once when told to stop (:meth:`S3Storage.abandon_retries`). :meth:`S3Storage.check_access`
finds an unreachable endpoint, missing credentials or a missing bucket before any work starts.
Optional server-side encryption (AES256 or KMS).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import random
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
)

from eventvault import observe
from eventvault.errors import AccessDenied, ObjectChanged, StorageError
from eventvault.settings import StorageSettings
from eventvault.storage.base import ObjectVersion, RangeReader
from eventvault.storage.s3_client import cause_of, error_code, is_retriable, s3_client

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

T = TypeVar("T")
_BROKEN_CODES = {"NoSuchBucket", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                 "InvalidToken", "ExpiredToken", "AuthorizationHeaderMalformed",
                 "PermanentRedirect", "InvalidBucketName"}
"""What the access check takes as a broken setup (AccessDenied is not: see check_access)."""
_ACCESS_CHECK_KEY = "_eventvault/access-check"
_DENIED = {"403", "AccessDenied", "Forbidden"}
_NEXT_PAGE = {"list_objects_v2": {"NextContinuationToken": "ContinuationToken"},
              "list_object_versions": {"NextKeyMarker": "KeyMarker",
                                       "NextVersionIdMarker": "VersionIdMarker"}}
_MULTIPART_THRESHOLD = 64 << 20
_PART_SIZE = 32 << 20


class _Exists(Exception):
    """A conditional write found an object at the key (a signal inside this module)."""


class S3Storage:
    """A bucket and key prefix in S3 (or anything that speaks its API)."""

    def __init__(self, bucket: str, prefix: str, settings: StorageSettings,
                 client: S3Client | None = None) -> None:
        self.bucket = bucket
        self.prefix = f"{prefix}/" if prefix else ""
        self.url = f"s3://{bucket}/{self.prefix}"
        self.settings = settings
        self.client = client or s3_client(settings)
        self.bytes_read = 0
        self.retries = 0  # requests this module's loop retried (botocore retries none)
        self._abandoned = threading.Event()
        self._reached = False  # whether any request got an answer: an endpoint never reached
        self._extra: dict[str, Any] = {}
        if settings.sse:
            self._extra["ServerSideEncryption"] = settings.sse
        if settings.sse == "aws:kms" and settings.sse_kms_key_id:
            self._extra["SSEKMSKeyId"] = settings.sse_kms_key_id

    # -- writing ---------------------------------------------------------------------------
    def put(self, key: str, data: bytes) -> str | None:
        """Upload ``data`` (multipart above 64 MiB), replacing the object; its version id."""
        return self._retry(key, lambda: self._upload(self.prefix + key, data, {}))

    def replace(self, key: str, data: bytes, etag: str) -> str | None:
        """Upload ``data`` over the object if it still has ``etag`` (``If-Match``)."""
        try:
            return self._retry(key, lambda: self._upload(self.prefix + key, data,
                                                         {"IfMatch": etag}))
        except _Exists:
            raise ObjectChanged(f"S3 {self.url}{key} changed since it was read", url=self.url,
                                key=key) from None

    def create(self, key: str, data: bytes) -> bool:
        """Upload ``data`` only if no object is at ``key`` (``If-None-Match: *``).

        When the condition fails, the object there may be this very upload, written by an
        attempt whose answer was lost (or the same file written again after a restart): then
        this is True. Its etag tells, except where S3's etag is not the MD5 of the data (SSE-KMS,
        SSE-C): then the object is read back and compared. A role that may write but not read
        (HEAD answers 403) gets False: an object is there, and it is kept.
        """
        try:
            self._retry(key, lambda: self._upload(self.prefix + key, data,
                                                  {"IfNoneMatch": "*"}))
        except _Exists:
            try:
                head = self._head(key)
            except AccessDenied:
                return False  # a role that may write but not read: an object is there, kept
            if head is None:
                return False
            if head["ETag"].strip('"') == _etag(data):
                return True
            return head.get("ContentLength") == len(data) and self.get(key) == data
        return True

    def _upload(self, full: str, data: bytes, condition: dict[str, Any]) -> str | None:
        try:
            if len(data) < _MULTIPART_THRESHOLD:
                answer = self.client.put_object(Bucket=self.bucket, Key=full, Body=data,
                                                **self._extra, **condition)
                return answer.get("VersionId")
            return self._multipart(full, data, condition)
        except ClientError as exc:
            if error_code(exc) == "PreconditionFailed":
                raise _Exists(full) from exc
            raise

    def _multipart(self, full: str, data: bytes, condition: dict[str, Any]) -> str | None:
        upload = self.client.create_multipart_upload(Bucket=self.bucket, Key=full,
                                                     **self._extra)["UploadId"]
        try:
            parts = []
            for number, start in enumerate(range(0, len(data), _PART_SIZE), 1):
                part = self.client.upload_part(Bucket=self.bucket, Key=full, UploadId=upload,
                                               PartNumber=number,
                                               Body=data[start:start + _PART_SIZE])
                parts.append({"ETag": part["ETag"], "PartNumber": number})
            done = self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=full, UploadId=upload,
                MultipartUpload={"Parts": parts}, **condition)  # type: ignore[typeddict-item]
        except BaseException:
            # An upload left unfinished (the abort failed too) expires by lifecycle rule.
            with contextlib.suppress(ClientError, BotoCoreError):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=full,
                                                   UploadId=upload)
            raise
        return done.get("VersionId")

    # -- reading ---------------------------------------------------------------------------
    def exists(self, key: str) -> bool:
        """HEAD the object.

        Raises :class:`~eventvault.errors.AccessDenied` on 403, which is also S3's answer for
        a missing key to a role without ``s3:ListBucket``: a caller about to create the object
        may go on (the conditional create settles it; a real denial fails there).
        """
        return self._head(key) is not None

    def _head(self, key: str) -> Any:
        """HEAD the object: its answer, None if there is none, AccessDenied on 403."""
        def head() -> Any:
            try:
                return self.client.head_object(Bucket=self.bucket, Key=self.prefix + key)
            except ClientError as exc:
                if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                    return None
                if error_code(exc) in _DENIED:
                    raise AccessDenied(
                        f"S3 {self.url}{key}: access denied (403) to HEAD: no s3:GetObject, "
                        "or no such key and no s3:ListBucket", url=self.url, key=key) from exc
                raise
        return self._retry(key, head)

    def get(self, key: str, version_id: str | None = None) -> bytes:
        """GET the object (one version of it, if given)."""
        version = {"VersionId": version_id} if version_id else {}

        def get() -> bytes:
            answer = self.client.get_object(Bucket=self.bucket, Key=self.prefix + key,
                                            **version)  # type: ignore[arg-type]
            return answer["Body"].read()
        data = self._retry(key, get)
        self.bytes_read += len(data)
        return data

    def reader(self, key: str) -> RangeReader:
        """Ranged GETs of the current version (pinned: a rewrite meanwhile fails the read)."""
        full = self.prefix + key
        head = self._retry(key, lambda: self.client.head_object(Bucket=self.bucket, Key=full))
        etag = head["ETag"]

        def fetch(start: int, end: int) -> bytes:
            def ranged() -> bytes:
                return self.client.get_object(Bucket=self.bucket, Key=full, IfMatch=etag,
                                              Range=f"bytes={start}-{end - 1}")["Body"].read()
            return self._retry(key, ranged)

        def count(nbytes: int) -> None:
            self.bytes_read += nbytes

        return RangeReader(head["ContentLength"], fetch, count)

    def list(self, prefix: str = "") -> Iterator[str]:
        """LIST keys under the prefix, page by page."""
        return (version.key for version in self.stat(prefix))

    def _pages(self, operation: str, **arguments: Any) -> Iterator[dict[str, Any]]:
        """The pages of a LIST call, each retried as other calls are (a StorageError at last).

        Page by page, from the continuation marker of the page before: a brown-out in the
        middle of a long listing resumes where it stopped.
        """
        call = getattr(self.client, operation)
        where = arguments.get("Prefix", "")[len(self.prefix):]
        while True:
            asked = dict(arguments)

            def one_page(asked: dict[str, Any] = asked) -> dict[str, Any]:
                return dict(call(Bucket=self.bucket, **asked))
            page = self._retry(where, one_page)
            yield page
            if not page.get("IsTruncated"):
                return
            arguments.update({argument: page[marker] for marker, argument
                              in _NEXT_PAGE[operation].items() if page.get(marker)})

    def stat(self, prefix: str = "") -> Iterator[ObjectVersion]:
        """LIST the current objects under the prefix, with sizes and etags."""
        for page in self._pages("list_objects_v2", Prefix=self.prefix + prefix):
            for obj in page.get("Contents", []):
                yield ObjectVersion(obj["Key"][len(self.prefix):], obj["Size"], obj["ETag"])

    def all_versions(self, prefix: str = "") -> dict[str, tuple[ObjectVersion, ...]]:
        """Every version and delete marker of every key under the prefix, newest first.

        One LIST of object versions for the whole prefix, not one per key.
        """
        found: dict[str, list[ObjectVersion]] = {}
        for page in self._pages("list_object_versions", Prefix=self.prefix + prefix):
            for entry in page.get("Versions", []):
                key = entry["Key"][len(self.prefix):]
                found.setdefault(key, []).append(ObjectVersion(
                    key, entry["Size"], entry["ETag"], entry.get("VersionId"), entry["IsLatest"]))
            for marker in page.get("DeleteMarkers", []):
                key = marker["Key"][len(self.prefix):]
                found.setdefault(key, []).append(ObjectVersion(
                    key, 0, "", marker.get("VersionId"), marker["IsLatest"], delete_marker=True))
        return {key: tuple(sorted(versions, key=lambda v: not v.latest))
                for key, versions in sorted(found.items())}

    def versions(self, key: str) -> tuple[ObjectVersion, ...]:
        """Every version and delete marker of ``key``, newest first."""
        return self.all_versions(key).get(key, ())

    def delete_version(self, key: str, version_id: str | None) -> None:
        """DELETE one version (None or ``"null"``: the object of an unversioned bucket)."""
        version = {"VersionId": version_id} if version_id else {}
        self._retry(key, lambda: self.client.delete_object(
            Bucket=self.bucket, Key=self.prefix + key, **version))  # type: ignore[arg-type]

    def topics(self) -> tuple[str, ...]:
        """Topic folders under the prefix (one delimited LIST, not every object)."""
        pages = self._pages("list_objects_v2", Prefix=self.prefix + "topic=", Delimiter="/")
        names = [p["Prefix"][len(self.prefix) + 6:].rstrip("/")
                 for page in pages for p in page.get("CommonPrefixes", [])]
        return tuple(sorted(names))

    # -- access and retries ----------------------------------------------------------------
    def check_access(self) -> None:
        """One GET of a key that is not there: raise if S3 is clearly unusable.

        GET, not HEAD, because a HEAD answer has no body to tell NoSuchBucket from NoSuchKey
        or a bad key from a missing one. The answers that pass: NoSuchKey, or the object, or
        AccessDenied (a role without ``s3:ListBucket`` gets 403 for a missing key; the writes
        it needs may still be allowed). Unreachable endpoint, no credentials, a missing bucket,
        an unknown key id or a wrong secret raise StorageError (exit 3) at once; a brown-out
        (503, a dropped connection) is retried, with its WARNING lines, as any request is.
        """
        try:
            self._retry("", lambda: self.client.get_object(
                Bucket=self.bucket, Key=self.prefix + _ACCESS_CHECK_KEY))
        except StorageError as error:
            cause = error.__cause__
            if isinstance(cause, ClientError) and not is_retriable(cause) and \
                    error_code(cause) not in _BROKEN_CODES:
                return  # S3 answered: NoSuchKey, AccessDenied
            reason = cause_of(cause) if isinstance(cause, Exception) else str(error)
            raise StorageError(f"S3 {self.url} is not usable: {reason}", url=self.url,
                               key="", retriable=False) from cause

    def abandon_retries(self) -> None:
        """Make every retry loop, running or to come, give up at its next wait (stopping)."""
        self._abandoned.set()

    def _retry(self, key: str, call: Callable[[], T]) -> T:
        """Send ``call`` until it succeeds, backing off between attempts; a StorageError if not.

        Each retry is a WARNING log line with its cause; errors that cannot pass by waiting
        (a refused request, no credentials) and :meth:`abandon_retries` end it at once.
        """
        attempts = self.settings.max_attempts
        for attempt in range(1, attempts + 1):
            try:
                answer = call()
            except (ClientError, BotoCoreError) as exc:
                self._reached = self._reached or isinstance(exc, ClientError)
                # An endpoint never reached is a wrong setting, not a brown-out: fail at once.
                retriable = is_retriable(exc) and (
                    self._reached or not isinstance(exc, EndpointConnectionError))
                if attempt == attempts or not retriable or self._abandoned.is_set():
                    why = " (stopping: retries abandoned)" if self._abandoned.is_set() else ""
                    raise StorageError(f"S3 {self.url}{key}: {cause_of(exc)}{why}", url=self.url,
                                       key=key, retriable=retriable) from exc
                delay = min(20.0, 0.2 * 2 ** attempt) * random.uniform(0.5, 1.0)  # noqa: S311
                self.retries += 1
                observe.event("S3 request failed, retrying", logging.WARNING, url=self.url,
                              key=key, attempt=attempt, attempts=attempts,
                              retry_in_seconds=round(delay, 2), cause=cause_of(exc))
                if self._abandoned.wait(delay):
                    raise StorageError(f"S3 {self.url}{key}: {cause_of(exc)} (stopping: retries "
                                       "abandoned)", url=self.url, key=key,
                                       retriable=True) from exc
            else:
                self._reached = True
                return answer
        raise AssertionError("unreachable")


def _etag(data: bytes) -> str:
    """The etag S3 gives ``data`` uploaded as eventvault uploads it (without SSE-KMS)."""
    if len(data) < _MULTIPART_THRESHOLD:
        return hashlib.md5(data, usedforsecurity=False).hexdigest()
    parts = [hashlib.md5(data[i:i + _PART_SIZE], usedforsecurity=False).digest()
             for i in range(0, len(data), _PART_SIZE)]
    return f"{hashlib.md5(b''.join(parts), usedforsecurity=False).hexdigest()}-{len(parts)}"
