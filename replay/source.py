"""Reading a replay's selection from the archive, in source offset order.

Files are chosen and filtered by the core's selection path (eventvault.query.selection) and
read through the query engine (DuckDB), a cluster at a time (see
:func:`~eventvault.query.selection.clusters`): a cluster of one file is already in offset order
and DuckDB keeps the file's order; a cluster of overlapping files is sorted by DuckDB, which
spills to disk beyond its memory limit. Either way rows arrive in Arrow batches of bounded size.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pyarrow as pa

from eventvault.layout import FileRef
from eventvault.query import engine
from eventvault.query.selection import OffsetRanges, Selection, record_filter
from eventvault.query.sql import RECORD_BYTES_SQL, file_urls, select_sql
from eventvault.settings import StorageSettings

COLUMNS = 'partition, "offset", epoch_us(timestamp) AS ts, key, value, headers'
_FAILED = "cannot read the selection: "


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
        self.storage = storage
        self.selection = selection
        self.record_time = record_time
        self.batch_rows = batch_rows
        self.con = engine.connect(storage, topics=(), memory_limit=memory_limit)

    def _from(self, files: Sequence[FileRef], ranges: OffsetRanges) -> tuple[str, list[object]]:
        """``FROM (files) WHERE (selected)``, with its parameters."""
        where, params = record_filter(self.selection, ranges, time_in_sql=self.record_time)
        urls = file_urls(self.storage, [ref.key for ref in files])
        return f"FROM ({select_sql(urls)}) WHERE {where}", params

    def summary(self, files: Sequence[FileRef], ranges: OffsetRanges) -> list[PartitionSummary]:
        """Counts, offsets, time span and bytes per source partition of the selection."""
        if not files:
            return []
        rows, params = self._from(files, ranges)
        sql = (f'SELECT partition, count(*), min("offset"), max("offset"), '  # noqa: S608
               f"min(epoch_us(timestamp)), max(epoch_us(timestamp)), sum(size), max(size), "
               f'arg_max("offset", size) FROM (SELECT *, {RECORD_BYTES_SQL} AS size '
               f"{rows}) GROUP BY partition ORDER BY partition")
        return [PartitionSummary(*row) for row in engine.fetch(self.con, sql, list(params),
                                                                  context=_FAILED)]

    def batches(self, cluster: Sequence[FileRef],
                ranges: OffsetRanges) -> Iterator[pa.RecordBatch]:
        """The selected records of one cluster of files, in offset order."""
        rows, params = self._from(cluster, ranges)
        order = ' ORDER BY "offset"' if len(cluster) > 1 else ""
        sql = f"SELECT {COLUMNS} {rows}{order}"
        yield from engine.record_batches(self.con, sql, list(params), self.batch_rows,
                                         context=_FAILED)

    def interrupt(self) -> None:
        """Stop the query under way (from another thread); its read raises."""
        self.con.interrupt()

    def close(self) -> None:
        """Close the DuckDB connection."""
        self.con.close()
