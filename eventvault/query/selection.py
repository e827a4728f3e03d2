"""Which archived records a selection asks for: one path, shared by ``show`` and ``replay``.

Pure functions over a frozen :class:`Selection` (topic, event-time range, partitions, offset
bounds, keys, a DuckDB predicate). Three decisions follow from it, in this order:

1. **files**: :func:`select_files` keeps the archive files that may hold selected records,
   by partition and offset range and, for a topic placed by its record timestamp, by hour;
   :func:`clusters` groups them so that they are read in offset order;
2. **rows**: :func:`record_filter` is the SQL ``WHERE`` over those files' rows;
3. **event time**: for a topic whose event time is a JSON field, SQL cannot compute it, so
   :func:`event_time_within` checks each row as the archiver computed it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eventvault.eventtime import EventTimeSpec, event_time_us
from eventvault.layout import FileRef, Hour
from eventvault.times import US_PER_HOUR

OffsetRanges = Mapping[int, tuple[int, int | None]]
"""[first, end) offsets by partition (end None: unbounded)."""


@dataclass(frozen=True)
class Selection:
    """Which archived records of one topic to read.

    Times are µs since the epoch, ``end_us`` exclusive. Offset bounds apply to every selected
    partition (``None`` as partition) or to one; ``to`` is exclusive. ``where`` is a DuckDB
    predicate over the archive's columns (those of the query views).
    """

    topic: str
    start_us: int | None = None
    end_us: int | None = None
    partitions: tuple[int, ...] = ()
    from_offsets: tuple[tuple[int | None, int], ...] = ()
    to_offsets: tuple[tuple[int | None, int], ...] = ()
    keys: tuple[bytes, ...] = ()
    where: str | None = None

    def offset_range(self, partition: int) -> tuple[int, int | None]:
        """[first, end) offsets selected in ``partition`` (end None: unbounded)."""
        lo = max((o for p, o in self.from_offsets if p in (None, partition)), default=0)
        his = [o for p, o in self.to_offsets if p in (None, partition)]
        return lo, min(his) if his else None

    @property
    def timed(self) -> bool:
        """Whether the selection bounds event time."""
        return self.start_us is not None or self.end_us is not None


def _hour_wanted(hour: Hour, selection: Selection, record_time: bool) -> bool:
    if hour is None or not record_time:
        return True  # the null partition, or hours of another clock: filtered per record
    start, end = hour * US_PER_HOUR, (hour + 1) * US_PER_HOUR
    return ((selection.start_us is None or end > selection.start_us)
            and (selection.end_us is None or start < selection.end_us))


def select_files(refs: Iterable[FileRef], selection: Selection,
                 record_time: bool) -> dict[int, list[FileRef]]:
    """The files that may hold selected records, by source partition, in offset order.

    ``record_time``: the topic's files are placed by record timestamp, so ``start``/``end``
    rule out whole hours.
    """
    out: dict[int, list[FileRef]] = {}
    for ref in refs:
        if ref.topic != selection.topic or (selection.partitions
                                            and ref.partition not in selection.partitions):
            continue
        lo, hi = selection.offset_range(ref.partition)
        if ref.last_offset < lo or (hi is not None and ref.first_offset >= hi):
            continue
        if _hour_wanted(ref.hour, selection, record_time):
            out.setdefault(ref.partition, []).append(ref)
    for files in out.values():
        files.sort(key=lambda r: (r.first_offset, r.last_offset))
    return dict(sorted(out.items()))


def clusters(files: Sequence[FileRef]) -> list[list[FileRef]]:
    """Groups of one partition's files whose offset ranges overlap (late records make them).

    Files of different groups never interleave, so groups are read one after the other and
    only a group of several files needs sorting by offset.
    """
    groups: list[list[FileRef]] = []
    end = -1
    for ref in sorted(files, key=lambda r: r.first_offset):
        if groups and ref.first_offset <= end:
            groups[-1].append(ref)
            end = max(end, ref.last_offset)
        else:
            groups.append([ref])
            end = ref.last_offset
    return groups


def offset_ranges(selection: Selection, partitions: Iterable[int]) -> dict[int, tuple[int,
                                                                                      int | None]]:
    """The selected [first, end) offsets of each of ``partitions``."""
    return {p: selection.offset_range(p) for p in partitions}


def record_filter(selection: Selection, ranges: OffsetRanges,
                  time_in_sql: bool) -> tuple[str, list[Any]]:
    """A WHERE clause (with parameters) over the view columns for the selected records.

    ``ranges``: [first, end) offsets to read, by partition. ``time_in_sql``: filter ``start``
    and ``end`` on the record timestamp in SQL (for a topic whose event time is a JSON field,
    the caller filters rows with :func:`event_time_within` instead).
    """
    spans = []
    for p, (lo, hi) in sorted(ranges.items()):
        bound = f' AND "offset" < {int(hi)}' if hi is not None else ""
        spans.append(f'(partition = {int(p)} AND "offset" >= {int(lo)}{bound})')
    where = ["(" + (" OR ".join(spans) or "false") + ")"]
    params: list[Any] = []
    if time_in_sql and selection.start_us is not None:
        where.append("timestamp >= make_timestamp(?)")
        params.append(selection.start_us)
    if time_in_sql and selection.end_us is not None:
        where.append("timestamp < make_timestamp(?)")
        params.append(selection.end_us)
    if selection.keys:
        where.append(f"key IN ({', '.join('?' * len(selection.keys))})")
        params += list(selection.keys)
    if selection.where:
        where.append(f"({selection.where})")
    return " AND ".join(where), params


def event_time_within(selection: Selection, spec: EventTimeSpec, timestamp_us: int,
                      value: bytes | None) -> bool:
    """Whether a row's event time (``spec`` applied to it) is within ``start``/``end``."""
    at = event_time_us(spec, timestamp_us // 1000, value)
    return at is not None and (selection.start_us is None or at >= selection.start_us) and (
        selection.end_us is None or at < selection.end_us)
