"""Both storage kinds behave the same: atomic put, exists, get, list by prefix."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventvault.settings import StorageSettings
from eventvault.storage import LocalStorage, Storage, open_storage


def _exercise(store: Storage) -> None:
    assert not store.exists("topic=a/x.parquet")
    store.put("topic=a/date=2026-01-01/hour=00/x.parquet", b"\x00\xff")
    store.put("topic=a/date=2026-01-01/hour=00/x.parquet", b"\x01")
    store.put("topic=b/y.parquet", b"y")
    assert store.get("topic=a/date=2026-01-01/hour=00/x.parquet") == b"\x01"
    assert store.exists("topic=b/y.parquet")
    assert list(store.list("topic=a/")) == ["topic=a/date=2026-01-01/hour=00/x.parquet"]
    assert len(list(store.list())) == 2


def test_local_storage(tmp_path: Path) -> None:
    store = open_storage(StorageSettings(url=f"file://{tmp_path}/arch"))
    assert isinstance(store, LocalStorage)
    _exercise(store)
    assert not list((tmp_path / "arch").rglob(".tmp-*"))


@pytest.mark.integration
def test_s3_storage(s3_endpoint: str, s3_bucket: str) -> None:
    _exercise(open_storage(StorageSettings(url=f"s3://{s3_bucket}/some/prefix",
                                           endpoint_url=s3_endpoint, sse="AES256")))
