"""Records produced to a real broker come back from the archive byte for byte."""

from __future__ import annotations

import subprocess
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventvault.layout import HIVE_NULL, hour_of
from eventvault.storage import open_storage
from tests.kafkautil import (
    Rec,
    archive_once,
    create_topic,
    kcat_produce_null_record,
    produce,
    read_archive,
)
from tests.kafkautil import settings as ev_settings

pytestmark = pytest.mark.integration

MAX_TS = 253402300799999  # 9999-12-31T23:59:59.999Z

headers_st = st.lists(st.tuples(st.sampled_from(["a", "b", "trace-id", "x.y_z", ""]),
                                st.none() | st.binary(max_size=20)), max_size=4)
record_st = st.builds(
    Rec,
    partition=st.integers(0, 2),
    key=st.none() | st.binary(max_size=30),
    value=st.binary(max_size=300),
    headers=headers_st.map(tuple),
    timestamp_ms=st.integers(0, MAX_TS),
)


def _check(produced: dict[tuple[int, int], Rec], rows: list[dict[str, object]]) -> None:
    seen = Counter((r["partition"], r["offset"]) for r in rows)
    assert set(seen.values()) == {1}, "a record is archived twice"
    assert set(seen) == set(produced)
    for row in rows:
        rec = produced[(row["partition"], row["offset"])]  # type: ignore[index]
        assert row["key"] == rec.key
        assert row["value"] == rec.value
        assert [(h["key"], h["value"]) for h in row["headers"]] == list(rec.headers)  # type: ignore[attr-defined]
        assert rec.timestamp_ms is not None
        ts = row["timestamp"]
        assert isinstance(ts, datetime)
        assert ts.tzinfo is not None
        assert round(ts.timestamp() * 1000) == rec.timestamp_ms
        assert row["timestamp_type"] == "CreateTime"
        assert row["hour"] == hour_of(rec.timestamp_ms * 1000)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(records=st.lists(record_st, min_size=1, max_size=40))
def test_generated_records_round_trip(kafka_bootstrap: str, tmp_path: Path,
                                      records: list[Rec]) -> None:
    topic = f"rt.{uuid.uuid4().hex[:10]}"
    create_topic(kafka_bootstrap, topic, partitions=3)
    produced = produce(kafka_bootstrap, topic, records)
    url = f"file://{tmp_path}/{topic}"
    s = ev_settings(kafka_bootstrap, url, [topic], f"g-{topic}")
    summary = archive_once(s)
    assert summary.records == len(records)
    _check(produced, read_archive(open_storage(s.storage)))


def _bad_input(kafka_bootstrap: str, topic: str) -> dict[tuple[int, int], Rec]:
    create_topic(kafka_bootstrap, topic, partitions=2)
    records = [
        Rec(0, b"\xff\xfe", b"\x80\x81 not utf-8 \xc3\x28", timestamp_ms=1_700_000_000_000),
        Rec(0, None, b"{not json", timestamp_ms=1_700_000_000_001),
        Rec(1, b"k", None, timestamp_ms=1_700_000_000_002),  # tombstone
        Rec(1, b"big", bytes(range(256)) * 3900, timestamp_ms=1_700_000_003_000),  # ~1 MB
        Rec(0, b"epoch", b"0", timestamp_ms=0),
        Rec(1, b"far", b"9999", timestamp_ms=MAX_TS),
        Rec(0, b"h", b"v", (("dup", b"1"), ("dup", b"2"), ("dup", None), ("", b"")),
            timestamp_ms=1_700_000_000_003),
    ]
    produced = produce(kafka_bootstrap, topic, records)
    kcat_produce_null_record(kafka_bootstrap, topic, partition=1)
    return produced


def test_bad_input_local_directory(kafka_bootstrap: str, tmp_path: Path) -> None:
    topic = f"bad.input-topic_{uuid.uuid4().hex[:6]}"
    produced = _bad_input(kafka_bootstrap, topic)
    s = ev_settings(kafka_bootstrap, f"file://{tmp_path}/arch", [topic], f"g-{topic}")
    assert archive_once(s).records == len(produced) + 1
    rows = read_archive(open_storage(s.storage))
    null_rows = [r for r in rows if r["key"] is None and r["value"] is None]
    assert len(null_rows) == 1
    _check(produced, [r for r in rows if r not in null_rows])
    epoch = next(r for r in rows if r["key"] == b"epoch")
    assert "date=1970-01-01/hour=00/" in str(epoch["file"])
    far = next(r for r in rows if r["key"] == b"far")
    assert "date=9999-12-31/hour=23/" in str(far["file"])
    assert all(f"topic={topic}/" in str(r["file"]) for r in rows)


def test_s3_and_plain_duckdb(kafka_bootstrap: str, s3_endpoint: str, s3_bucket: str,
                             tmp_path: Path) -> None:
    """The same input through the S3 server; then a plain DuckDB read of a local copy."""
    topic = f"s3.topic-{uuid.uuid4().hex[:6]}"
    produced = _bad_input(kafka_bootstrap, topic)
    s = ev_settings(kafka_bootstrap, f"s3://{s3_bucket}/archive", [topic], f"g-{topic}",
                    endpoint=s3_endpoint)
    archive_once(s)
    store = open_storage(s.storage)
    rows = read_archive(store)
    assert len(rows) == len(produced) + 1
    local = tmp_path / "copy"
    for key in store.list():
        (local / key).parent.mkdir(parents=True, exist_ok=True)
        (local / key).write_bytes(store.get(key))
    con = duckdb.connect()
    rel = con.sql(f"select * from read_parquet('{local}/**/*.parquet', hive_partitioning=true)")
    assert rel.columns[:7] == ["partition", "offset", "timestamp", "timestamp_type", "key",
                               "value", "headers"]
    assert sorted(rel.columns[7:]) == ["date", "hour", "topic"]
    assert [str(t) for t in rel.types[:7]] == [
        "INTEGER", "BIGINT", "TIMESTAMP WITH TIME ZONE", "VARCHAR", "BLOB", "BLOB",
        "STRUCT(\"key\" VARCHAR, \"value\" BLOB)[]"]
    got = con.sql(f"select partition, \"offset\", key, value, date, hour, len(headers) from "
                  f"read_parquet('{local}/**/*.parquet', hive_partitioning=true) "
                  f"order by partition, \"offset\"").fetchall()
    assert len(got) == len(produced) + 1
    by_key = {g[2]: g for g in got}
    assert by_key[b"epoch"][4:6] == (datetime(1970, 1, 1, tzinfo=UTC).date(), "00")
    assert by_key[b"h"][6] == 4
    assert by_key[b"big"][3] == bytes(range(256)) * 3900
    assert HIVE_NULL not in {str(g[4]) for g in got}


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_compressed_topics_are_archived(kafka_bootstrap: str, tmp_path: Path, codec: str) -> None:
    """Producers may compress with any codec Kafka supports (kcat, librdkafka, produces them)."""
    topic = f"codec.{codec}-{uuid.uuid4().hex[:6]}"
    create_topic(kafka_bootstrap, topic)
    lines = b"".join(b"k%d\t{\"n\": %d, \"pad\": \"%s\"}\n" % (i, i, b"x" * 200)
                     for i in range(300))
    subprocess.run(["kcat", "-b", kafka_bootstrap, "-P", "-t", topic, "-z", codec, "-K", "\t"],
                   input=lines, check=True, timeout=60)
    s = ev_settings(kafka_bootstrap, f"file://{tmp_path}/a", [topic], f"g-{topic}")
    assert archive_once(s).records == 300
    rows = sorted(read_archive(open_storage(s.storage)), key=lambda r: r["offset"])
    assert [r["key"] for r in rows] == [b"k%d" % i for i in range(300)]
    assert rows[7]["value"] == b"{\"n\": 7, \"pad\": \"%s\"}" % (b"x" * 200)
