"""The Parquet format: exact schema, zstd, and byte-exact round trips of any record."""

from __future__ import annotations

import io

import pyarrow.parquet as pq
from hypothesis import given
from hypothesis import strategies as st

from eventvault import format as fmt
from eventvault.times import timestamp_us

headers = st.lists(st.tuples(st.text(max_size=10), st.none() | st.binary(max_size=10)),
                   max_size=5)


@given(st.lists(st.tuples(st.none() | st.binary(max_size=50), st.none() | st.binary(max_size=50),
                          headers, st.integers(-(2**63), 2**63 - 1)), min_size=1, max_size=30))
def test_round_trip(records: list[tuple[bytes | None, bytes | None,
                                        list[tuple[str, bytes | None]], int]]) -> None:
    cols = fmt.Columns(7)
    for i, (key, value, hdrs, ts) in enumerate(records):
        cols.append(100 + i, timestamp_us(ts), "CreateTime", key, value, hdrs)
    data = fmt.encode(fmt.to_table(cols))
    table = fmt.decode(data)
    # Python datetimes stop at years 1..9999; Kafka timestamps do not: compare as int64.
    assert table.column("timestamp").cast("int64").to_pylist() == cols.timestamps_us
    rows = table.drop_columns(["timestamp"]).to_pylist()
    assert [r["key"] for r in rows] == [r[0] for r in records]
    assert [r["value"] for r in rows] == [r[1] for r in records]
    assert [[(h["key"], h["value"]) for h in r["headers"]] for r in rows] == [
        r[2] for r in records]
    assert [r["offset"] for r in rows] == cols.offsets
    meta = pq.ParquetFile(io.BytesIO(data)).metadata
    assert meta.row_group(0).column(5).compression == "ZSTD"
    assert meta.metadata[b"eventvault.format"] == b"1"


def test_schema_is_the_documented_contract() -> None:
    assert str(fmt.SCHEMA) == (
        "partition: int32 not null\n"
        "offset: int64 not null\n"
        "timestamp: timestamp[us, tz=UTC] not null\n"
        "timestamp_type: string not null\n"
        "key: binary\n"
        "value: binary\n"
        "headers: list<element: struct<key: string not null, value: binary> not null> not null\n"
        "  child 0, element: struct<key: string not null, value: binary> not null\n"
        "      child 0, key: string not null\n"
        "      child 1, value: binary")


def test_timestamps_beyond_the_microsecond_range_are_clamped() -> None:
    assert timestamp_us(2**63 - 1) == (2**63 - 1) // 1000 * 1000
    assert timestamp_us(-(2**63)) == -((2**63 - 1) // 1000) * 1000
