"""Buffering one partition's records into files, and deciding where files are cut.

Pure: no I/O, no clock (callers pass ``now``). The runner feeds records in offset order,
receives *rolls* (a :class:`~eventvault.progress.Cut` with its buffered records), makes each
roll's cut durable in Kafka's commit metadata, writes the file, then calls :meth:`done`.

Exactly-once rule (docs/EXACTLY_ONCE.md): after a restart from committed ``Progress``,
a record that falls in a recorded cut is either skipped (the cut began below the resume offset,
so its file was written before that offset was committed) or collected into that very cut,
which is rolled exactly at its recorded last offset. No record can land in two files.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from eventvault.format import Columns, Header
from eventvault.layout import Hour
from eventvault.progress import Cut, Progress
from eventvault.times import MAX_MS, timestamp_us

RECORD_OVERHEAD = 160
"""Bytes of Python objects a buffered record costs beyond its key, value and headers."""


class RecordLike(Protocol):
    """What the batch path reads of a Kafka record (aiokafka's ConsumerRecord has it)."""

    @property
    def offset(self) -> int: ...  # noqa: D102
    @property
    def timestamp(self) -> int: ...  # noqa: D102
    @property
    def key(self) -> bytes | None: ...  # noqa: D102
    @property
    def value(self) -> bytes | None: ...  # noqa: D102
    @property
    def headers(self) -> Sequence[Header]: ...  # noqa: D102


@dataclass(frozen=True)
class Limits:
    """When files roll, and how many decided cuts a partition may carry in its progress."""

    max_records: int = 1_000_000
    max_bytes: int = 128 << 20
    idle_seconds: float = 120.0
    max_age_seconds: float = 900.0
    max_cuts: int = 64
    grace_hours: int | None = None  # close hour H once hour H + grace + 1 is read


class Buffer:
    """Records of one hour bucket, from ``first`` on, not yet in a file."""

    __slots__ = ("cols", "cut", "hour", "nbytes", "opened_at", "touched_at")

    def __init__(self, partition: int, hour: Hour, now: float, cut: Cut | None) -> None:
        self.hour = hour
        self.cols = Columns(partition)
        self.nbytes = 0
        self.opened_at = now
        self.touched_at = now
        self.cut = cut  # set when rebuilding a recorded cut: roll exactly at cut.last

    @property
    def first(self) -> int:
        """The offset this buffer's file will start at."""
        return self.cut.first if self.cut else self.cols.offsets[0]

    def to_cut(self) -> Cut:
        """The cut this buffer becomes when rolled."""
        return self.cut or Cut(self.cols.offsets[0], self.cols.offsets[-1], self.hour)

    def put(self, offset: int, ts_us: int, ts_type: str, key: bytes | None,
            value: bytes | None, headers: Sequence[Header], now: float) -> None:
        """Buffer one record and count its size."""
        self.cols.append(offset, ts_us, ts_type, key, value, headers)
        self.nbytes += record_size(key, value, headers)
        self.touched_at = now


@dataclass(frozen=True)
class Roll:
    """A decided file: its cut and its records; ``rebuilt`` when it repeats a recorded cut."""

    topic: str
    partition: int
    cut: Cut
    cols: Columns
    rebuilt: bool
    nbytes: int = 0


class PartitionState:
    """Buffers, decided cuts and the commit point of one assigned partition."""

    def __init__(self, topic: str, partition: int, progress: Progress, limits: Limits,
                 spec_hash: str = "") -> None:
        self.topic = topic
        self.partition = partition
        self.limits = limits
        self.spec_hash = spec_hash
        self.resume = progress.offset
        self.next_offset = progress.offset
        self.buffers: dict[Hour, Buffer] = {}
        self.cuts: set[Cut] = set(progress.cuts)
        self.pending: set[Cut] = set()
        self._recorded: dict[Hour, list[Cut]] = {}
        for cut in sorted(progress.cuts):
            self._recorded.setdefault(cut.hour, []).append(cut)
        self.blocked_at: int | None = None  # see _make_room
        self.max_hour = -1  # the latest event hour read: closes old hours (Limits.grace_hours)
        self._forced = 0  # open buffers that rebuild a recorded cut
        # Recorded cuts at or above the resume offset whose buffer has not opened yet.
        self._unbuilt = {c for c in progress.cuts if c.first >= self.resume}

    # -- feeding records -------------------------------------------------------------------
    def add(self, offset: int, hour: Hour, ts_us: int, ts_type: str, key: bytes | None,
            value: bytes | None, headers: Sequence[Header], now: float) -> list[Roll]:
        """Buffer one record (offsets must increase); return the files this decides."""
        if offset < self.next_offset:
            return []
        self.next_offset = offset + 1
        self.blocked_at = None
        rolls = self.passed(offset) if self._forced or self._unbuilt else []
        recorded = self._recorded_cut(hour, offset) if self._recorded else None
        if recorded is not None and recorded.first < self.resume:
            return rolls  # its file was durable before the resume offset was committed
        buf = self.buffers.get(hour)
        if buf is not None and buf.cut != recorded:
            rolls.append(self.roll(hour))
            buf = None
        if hour is not None and hour > self.max_hour:
            rolls += self._close_old_hours(hour)
        if buf is None:
            if recorded is None and not self._make_room(rolls):
                self.next_offset = offset  # not taken: the caller feeds it again later
                self.blocked_at = offset
                return rolls
            buf = self.buffers[hour] = Buffer(self.partition, hour, now, recorded)
            if recorded is not None:
                self._forced += 1
                self._unbuilt.discard(recorded)
        buf.put(offset, ts_us, ts_type, key, value, headers, now)
        if recorded is not None:
            if offset >= recorded.last:
                rolls.append(self.roll(hour))
        elif self._full(buf):
            rolls.append(self.roll(hour))
        return rolls

    def add_records(self, records: Sequence[RecordLike], hours: Sequence[Hour],
                    ts_types: Sequence[str], now: float) -> list[Roll]:
        """Buffer a batch of records in offset order (same rules as :meth:`add`, faster).

        ``records`` have ``offset``, ``timestamp`` (ms), ``key``, ``value`` and ``headers``;
        ``hours`` and ``ts_types`` are given per record.
        """
        if self._recorded or self._forced:
            rolls: list[Roll] = []
            for r, hour, ts_type in zip(records, hours, ts_types, strict=True):
                rolls += self.add(r.offset, hour, timestamp_us(r.timestamp), ts_type, r.key,
                                  r.value, r.headers, now)
                if self.blocked_at is not None:
                    break
            return rolls
        return self._add_plain(records, hours, ts_types, now)

    def _add_plain(self, records: Sequence[RecordLike], hours: Sequence[Hour],
                   ts_types: Sequence[str], now: float) -> list[Roll]:
        """:meth:`add` for a batch when no recorded cut is being rebuilt (the hot path).

        Without recorded cuts, each record goes to its hour's buffer, so the batch needs one
        loop, not a call of :meth:`add` per record: 0.77-1.09 M records/s against 0.57-0.58 M
        (``python -m bench.buffering_bench``, bench/RESULTS.md). Both store through
        :meth:`Buffer.put`.
        """
        rolls: list[Roll] = []
        buffers = self.buffers
        for r, hour, ts_type in zip(records, hours, ts_types, strict=True):
            offset = r.offset
            if offset < self.next_offset:
                continue
            if hour is not None and hour > self.max_hour:
                rolls += self._close_old_hours(hour)
            buf = buffers.get(hour)
            if buf is None:
                if not self._make_room(rolls):
                    self.blocked_at = offset
                    return rolls
                buf = buffers[hour] = Buffer(self.partition, hour, now, None)
            self.next_offset = offset + 1
            self.blocked_at = None
            ts = r.timestamp
            buf.put(offset, ts * 1000 if -MAX_MS <= ts <= MAX_MS else timestamp_us(ts), ts_type,
                    r.key, r.value, r.headers, now)
            if self._full(buf):
                rolls.append(self.roll(hour))
        return rolls

    def _full(self, buf: Buffer) -> bool:
        """Whether a buffer has reached the file limits (records or bytes)."""
        return len(buf.cols) >= self.limits.max_records or buf.nbytes >= self.limits.max_bytes

    def _close_old_hours(self, hour: int) -> list[Roll]:
        """Roll buffers of hours more than ``grace_hours`` before ``hour``, the newest read.

        A rule on the record stream alone (no clock), so a restart cuts in the same places;
        late records of a closed hour start a new file of that hour.
        """
        self.max_hour = hour
        grace = self.limits.grace_hours
        if grace is None:
            return []
        old = [h for h, b in self.buffers.items()
               if b.cut is None and h is not None and h < hour - grace]
        return [self.roll(h) for h in old]

    def _make_room(self, rolls: list[Roll]) -> bool:
        """Whether a new buffer may open without the progress outgrowing ``max_cuts``.

        At the limit, every open buffer is rolled (``rolls`` gets them). If files are then
        still pending, the answer is no: the caller stops at this record (``blocked_at``),
        waits for the partition's uploads, commits (which prunes cuts) and feeds it again.
        With nothing pending the limit is soft: only a rebuild can pin cuts then.
        """
        if len(self.cuts) + len(self.buffers) < self.limits.max_cuts:
            return True
        rolls += self.roll_all(include_rebuilds=False)
        return not self.pending

    def _recorded_cut(self, hour: Hour, offset: int) -> Cut | None:
        cuts = self._recorded.get(hour)
        if not cuts:
            return None
        i = bisect_right(cuts, offset, key=lambda c: c.first) - 1
        return cuts[i] if i >= 0 and cuts[i].last >= offset else None

    def passed(self, position: int) -> list[Roll]:
        """Roll rebuilt cuts that end below ``position``.

        Their last record never came (compaction, aborted transactions). Rebuilt cuts never
        roll earlier than this: rolling one early could split it into two writes.
        """
        late = [h for h, b in self.buffers.items() if b.cut is not None and b.cut.last < position]
        rolls = [self.roll(h) for h in late]
        for cut in sorted(c for c in self._unbuilt if c.last < position):
            self._unbuilt.discard(cut)
            self.pending.add(cut)
            rolls.append(Roll(self.topic, self.partition, cut, Columns(self.partition), True))
        return rolls

    # -- rolling ---------------------------------------------------------------------------
    def roll(self, hour: Hour) -> Roll:
        """Close the buffer of ``hour`` into a decided cut."""
        buf = self.buffers.pop(hour)
        cut = buf.to_cut()
        rebuilt = buf.cut is not None
        if rebuilt:
            self._forced -= 1
        self.cuts.add(cut)
        self.pending.add(cut)
        return Roll(self.topic, self.partition, cut, buf.cols, rebuilt, buf.nbytes)

    def roll_all(self, *, include_rebuilds: bool = True) -> list[Roll]:
        """Close every buffer (rebuilt cuts too, unless told otherwise)."""
        hours = [h for h, b in self.buffers.items() if include_rebuilds or b.cut is None]
        return [self.roll(h) for h in hours]

    def finish(self, position: int) -> list[Roll]:
        """Close everything at the end of a bounded run that stopped at ``position``."""
        return self.passed(position) + self.roll_all()

    def roll_expired(self, now: float) -> list[Roll]:
        """Close buffers idle for ``idle_seconds`` or open for ``max_age_seconds``."""
        lim = self.limits
        hours = [
            h for h, b in self.buffers.items()
            if b.cut is None and (now - b.touched_at >= lim.idle_seconds
                                  or now - b.opened_at >= lim.max_age_seconds)
        ]
        return [self.roll(h) for h in hours]

    def done(self, cut: Cut) -> None:
        """Record that the file of ``cut`` is durable in storage."""
        self.pending.discard(cut)

    @property
    def rebuilding(self) -> bool:
        """Whether recorded cuts are still being rebuilt (see :meth:`passed`)."""
        return bool(self._forced or self._unbuilt)

    # -- progress --------------------------------------------------------------------------
    @property
    def buffered_bytes(self) -> int:
        """Estimated memory held by this partition's open buffers."""
        return sum(b.nbytes for b in self.buffers.values())

    def commit_point(self) -> int:
        """The lowest offset whose record may not yet be in a durable file."""
        starts = [b.first for b in self.buffers.values()]
        starts += [c.first for c in self.pending]
        starts += [c.first for c in self._unbuilt]
        return min([*starts, self.next_offset])

    def progress(self) -> Progress:
        """What to commit now: resume offset and every cut not wholly below it."""
        point = self.commit_point()
        self.cuts = {c for c in self.cuts if c.last >= point}
        return Progress(point, tuple(sorted(self.cuts)), self.spec_hash)


def relieve_memory(states: Iterable[PartitionState], budget: int,
                   inflight_bytes: int) -> list[Roll]:
    """Roll the largest buffers while buffers and files in flight exceed ``budget``.

    Rebuilt cuts are never rolled early; buffers are left alone once they are under a quarter
    of the budget (what remains over it is in flight and drains by itself).
    """
    states = list(states)
    rolls: list[Roll] = []
    buffered = sum(st.buffered_bytes for st in states)
    while buffered + inflight_bytes > budget and buffered > budget // 4:
        candidates = [(b.nbytes, i, h) for i, st in enumerate(states)
                      for h, b in st.buffers.items() if b.cut is None]
        if not candidates:
            break
        nbytes, i, hour = max(candidates, key=lambda c: c[0])
        rolls.append(states[i].roll(hour))
        buffered -= nbytes
    return rolls


def record_size(key: bytes | None, value: bytes | None, headers: Sequence[Header]) -> int:
    """Estimated bytes one buffered record holds."""
    size = RECORD_OVERHEAD + (len(key) if key else 0) + (len(value) if value else 0)
    for h_key, h_value in headers:
        size += 64 + len(h_key) + (len(h_value) if h_value else 0)
    return size
