"""Where archive files live: pure functions from (topic, hour, partition, offsets) to keys.

Layout (Hive style, read by DuckDB, Athena, Spark and Trino without configuration)::

    <storage.url>/topic=<topic>/date=<YYYY-MM-DD>/hour=<HH>/<partition>-<first>-<last>.parquet

``date`` and ``hour`` are the record's event time in UTC. Records whose event time is missing,
negative, unparsable or beyond year 9999 go to the Hive default (null) partition
``date=__HIVE_DEFAULT_PARTITION__/hour=__HIVE_DEFAULT_PARTITION__``, which these engines read as
NULL. File names come only from the Kafka partition and the first and last offsets in the file,
zero-padded so that names sort in offset order; the same records always get the same name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from eventvault.eventtime import EventTimeSpec, event_time_us
from eventvault.times import EPOCH, MS_PER_HOUR, US_PER_HOUR

HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
# The last hour whose date has four digits (9999-12-31T23).
MAX_HOUR = int((datetime(9999, 12, 31, 23, tzinfo=UTC) - EPOCH).total_seconds()) // 3600
_FILE_RE = re.compile(r"^(?P<p>\d{5})-(?P<s>\d{20})-(?P<e>\d{20})\.parquet$")
_KEY_RE = re.compile(
    r"^topic=(?P<topic>[A-Za-z0-9._-]+)/date=(?P<date>[0-9-]{10}|" + HIVE_NULL + r")"
    r"/hour=(?P<hour>\d{2}|" + HIVE_NULL + r")/(?P<file>[^/]+)$"
)

_MAX_TS_MS = (MAX_HOUR + 1) * MS_PER_HOUR - 1

Hour = int | None
"""An event-time bucket: whole hours since the Unix epoch (UTC), or None when unknown."""


class Timed(Protocol):
    """A record's timestamp (ms) and value, as event time needs them."""

    @property
    def timestamp(self) -> int: ...  # noqa: D102
    @property
    def value(self) -> bytes | None: ...  # noqa: D102


@dataclass(frozen=True, order=True)
class FileRef:
    """One archive file, identified by where its records came from."""

    topic: str
    hour: Hour
    partition: int
    first_offset: int
    last_offset: int

    @property
    def key(self) -> str:
        """The object key of this file, relative to the storage root."""
        name = file_name(self.partition, self.first_offset, self.last_offset)
        return f"{hour_dir(self.topic, self.hour)}/{name}"


def hour_of(event_us: int | None) -> Hour:
    """The hour bucket of an event time in microseconds since the epoch (UTC)."""
    if event_us is None or event_us < 0:
        return None
    hour = event_us // US_PER_HOUR
    return hour if hour <= MAX_HOUR else None


def hours_of(spec: EventTimeSpec, records: Sequence[Timed]) -> list[Hour]:
    """The hour bucket of each record: its timestamp's, or its JSON event time's."""
    if spec.field is None:
        return [ts // MS_PER_HOUR if 0 <= ts <= _MAX_TS_MS else None
                for ts in (r.timestamp for r in records)]
    return [hour_of(event_time_us(spec, r.timestamp, r.value)) for r in records]


def hour_dir(topic: str, hour: Hour) -> str:
    """``topic=<t>/date=<YYYY-MM-DD>/hour=<HH>`` for a topic and an hour bucket."""
    if hour is None:
        return f"topic={topic}/date={HIVE_NULL}/hour={HIVE_NULL}"
    start = EPOCH + timedelta(hours=hour)
    return f"topic={topic}/date={start:%Y-%m-%d}/hour={start:%H}"


def file_name(partition: int, first_offset: int, last_offset: int) -> str:
    """Deterministic file name for the records of one partition from first to last offset."""
    return f"{partition:05d}-{first_offset:020d}-{last_offset:020d}.parquet"


LEDGER = "_erasure/ledger/"
"""Erasure and retention runs keep their ledger under ``_erasure/ledger/<job>/``."""
REPLAYS = "_replays/"
"""Replays keep their plan, report and offset maps under ``_replays/<id>/`` (docs/REPLAY.md)."""


def replay_key(replay_id: str, name: str) -> str:
    """Storage key of one of a replay's files (plan, report, offset maps)."""
    return f"{REPLAYS}{replay_id}/{name}"


def topic_prefix(topic: str) -> str:
    """The key prefix of every archive file of ``topic``."""
    return f"topic={topic}/"


def file_refs(keys: Iterable[str]) -> list[FileRef]:
    """The archive files among object keys (other objects are skipped)."""
    return [ref for ref in map(parse_file_key, keys) if ref is not None]


def parse_file_key(key: str) -> FileRef | None:
    """Parse an object key written by :func:`FileRef.key`; None for anything else.

    Never raises: an impossible date (``date=2026-02-30``), a Hive null hour beside a real
    date, or any key :meth:`FileRef.key` would not write as such is not an archive file's.
    """
    m = _KEY_RE.match(key)
    if not m:
        return None
    f = _FILE_RE.match(m["file"])
    if not f:
        return None
    if m["date"] == HIVE_NULL:
        hour: Hour = None
    else:
        try:
            start = datetime.strptime(f"{m['date']} {m['hour']}", "%Y-%m-%d %H")
        except ValueError:
            return None
        hour = int((start.replace(tzinfo=UTC) - EPOCH).total_seconds()) // 3600
        if not 0 <= hour <= MAX_HOUR:
            return None
    ref = FileRef(m["topic"], hour, int(f["p"]), int(f["s"]), int(f["e"]))
    return ref if ref.key == key else None
