"""Both storage kinds behave the same: atomic put, create-if-absent, ranges, versions."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from eventvault.errors import ObjectChanged
from eventvault.settings import StorageSettings
from eventvault.storage import Storage, delete_all_versions, open_storage
from eventvault.storage.local import LocalStorage
from tests.faulty_s3 import FaultyS3

KEY = "topic=a/date=2026-01-01/hour=00/x.parquet"


def _exercise(store: Storage) -> None:
    assert not store.exists("topic=a/x.parquet")
    store.put(KEY, b"\x00\xff")
    store.put(KEY, b"\x01")
    store.put("topic=b/y.parquet", b"y")
    assert store.get(KEY) == b"\x01"
    assert store.exists("topic=b/y.parquet")
    assert list(store.list("topic=a/")) == [KEY]
    assert len(list(store.list())) == 2
    assert [(v.key, v.size) for v in store.stat("topic=")] == [(KEY, 1), ("topic=b/y.parquet", 1)]


def _create_never_replaces(store: Storage) -> None:
    assert store.create("c/new", b"first")
    assert not store.create("c/new", b"second")
    assert store.get("c/new") == b"first"
    etag = next(store.stat("c/new")).etag
    store.replace("c/new", b"third", etag)  # only while it is still what was read
    with pytest.raises(ObjectChanged):
        store.replace("c/new", b"fourth", etag)
    assert store.get("c/new") == b"third"


def _ranges_fetch_only_what_is_read(store: Storage) -> None:
    table = pa.table({"small": list(range(1000)), "big": [os.urandom(1000) for _ in range(1000)]})
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="none")
    store.put("r/file.parquet", sink.getvalue())
    before = store.bytes_read
    read = pq.ParquetFile(store.reader("r/file.parquet")).read(columns=["small"])
    assert read.column("small").to_pylist() == list(range(1000))
    assert 0 < store.bytes_read - before < len(sink.getvalue()) // 4


def test_local_storage(tmp_path: Path) -> None:
    store = open_storage(StorageSettings(url=f"file://{tmp_path}/arch"))
    assert isinstance(store, LocalStorage)
    _exercise(store)
    _create_never_replaces(store)
    _ranges_fetch_only_what_is_read(store)
    assert [v.version_id for v in store.versions(KEY)] == [None]
    assert delete_all_versions(store, KEY) == 1
    assert not store.exists(KEY)
    assert not list((tmp_path / "arch").rglob(".tmp-*"))


@pytest.mark.integration
def test_s3_storage(s3_endpoint: str, s3_bucket: str) -> None:
    store = open_storage(StorageSettings(url=f"s3://{s3_bucket}/some/prefix",
                                         endpoint_url=s3_endpoint, sse="AES256"))
    _exercise(store)
    _create_never_replaces(store)
    _ranges_fetch_only_what_is_read(store)


@pytest.mark.integration
def test_s3_create_knows_its_own_upload_when_etags_are_not_md5(s3_endpoint: str,
                                                               s3_bucket: str) -> None:
    """Under SSE-KMS S3's etag is not the data's MD5: a create that finds its own earlier
    upload (a lost answer, a file rebuilt after a restart) is still told it was written."""
    proxy = FaultyS3(s3_endpoint, rate=0.0).start()
    try:
        proxy.opaque_etags = True
        store = open_storage(StorageSettings(url=f"s3://{s3_bucket}/kms",
                                             endpoint_url=proxy.endpoint_url))
        assert store.create("f", b"the file")
        assert store.create("f", b"the file")
        assert not store.create("f", b"the fil!")
        assert not store.create("f", b"another length")
    finally:
        proxy.stop()


@pytest.mark.integration
def test_s3_versions_and_large_conditional_writes(s3_endpoint: str,
                                                   versioned_bucket: str) -> None:
    store = open_storage(StorageSettings(url=f"s3://{versioned_bucket}/p",
                                         endpoint_url=s3_endpoint))
    first = store.put(KEY, b"one")
    second = store.put(KEY, b"two")
    versions = store.versions(KEY)
    assert [(v.version_id, v.latest) for v in versions] == [(second, True), (first, False)]
    assert store.get(KEY, first) == b"one"
    store.delete_version(KEY, first)
    assert [v.version_id for v in store.versions(KEY)] == [second]
    big = os.urandom(65 << 20)  # a multipart upload, completed with If-None-Match
    assert store.create("big", big)
    assert not store.create("big", big[:-1] + b"x")
    assert store.get("big") == big
    assert delete_all_versions(store, "big") == 1
    assert store.versions("big") == ()


@pytest.mark.integration
def test_s3_listings_follow_every_page(s3_endpoint: str, versioned_bucket: str) -> None:
    """More keys than one LIST page (1000): every page is read, each request on its own."""
    store = open_storage(StorageSettings(url=f"s3://{versioned_bucket}/p",
                                         endpoint_url=s3_endpoint))
    keys = [f"topic=t/k{i:05d}" for i in range(1100)]
    for key in keys:
        store.put(key, b"v")
    store.put(keys[0], b"again")  # a second version of one key
    assert list(store.list("topic=t/")) == keys
    versions = store.all_versions("topic=t/")
    assert sorted(versions) == keys
    assert len(versions[keys[0]]) == 2
    assert store.topics() == ("t",)
