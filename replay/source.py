"""Reading a replay's selection from the archive with DuckDB, in source offset order.

The only replay module that touches duckdb. Files are read a cluster at a time (see
:func:`replay.plan.clusters`): a cluster of one file is already in offset order and DuckDB
keeps the file's order; a cluster of overlapping files is sorted by DuckDB, which spills to
disk beyond its memory limit. Either way rows arrive in Arrow batches of bounded size.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa

from archiver.layout import FileRef
from archiver.query import QueryError, connect
from archiver.querysql import root_url, select_sql
from archiver.settings import StorageSettings
from replay.plan import RECORD_BYTES_SQL, Selection, record_filter

COLUMNS = 'partition, "offset", epoch_us(timestamp) AS ts, key, value, headers'


@dataclass(frozen=True)
class PartitionSummary:
    """What a selection holds in one source partition."""

    partition: int
    records: int
    first_offset: int
    last_offset: int
    first_us: int
    last_us: int
    bytes: int
    largest: int
    largest_offset: int


class Source:
    """The archive files of one topic, read through one DuckDB connection."""

    def __init__(self, storage: StorageSettings, selection: Selection, record_time: bool,
                 memory_limit: str = "512MB", batch_rows: int = 8192) -> None:
        self.root = root_url(storage)
        self.selection = selection
        self.record_time = record_time
        self.batch_rows = batch_rows
        self.con = connect(storage, topics=())
        self.con.execute(f"SET memory_limit = '{memory_limit}'")
        self.con.execute("SET preserve_insertion_order = true")

    def _urls(self, files: Sequence[FileRef]) -> list[str]:
        return [f"{self.root}/{ref.key}" for ref in files]

    def _query(self, sql: str, params: list[Any]) -> duckdb.DuckDBPyConnection:
        try:
            return self.con.execute(sql, params)
        except duckdb.Error as exc:
            raise QueryError(f"cannot read the selection: {str(exc).splitlines()[0]}") from exc

    def summary(self, files: Sequence[FileRef],
                ranges: Mapping[int, tuple[int, int | None]]) -> list[PartitionSummary]:
        """Counts, offsets, time span and bytes per source partition of the selection."""
        if not files:
            return []
        where, params = record_filter(self.selection, ranges, self.record_time)
        sql = (f'SELECT partition, count(*), min("offset"), max("offset"), '  # noqa: S608
               f"min(epoch_us(timestamp)), max(epoch_us(timestamp)), sum(size), max(size), "
               f'arg_max("offset", size) FROM (SELECT *, {RECORD_BYTES_SQL} AS size '
               f"FROM ({select_sql(self._urls(files))}) WHERE {where}) "
               f"GROUP BY partition ORDER BY partition")
        rows = self._query(sql, params).fetchall()
        return [PartitionSummary(*row) for row in rows]

    def batches(self, cluster: Sequence[FileRef],
                ranges: Mapping[int, tuple[int, int | None]]) -> Iterator[pa.RecordBatch]:
        """The selected records of one cluster of files, in offset order."""
        where, params = record_filter(self.selection, ranges, self.record_time)
        order = ' ORDER BY "offset"' if len(cluster) > 1 else ""
        sql = (f"SELECT {COLUMNS} FROM ({select_sql(self._urls(cluster))}) "  # noqa: S608
               f"WHERE {where}{order}")
        reader = self._query(sql, params).fetch_record_batch(self.batch_rows)
        yield from reader

    def close(self) -> None:
        """Close the DuckDB connection."""
        self.con.close()
