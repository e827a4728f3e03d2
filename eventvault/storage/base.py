"""The storage interface: what eventvault needs of an object store, and its values.

See :mod:`eventvault.storage` for the two kinds and their guarantees.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class ObjectVersion:
    """One stored version of an object.

    ``version_id`` is None where the storage keeps no versions (a local directory, an S3
    bucket without versioning); ``etag`` changes whenever the content may have.
    """

    key: str
    size: int
    etag: str
    version_id: str | None = None
    latest: bool = True
    delete_marker: bool = False


class RangeReader(io.RawIOBase):
    """A seekable, read-only file over an object, fetching byte ranges as they are read.

    pyarrow reads a Parquet file's footer and then only the column chunks it needs, so a
    reader of a few columns fetches only those (``fetch(start, end)``: bytes ``[start, end)``).
    """

    def __init__(self, size: int, fetch: Callable[[int, int], bytes],
                 count: Callable[[int], None]) -> None:
        super().__init__()
        self.size = size
        self._fetch = fetch
        self._count = count
        self._position = 0

    def readable(self) -> bool:
        """Always."""
        return True

    def seekable(self) -> bool:
        """Always."""
        return True

    def tell(self) -> int:
        """The position."""
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Move the position (as ``io`` does)."""
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self.size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        """Fetch the next bytes into ``buffer``."""
        end = min(self.size, self._position + len(buffer))
        if end <= self._position:
            return 0
        data = self._fetch(self._position, end)
        buffer[:len(data)] = data
        self._position += len(data)
        self._count(len(data))
        return len(data)


class Storage(Protocol):
    """What eventvault needs of an object store. Keys are relative, '/'-separated."""

    url: str
    bytes_read: int
    """Bytes of object data read so far (what benchmarks report)."""

    def put(self, key: str, data: bytes) -> str | None:
        """Write ``data`` at ``key`` atomically, replacing what was there; the version id."""

    def replace(self, key: str, data: bytes, etag: str) -> str | None:
        """Write ``data`` at ``key`` only if the object there still has ``etag``; its version id.

        Raises :class:`~eventvault.errors.ObjectChanged` if the object changed meanwhile.
        """

    def create(self, key: str, data: bytes) -> bool:
        """Write ``data`` at ``key`` only if no object is there; False if one is (kept)."""

    def exists(self, key: str) -> bool:
        """Whether an object is at ``key``."""

    def get(self, key: str, version_id: str | None = None) -> bytes:
        """The bytes of the object at ``key`` (of one version of it, if given)."""

    def reader(self, key: str) -> RangeReader:
        """A seekable reader of the current object at ``key`` that fetches only what is read."""

    def list(self, prefix: str = "") -> Iterator[str]:
        """Keys under ``prefix``, in lexicographic order."""

    def stat(self, prefix: str = "") -> Iterator[ObjectVersion]:
        """The current version of every object under ``prefix``, in key order."""

    def versions(self, key: str) -> tuple[ObjectVersion, ...]:
        """Every version of ``key`` (delete markers too), newest first."""

    def all_versions(self, prefix: str = "") -> dict[str, tuple[ObjectVersion, ...]]:
        """Every version of every key under ``prefix``, in one listing: key -> versions."""

    def delete_version(self, key: str, version_id: str | None) -> None:
        """Delete one version of ``key`` for good (None: the object, where there are none)."""

    def topics(self) -> tuple[str, ...]:
        """Topics with a ``topic=<name>/`` folder at the root, sorted."""
