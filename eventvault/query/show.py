"""``eventvault show TOPIC``: an event viewer for people. Pure: SQL in, lines out.

The records come through the shared selection path (eventvault.query.selection): only the
files that may hold them are read (for a topic placed by record timestamp, only the hours
asked for), then filtered in SQL and ordered by time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from eventvault.query.selection import Selection, record_filter
from eventvault.query.sql import select_sql
from eventvault.times import iso_time


def show_sql(selection: Selection, urls: Sequence[str],
             ranges: Mapping[int, tuple[int, int | None]], limit: int | None,
             record_time: bool) -> tuple[str, list[Any]]:
    """The SELECT of the selected records of files ``urls``, by time (the first ``limit``).

    ``record_time``: the topic's event time is the record timestamp, so ``start``/``end``
    filter in SQL; otherwise the caller filters rows by event time (and applies the limit).
    """
    where, params = record_filter(selection, ranges, time_in_sql=record_time)
    sql = (f'SELECT partition, "offset", epoch_us(timestamp), timestamp_type, key, value, '  # noqa: S608
           f"headers FROM ({select_sql(urls)}) WHERE {where} "
           f'ORDER BY timestamp, partition, "offset"'
           + (f" LIMIT {int(limit)}" if limit is not None else ""))
    return sql, params


def _bytes(data: bytes | None) -> str:
    if data is None:
        return "null"
    try:
        return json.dumps(data.decode())
    except UnicodeDecodeError:
        return "hex:" + data.hex()


def render(row: tuple[Any, ...]) -> Iterator[str]:
    """Lines that show one record: a header line, headers, then the value."""
    partition, offset, ts_us, ts_type, key, value, headers = row
    when = iso_time(ts_us)
    yield (f"── {when}  partition {partition}  offset {offset}  "
           f"({ts_type})  key {_bytes(key)}")
    for h in headers:
        yield f"   {h['key']}: {_bytes(h['value'])}"
    if value is None:
        yield "   (tombstone: null value)"
        return
    try:
        pretty = json.dumps(json.loads(value), indent=2, ensure_ascii=False)
    except (UnicodeDecodeError, ValueError):
        pretty = value.hex(" ", 2)
    yield from ("   " + line for line in pretty.splitlines())



