"""Storage in a local directory: the embedded default for a first run.

Writes go to a temporary file that is fsynced, then renamed over the key (``put``) or linked to
it, which fails if the key exists (``create``); the directory is fsynced after. A key has one
version; its etag is its size and modification time.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from eventvault.errors import ObjectChanged, StorageError
from eventvault.storage.base import ObjectVersion, RangeReader


class LocalStorage:
    """A directory on a local file system."""

    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().absolute()
        self.url = f"file://{self.root}"
        self.bytes_read = 0

    def _path(self, key: str) -> Path:
        return self.root / key

    def _error(self, action: str, key: str, exc: OSError) -> StorageError:
        return StorageError(f"cannot {action} {self._path(key)}: {exc}", url=self.url, key=key)

    def _write(self, key: str, data: bytes, *, replace: bool) -> bool:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                if replace:
                    os.replace(tmp, path)
                else:
                    try:
                        os.link(tmp, path)
                    except FileExistsError:
                        return False
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise self._error("write", key, exc) from exc
        return True

    def put(self, key: str, data: bytes) -> str | None:
        """Write via a temporary file, fsync, rename, and fsync the directory."""
        self._write(key, data, replace=True)
        return None

    def replace(self, key: str, data: bytes, etag: str) -> str | None:
        """Replace the file if its etag (size and modification time) is still ``etag``."""
        path = self._path(key)
        if not path.is_file() or self._version(key, path).etag != etag:
            raise ObjectChanged(f"{path} changed since it was read", url=self.url, key=key)
        self._write(key, data, replace=True)
        return None

    def create(self, key: str, data: bytes) -> bool:
        """Write via a temporary file linked to the key: False if a file is already there."""
        return self._write(key, data, replace=False)

    def exists(self, key: str) -> bool:
        """Whether the file exists."""
        return self._path(key).is_file()

    def get(self, key: str, version_id: str | None = None) -> bytes:
        """Read the file (local files have no other versions)."""
        try:
            data = self._path(key).read_bytes()
        except OSError as exc:
            raise self._error("read", key, exc) from exc
        self.bytes_read += len(data)
        return data

    def reader(self, key: str) -> RangeReader:
        """A reader of the file that reads only the ranges asked for."""
        path = self._path(key)
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise self._error("read", key, exc) from exc

        def fetch(start: int, end: int) -> bytes:
            try:
                with path.open("rb") as f:
                    f.seek(start)
                    return f.read(end - start)
            except OSError as exc:
                raise self._error("read", key, exc) from exc

        return RangeReader(size, fetch, self._count)

    def _count(self, nbytes: int) -> None:
        self.bytes_read += nbytes

    def topics(self) -> tuple[str, ...]:
        """Topic folders at the root."""
        if not self.root.is_dir():
            return ()
        return tuple(sorted(p.name[6:] for p in self.root.iterdir()
                            if p.is_dir() and p.name.startswith("topic=")))

    def _files(self, prefix: str) -> list[tuple[str, Path]]:
        """(key, path) of every file under ``prefix``, in key order (temporary files skipped).

        Only the folder the prefix names is walked.
        """
        base = self.root / prefix.rpartition("/")[0]
        if not base.is_dir():
            return []
        found = [(path.relative_to(self.root).as_posix(), path) for path in base.rglob("*")
                 if not path.name.startswith(".tmp-") and path.is_file()]
        return sorted((key, path) for key, path in found if key.startswith(prefix))

    def list(self, prefix: str = "") -> Iterator[str]:
        """Files under the root whose key starts with ``prefix`` (temporary files skipped)."""
        return (key for key, _ in self._files(prefix))

    def stat(self, prefix: str = "") -> Iterator[ObjectVersion]:
        """Every file under ``prefix`` with its size and etag, in key order."""
        return (self._version(key, path) for key, path in self._files(prefix))

    @staticmethod
    def _version(key: str, path: Path) -> ObjectVersion:
        info = path.stat()
        return ObjectVersion(key, info.st_size, f"{info.st_size:x}-{info.st_mtime_ns:x}")

    def versions(self, key: str) -> tuple[ObjectVersion, ...]:
        """The file, if it exists: a directory keeps one version."""
        path = self._path(key)
        return (self._version(key, path),) if path.is_file() else ()

    def all_versions(self, prefix: str = "") -> dict[str, tuple[ObjectVersion, ...]]:
        """Every file under ``prefix``, one version each."""
        return {version.key: (version,) for version in self.stat(prefix)}

    def delete_version(self, key: str, version_id: str | None) -> None:
        """Delete the file."""
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise self._error("delete", key, exc) from exc
