"""Storage behind one small interface, chosen by URL scheme: a local directory or S3.

Whole-object writes are atomic (a reader sees the old object, no object, or the whole new
one). :meth:`Storage.create` writes only where no object is: the archiver writes every file
that way, so it never replaces a file that erasure rewrote (docs/ERASURE.md). Versions are
S3's object versions on a versioned bucket; a local directory has one version per key.
Local storage is :mod:`eventvault.storage.local`; S3, the only boto3 user, is
:mod:`eventvault.storage.s3`.
"""

from __future__ import annotations

from eventvault.settings import StorageSettings
from eventvault.storage.base import ObjectVersion, RangeReader, Storage
from eventvault.storage.local import LocalStorage
from eventvault.storage.s3 import S3Storage

__all__ = ["LocalStorage", "ObjectVersion", "RangeReader", "S3Storage", "Storage",
           "abandon_retries", "check_access", "delete_all_versions", "open_storage"]


def open_storage(settings: StorageSettings) -> Storage:
    """The storage for ``settings.url``: ``s3://bucket/prefix``, ``file://path`` or a path."""
    if settings.is_s3:
        bucket, prefix = settings.bucket_and_prefix()
        return S3Storage(bucket, prefix, settings)
    return LocalStorage(settings.local_root())


def delete_all_versions(storage: Storage, key: str) -> int:
    """Delete every version of ``key`` (and its delete markers); how many were deleted."""
    found = storage.versions(key)
    for version in found:
        storage.delete_version(key, version.version_id)
    return len(found)



def check_access(storage: Storage) -> None:
    """Raise StorageError at once if the storage is clearly unusable (S3: one cheap GET).

    A local directory is created on the first write, so there is nothing to check ahead.
    """
    if isinstance(storage, S3Storage):
        storage.check_access()


def abandon_retries(storage: Storage) -> None:
    """Make the storage's retry loops give up at their next wait (a stopping process)."""
    if isinstance(storage, S3Storage):
        storage.abandon_retries()
