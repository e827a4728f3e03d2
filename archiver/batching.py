"""Buffering one partition's records into files, and deciding where files are cut.

Pure: no I/O, no clock (callers pass ``now``). The runner feeds records in offset order,
receives *rolls* (a :class:`~eventvault.progress.Cut` with its buffered records), makes each
roll's cut durable in Kafka's commit metadata, writes the file, then calls :meth:`done`.

Exactly-once rule (docs/EXACTLY_ONCE.md): after a restart from committed ``Progress``,
a record that falls in a recorded cut is either skipped (the cut began below the resume offset,
so its file was written before that offset was committed) or collected into that very cut,
which is rolled exactly at its recorded last offset. No record can land in two files.

Recovery is done in *rebuild passes*: while recorded cuts are rebuilt, no other record is
buffered (so no new cut is decided and the progress only shrinks); the records skipped are read
again once the pass is over (:meth:`PartitionState.take_rewind`). Memory pressure gives up
rebuild buffers for the next pass (:func:`relieve_memory`), never rolls them early.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence

from eventvault.archiver.buffers import Buffer, Limits, RecordLike, Roll, record_size
from eventvault.errors import ArchiveStateError
from eventvault.format import Columns, Header
from eventvault.layout import Hour
from eventvault.progress import Cut, Progress, progress_chars
from eventvault.times import MAX_MS, timestamp_us

__all__ = ["Limits", "PartitionState", "RecordLike", "Roll", "record_size", "relieve_memory"]

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
        self.blocked_at: int | None = None  # see _make_room and take_rewind
        self.max_hour = -1  # the latest event hour read: closes old hours (Limits.grace_hours)
        self._forced = 0  # open buffers that rebuild a recorded cut
        # Recorded cuts at or above the resume offset whose buffer has not opened yet.
        self._unbuilt = {c for c in progress.cuts if c.first >= self.resume}
        self._settled: set[Cut] = set()  # recorded cuts rebuilt by this owner: skip their records
        self._given_up: set[Cut] = set()  # rebuild buffers dropped this pass (memory), see abandon
        self._skipped_from: int | None = None  # the lowest offset skipped in this rebuild pass
        self._rewind: int | None = None  # a pass is over: read again from here (take_rewind)

    # -- feeding records -------------------------------------------------------------------
    def add(self, offset: int, hour: Hour, ts_us: int, ts_type: str, key: bytes | None,
            value: bytes | None, headers: Sequence[Header], now: float) -> list[Roll]:
        """Buffer one record (offsets must increase); return the files this decides."""
        if offset < self.next_offset:
            return []
        self.blocked_at = None
        if self._rewind is None:
            self.next_offset = offset + 1
        rolls = self.passed(offset) if self._forced or self._unbuilt else []
        if self._rewind is not None:  # a rebuild pass is over: what it skipped comes again
            self.blocked_at = self.take_rewind()
            return rolls
        recorded = self._recorded_cut(hour, offset) if self._recorded else None
        rebuilding = bool(self._forced or self._unbuilt)
        buf = None if rebuilding else self.buffers.get(hour)
        if buf is not None and buf.fence is not None and offset >= buf.fence:
            rolls.append(self.roll(hour))  # a file never spans a recorded cut of its hour
            buf = None
        if recorded is not None and (recorded.first < self.resume or recorded in self._settled):
            return rolls  # durable before the resume offset was committed, or decided again
        if rebuilding:
            return rolls + self._rebuild(recorded, offset, hour, ts_us, ts_type, key, value,
                                         headers, now)
        if hour is not None and hour > self.max_hour:
            rolls += self._close_old_hours(hour)
        if buf is None:
            if not self._make_room(rolls, hour, offset):
                self.next_offset = offset  # not taken: the caller feeds it again later
                self.blocked_at = offset
                return rolls
            buf = self.buffers[hour] = Buffer(self.partition, hour, now, None,
                                              self._fence(hour, offset))
        buf.put(offset, ts_us, ts_type, key, value, headers, now)
        if self._full(buf):
            rolls.append(self.roll(hour))
        return rolls

    def _rebuild(self, recorded: Cut | None, offset: int, hour: Hour, ts_us: int, ts_type: str,
                 key: bytes | None, value: bytes | None, headers: Sequence[Header],
                 now: float) -> list[Roll]:
        """A record read in a rebuild pass: into its recorded cut's buffer, or skipped.

        No other buffer opens while recorded cuts are rebuilt: the cuts a new buffer would add
        to the progress could not be pruned before the rebuilds end (the resume offset stays
        at the lowest of them), so they would grow it past the commit-metadata limit.
        """
        if recorded is None or recorded in self._given_up:
            self._skip(offset)
            return []
        buf = self.buffers.get(hour)
        if buf is None:
            buf = self.buffers[hour] = Buffer(self.partition, hour, now, recorded)
            self._forced += 1
            self._unbuilt.discard(recorded)
        buf.put(offset, ts_us, ts_type, key, value, headers, now)
        if offset < recorded.last:
            return []
        rolls = [self.roll(hour)]
        self._end_pass()
        if self._rewind is not None:
            self.blocked_at = self.take_rewind()
        return rolls

    def _skip(self, offset: int) -> None:
        """Leave a record for after the rebuild pass (it is read again from ``offset``)."""
        if self._skipped_from is None or offset < self._skipped_from:
            self._skipped_from = offset

    def _end_pass(self) -> None:
        """After the last rebuild of a pass rolls (or is given up), rewind to what it skipped."""
        if self._skipped_from is None or self._forced or self._unbuilt - self._given_up:
            return
        self._rewind = self.next_offset = self._skipped_from
        self._skipped_from = None
        self._given_up.clear()

    def take_rewind(self) -> int | None:
        """Where to read again after a rebuild pass, once (None: go on where reading is).

        The caller seeks the partition there: records from there on come again.
        """
        offset, self._rewind = self._rewind, None
        return offset

    def abandon(self, hour: Hour) -> None:
        """Drop the rebuild buffer of ``hour`` (memory): its cut is rebuilt in the next pass."""
        buf = self.buffers.pop(hour)
        assert buf.cut is not None, "only rebuild buffers are abandoned; others roll"
        self._forced -= 1
        self._unbuilt.add(buf.cut)
        self._given_up.add(buf.cut)
        self._skip(buf.cut.first)
        self._end_pass()

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
                if not self._make_room(rolls, hour, offset):
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

    def _make_room(self, rolls: list[Roll], hour: Hour, offset: int) -> bool:
        """Whether a new buffer may open without the progress outgrowing its limits.

        The limits are ``max_cuts`` and the encoded size (``max_progress_chars``), with every
        open buffer counted at the widest cut it can become. At a limit, every open buffer is
        rolled (``rolls`` gets them). If files are then still pending, the answer is no: the
        caller stops at this record (``blocked_at``), waits for the partition's uploads,
        commits (which prunes cuts) and feeds it again. With nothing pending, what is left are
        recorded cuts beyond the records read so far: the count is soft then, the size is not.
        """
        if self._fits(hour, offset, count=True):
            return True
        rolls += self.roll_all()
        if self.pending:
            return False
        if self._fits(hour, offset, count=False):
            return True
        raise ArchiveStateError(
            f"partition {self.partition} of {self.topic}: the recorded cuts leave no room in the "
            "commit metadata for a new file (progress written with a larger limit?)",
            topic=self.topic, partition=self.partition, cuts=len(self.cuts))

    def _fits(self, hour: Hour, offset: int, *, count: bool) -> bool:
        """Whether a buffer opening at ``offset`` keeps the progress within its limits."""
        point = min(self.commit_point(), offset)
        self.cuts = {c for c in self.cuts if c.last >= point}  # as the next commit has them
        if count and len(self.cuts) + len(self.buffers) >= self.limits.max_cuts:
            return False
        opened = [(h, b.first) for h, b in self.buffers.items()] + [(hour, offset)]
        chars = progress_chars(point, self.cuts, opened, self.spec_hash)
        return chars <= self.limits.max_progress_chars

    def _fence(self, hour: Hour, offset: int) -> int | None:
        """The first offset of the next recorded cut of ``hour`` after ``offset``, if any."""
        cuts = self._recorded.get(hour)
        if not cuts:
            return None
        i = bisect_right(cuts, offset, key=lambda c: c.first)
        return cuts[i].first if i < len(cuts) else None

    def _recorded_cut(self, hour: Hour, offset: int) -> Cut | None:
        cuts = self._recorded.get(hour)
        if not cuts:
            return None
        i = bisect_right(cuts, offset, key=lambda c: c.first) - 1
        return cuts[i] if i >= 0 and cuts[i].last >= offset else None

    def passed(self, position: int) -> list[Roll]:
        """Roll rebuilt cuts that end below ``position``.

        Their last record never came (compaction, aborted transactions). Rebuilt cuts never
        roll earlier than this: rolling one early could split it into two writes. Nothing
        passes while a rewind is due: ``position`` is then that of the pass that ended.
        """
        if self._rewind is not None:
            return []
        late = [h for h, b in self.buffers.items() if b.cut is not None and b.cut.last < position]
        rolls = [self.roll(h) for h in late]
        for cut in sorted(c for c in self._unbuilt - self._given_up if c.last < position):
            self._unbuilt.discard(cut)
            self._settled.add(cut)
            self.pending.add(cut)
            rolls.append(Roll(self.topic, self.partition, cut, Columns(self.partition), True))
        self._end_pass()
        return rolls

    # -- rolling ---------------------------------------------------------------------------
    def roll(self, hour: Hour) -> Roll:
        """Close the buffer of ``hour`` into a decided cut."""
        buf = self.buffers.pop(hour)
        cut = buf.to_cut()
        rebuilt = buf.cut is not None
        if rebuilt:
            self._forced -= 1
            self._settled.add(cut)
        self.cuts.add(cut)
        self.pending.add(cut)
        return Roll(self.topic, self.partition, cut, buf.cols, rebuilt, buf.nbytes)

    def roll_all(self) -> list[Roll]:
        """Close every buffer (rebuilt cuts too)."""
        return [self.roll(h) for h in list(self.buffers)]

    def finish(self, position: int) -> list[Roll]:
        """Close what a bounded run that stopped at ``position`` may close.

        Rebuilt cuts roll only once ``position`` is past their recorded last offset: one left
        open holds the commit point below its records, which the next run reads again.
        """
        rolls = self.passed(position)
        return rolls + [self.roll(h) for h, b in list(self.buffers.items()) if b.cut is None]

    def needed_end(self) -> int:
        """The offset a bounded run must read up to: past every recorded cut (0 if none).

        A recorded cut is rebuilt whole or not at all: a file named after it with part of its
        records would let the next run skip the rest as durable.
        """
        cuts = self.cuts | self._unbuilt | {b.cut for b in self.buffers.values() if b.cut}
        return max((c.last + 1 for c in cuts), default=0)

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
        """Whether recorded cuts are still being rebuilt, or skipped records wait.

        See :meth:`passed` and :meth:`take_rewind`.
        """
        return bool(self._forced or self._unbuilt or self._rewind is not None)

    @property
    def deferred(self) -> bool:
        """Whether records were skipped by a rebuild pass and are still to be read again."""
        return self._skipped_from is not None or self._rewind is not None

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
        if self._skipped_from is not None:
            starts.append(self._skipped_from)
        return min([*starts, self.next_offset])

    def progress(self) -> Progress:
        """What to commit now: resume offset and every cut not wholly below it."""
        point = self.commit_point()
        self.cuts = {c for c in self.cuts if c.last >= point}
        return Progress(point, tuple(sorted(self.cuts)), self.spec_hash)


def relieve_memory(states: Iterable[PartitionState], budget: int,
                   inflight_bytes: int) -> list[Roll]:
    """Roll the largest buffers while buffers and files in flight exceed ``budget``.

    Buffers are left alone once they are under a quarter of the budget (what remains over it
    is in flight and drains by itself). Rebuilt cuts are never rolled early: when only they are
    left, the largest are given up for the next rebuild pass (:meth:`PartitionState.abandon`),
    all but the oldest, which goes on, so that every pass completes one at least.
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
    rebuilds = sorted((((b.opened_at, st.topic, st.partition, b.first), b.nbytes, st, h)
                       for st in states for h, b in st.buffers.items() if b.cut is not None),
                      key=lambda r: r[0])
    for _, nbytes, state, hour in sorted(rebuilds[1:], key=lambda r: -r[1]):
        if buffered + inflight_bytes <= budget or buffered <= budget // 4:
            break
        state.abandon(hour)
        buffered -= nbytes
    return rolls
