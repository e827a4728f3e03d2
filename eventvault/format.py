"""The archive's Parquet schemas: archive files, and the tables kept beside them.

This module is the contract that query, replay, erasure and compaction read; docs/FORMAT.md
describes it for people. An archive file has one row per Kafka record, sorted by (partition,
offset). Replay's offset maps are Parquet too, and get their schema here as well, so that
every Parquet file eventvault writes is defined in one place.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

FORMAT_VERSION = "1"
TIMESTAMP_TYPES = {0: "CreateTime", 1: "LogAppendTime", -1: "NoTimestampType"}
HEADER_TYPE = pa.struct([pa.field("key", pa.string(), nullable=False),
                         pa.field("value", pa.binary())])
SCHEMA = pa.schema([
    pa.field("partition", pa.int32(), nullable=False),
    pa.field("offset", pa.int64(), nullable=False),
    pa.field("timestamp", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("timestamp_type", pa.string(), nullable=False),
    pa.field("key", pa.binary()),
    pa.field("value", pa.binary()),
    pa.field("headers", pa.list_(pa.field("element", HEADER_TYPE, nullable=False)),
             nullable=False),
])
COLUMNS = tuple(SCHEMA.names)
OFFSET_MAP_SCHEMA = pa.schema([
    ("source_partition", pa.int32()), ("source_offset", pa.int64()),
    ("target_partition", pa.int32()), ("target_offset", pa.int64()),
])
"""A replay's offset map: where each replayed record landed (docs/REPLAY.md)."""
_TIME = pa.timestamp("us", tz="UTC")
LEDGER_SCHEMA = pa.schema([
    ("run_id", pa.string()), ("job", pa.string()), ("at", _TIME), ("dry_run", pa.bool_()),
    ("entry", pa.string()), ("request_id", pa.string()), ("subject_hash", pa.string()),
    ("received", _TIME), ("deadline", _TIME), ("status", pa.string()), ("topic", pa.string()),
    ("object_key", pa.string()), ("version_before", pa.string()),
    ("version_after", pa.string()), ("sha256_before", pa.string()),
    ("sha256_after", pa.string()), ("rows_dropped", pa.int64()), ("rows_redacted", pa.int64()),
    ("noncurrent_versions_deleted", pa.int64()), ("verified", pa.bool_()),
    ("topic_retention_ms", pa.int64()), ("replay_id", pa.string()),
    ("target_topic", pa.string()), ("records", pa.int64()), ("detail", pa.string()),
])
"""The maintenance ledger (docs/ERASURE.md): one row per request, file or recipient of a run.

It holds no subject id: a subject is its keyed hash (``subject_hash``, HMAC-SHA256, hex).
"""
Header = tuple[str, bytes | None]


@dataclass
class Columns:
    """Buffered records of one file, column by column, in offset order."""

    partition: int
    offsets: list[int] = field(default_factory=list)
    timestamps_us: list[int] = field(default_factory=list)
    timestamp_types: list[str] = field(default_factory=list)
    keys: list[bytes | None] = field(default_factory=list)
    values: list[bytes | None] = field(default_factory=list)
    headers: list[Sequence[Header]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.offsets)

    def append(self, offset: int, timestamp_us: int, timestamp_type: str, key: bytes | None,
               value: bytes | None, headers: Sequence[Header]) -> None:
        """Add one record (offsets must increase)."""
        self.offsets.append(offset)
        self.timestamps_us.append(timestamp_us)
        self.timestamp_types.append(timestamp_type)
        self.keys.append(key)
        self.values.append(value)
        self.headers.append(headers)


def to_table(cols: Columns) -> pa.Table:
    """Build the Arrow table of one archive file from buffered columns."""
    n = len(cols)
    return pa.Table.from_arrays(
        [
            pa.repeat(pa.scalar(cols.partition, pa.int32()), n),
            pa.array(cols.offsets, pa.int64()),
            pa.array(cols.timestamps_us, pa.int64()).cast(SCHEMA.field("timestamp").type),
            pa.array(cols.timestamp_types, pa.string()),
            pa.array(cols.keys, pa.binary()),
            pa.array(cols.values, pa.binary()),
            _headers_array(cols.headers),
        ],
        schema=SCHEMA,
    )


def _headers_array(headers: Sequence[Sequence[Header]]) -> pa.Array:
    """list<struct<key, value>> built from flat columns (far cheaper than nested objects)."""
    offsets = [0]
    keys: list[str] = []
    values: list[bytes | None] = []
    for record_headers in headers:
        for key, value in record_headers:
            keys.append(key)
            values.append(value)
        offsets.append(len(keys))
    items = pa.StructArray.from_arrays(
        [pa.array(keys, pa.string()), pa.array(values, pa.binary())],
        fields=list(HEADER_TYPE))
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), items,
                                    type=SCHEMA.field("headers").type)


def encode(table: pa.Table, *, zstd_level: int = 1, metadata: dict[str, str] | None = None,
           row_group_rows: int = 131_072) -> bytes:
    """Encode a table as zstd Parquet bytes, with eventvault's file metadata."""
    meta = {b"eventvault.format": FORMAT_VERSION.encode()}
    meta.update({f"eventvault.{k}".encode(): v.encode() for k, v in (metadata or {}).items()})
    table = table.replace_schema_metadata(meta)
    sink = io.BytesIO()
    pq.write_table(
        table, sink, compression="zstd", compression_level=zstd_level,
        use_dictionary=["timestamp_type", "headers.list.element.key"],
        row_group_size=row_group_rows, data_page_size=1 << 20, write_statistics=True,
    )
    return sink.getvalue()


def file_metadata(data: bytes) -> dict[str, str]:
    """An archive file's own key-value metadata, without the ``eventvault.`` prefix."""
    found = pq.read_metadata(io.BytesIO(data)).metadata or {}
    return {k.decode().removeprefix("eventvault."): v.decode() for k, v in found.items()
            if k.startswith(b"eventvault.") and k != b"eventvault.format"}


def decode(data: bytes) -> pa.Table:
    """Read one archive file's bytes back into a table with the archive schema."""
    table = pq.read_table(io.BytesIO(data))
    return table.select(list(COLUMNS)).cast(SCHEMA)


def encode_rows(schema: pa.Schema, columns: Mapping[str, Sequence[object]]) -> bytes:
    """Zstd Parquet bytes of a small table kept beside the archive (offset maps)."""
    sink = io.BytesIO()
    pq.write_table(pa.table(dict(columns), schema=schema), sink, compression="zstd")
    return sink.getvalue()


def decode_rows(schema: pa.Schema, data: bytes) -> pa.Table:
    """A table written by :func:`encode_rows`, with ``schema``."""
    return pq.read_table(io.BytesIO(data)).cast(schema)
