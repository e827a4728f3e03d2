"""``eventvault show TOPIC``: an event viewer for people, over the DuckDB views of query.py.

Time filters are also given as ``date``/``hour`` bounds, which DuckDB turns into Hive partition
pruning: only the files of the hours asked for are read.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from archiver.layout import EPOCH
from archiver.querysql import quote_ident


@dataclass(frozen=True)
class Selection:
    """Which records to show."""

    topic: str
    start: datetime | None = None
    end: datetime | None = None  # exclusive
    partitions: tuple[int, ...] = ()
    keys: tuple[bytes, ...] = ()
    limit: int = 50


def parse_time(text: str) -> datetime:
    """A time given on the command line: ISO-8601, UTC unless it has an offset."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 time: {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def iso_time(us: int, timespec: str = "auto") -> str:
    """µs since the epoch as ISO-8601 UTC text (beyond Python's years 1-9999: the number)."""
    try:
        return (EPOCH + timedelta(microseconds=us)).isoformat(timespec=timespec)
    except OverflowError:
        return f"{us} µs since the epoch"


def parse_key(text: str) -> bytes:
    """A key given on the command line: UTF-8 text, or ``hex:`` followed by hex digits."""
    return bytes.fromhex(text[4:]) if text.startswith("hex:") else text.encode()


def selection_sql(sel: Selection) -> tuple[str, list[Any]]:
    """The SELECT for a selection, with its parameters."""
    where: list[str] = ["true"]
    params: list[Any] = []
    if sel.start:  # times as ISO text: no Python time zone library needed by DuckDB
        where.append("timestamp >= CAST(? AS TIMESTAMPTZ) AND date >= CAST(? AS DATE)")
        params += [sel.start.isoformat(), sel.start.astimezone(UTC).date().isoformat()]
    if sel.end:
        where.append("timestamp < CAST(? AS TIMESTAMPTZ) AND date <= CAST(? AS DATE)")
        params += [sel.end.isoformat(), sel.end.astimezone(UTC).date().isoformat()]
    if sel.partitions:
        where.append(f"partition IN ({', '.join('?' * len(sel.partitions))})")
        params += list(sel.partitions)
    if sel.keys:
        where.append(f"key IN ({', '.join('?' * len(sel.keys))})")
        params += list(sel.keys)
    sql = (f'SELECT partition, "offset", epoch_us(timestamp), timestamp_type, key, value, '  # noqa: S608
           f"headers "
           f"FROM {quote_ident(sel.topic)} WHERE {' AND '.join(where)} "
           f'ORDER BY timestamp, partition, "offset" LIMIT {int(sel.limit)}')
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



