"""The archiver: a consumer-group member that turns records into archive files.

The loop: fetch a batch; feed each record to its partition's
:class:`~eventvault.archiver.batching.PartitionState`; for every file that decides, first
commit the partition's progress (offset plus decided cuts: the intent), then encode and upload
the file (eventvault.archiver.encoder, a thread pool); commit advanced progress as uploads
finish. ``once`` stops at the end offsets seen when each partition was first assigned. See
docs/EXACTLY_ONCE.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from eventvault import format as fmt
from eventvault import kafka, kafka_probes, observe
from eventvault.archiver import adoption
from eventvault.archiver.adoption import partition_name
from eventvault.archiver.batching import Limits, PartitionState, Roll, relieve_memory
from eventvault.archiver.encoder import Uploads
from eventvault.archiver.faults import FaultPoints
from eventvault.archiver.membership import Membership
from eventvault.archiver.stopping import on_signals
from eventvault.errors import BrokerError
from eventvault.kafka import TopicPartition
from eventvault.layout import hours_of
from eventvault.settings import Settings
from eventvault.storage import Storage, abandon_retries, check_access

_TS_TYPES = fmt.TIMESTAMP_TYPES
Owned = list[tuple[PartitionState, Roll]]
"""Decided files with the state that decided them (acted on only while it owns them)."""


@dataclass
class Summary:
    """What a run did: only what is durable and committed counts.

    ``records``, ``files`` and ``bytes_written`` are those of the files this run wrote (a
    recorded cut's file found already written counts for the run that wrote it); every one
    was recorded in a committed intent before it was written. ``committed`` is the last
    resume offset Kafka accepted per partition. ``unwritten_files`` were decided but not
    written when a stop abandoned their uploads (their records are read again next time).
    """

    records: int = 0
    files: int = 0
    bytes_written: int = 0
    committed: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    peak_buffered_bytes: int = 0
    unwritten_files: int = 0
    unwritten_error: str = ""


class Archiver(Membership):
    """Archive the configured topics into ``storage``."""

    def __init__(self, settings: Settings, storage: Storage, *, once: bool = False,
                 show_progress: bool = False) -> None:
        self.archive_settings = config = settings.archive
        self.kafka_settings = settings.kafka
        self.once = once
        self.limits = Limits(config.max_file_records, config.max_file_bytes, config.idle_seconds,
                             config.max_file_age_seconds, config.max_cuts_per_partition,
                             config.hour_grace_hours)
        self._init_membership()
        self.storage = storage
        self.summary = Summary()
        self.uploads = Uploads(storage, config.zstd_level, config.upload_concurrency)
        self.progress_bar = observe.ProgressBar(once and show_progress)
        self.stopping: asyncio.Event
        self.consumer: Any = None
        self.fatal: Exception | None = None
        self._last_tick = self._last_commit = self._unassigned_seconds = 0.0
        self.faults = FaultPoints(config.fault_points)
        self.log_starts = kafka_probes.LogStarts(settings.kafka)
        self._jumps: list[tuple[TopicPartition, PartitionState, int, int]] = []

    def stop(self) -> None:
        """Stop soon: no more reading; storage retries give up; commit what is durable."""
        self.stopping.set()
        abandon_retries(self.storage)
        self.kafka_waits.bound_all()

    # -- lifecycle -------------------------------------------------------------------------
    async def run(self) -> Summary:
        """Run until stopped (or, with ``once``, until the end offsets seen are archived)."""
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        self.stopping = asyncio.Event()
        config = self.archive_settings
        self.consumer = kafka.consumer(self.kafka_settings, config.group_id,
                                       config.isolation_level,
                                       min(50 << 20, config.memory_budget_bytes // 8),
                                       config.session_timeout_ms)
        on_signals(loop, self.stop)
        try:
            await asyncio.to_thread(check_access, self.storage)  # before reading anything
            await self._start()
            await self._loop()
            if self.fatal is not None:
                raise self.fatal
            if self.once and not self.stopping.is_set():
                await self._finish()
            await self._drain()
            await self._commit(set(self.states))
        finally:
            abandon_retries(self.storage)  # no thread keeps retrying once the run is over
            await self.kafka_waits.attempt("the consumer's stop",
                                           lambda: kafka.stop_quietly(self.consumer))
            await self.kafka_waits.attempt("the probe's stop", self.log_starts.close)
            self.uploads.close()
            self.progress_bar.close()
        self.summary.seconds = time.monotonic() - started
        self.summary.committed = {partition_name(tp): offset
                                  for tp, offset in sorted(self.committed.items())}
        return self.summary

    async def _start(self) -> None:
        config = self.archive_settings
        try:
            await self.consumer.start()
            if config.topics:
                known = await self.consumer.topics()
                missing = sorted(set(config.topics) - known)
                if missing:
                    where = self.kafka_settings.bootstrap_servers
                    raise BrokerError(f"topic(s) not found on {where}: {', '.join(missing)}",
                                      topics=missing)
                self.consumer.subscribe(config.topics, listener=self)
            elif config.topics_regex:
                self.consumer.subscribe(pattern=f"^(?:{config.topics_regex})$", listener=self)
            else:
                raise BrokerError("no topics to archive: set archive.topics or "
                                  "archive.topics_regex")
        except kafka.AIOKafkaError as exc:
            raise BrokerError(f"cannot reach Kafka at {self.kafka_settings.bootstrap_servers}: "
                              f"{exc}", retriable=True) from exc

    async def _loop(self) -> None:
        self._last_tick = self._last_commit = time.monotonic()
        while not self.stopping.is_set():
            batch = await self.consumer.getmany(timeout_ms=200, max_records=20_000)
            now = time.monotonic()
            rolls = self._feed(batch, now)
            if self._jumps:
                await self._check_jumps()
            rolls += await self._on_timers(now)
            rolls += self._relieve_memory()
            if rolls:
                await self._intend(rolls)
            await self._unblock()
            if self.once and await self._bounded_run_done():
                return
            await self._reap(block=self._held() > self.archive_settings.memory_budget_bytes)

    # -- records ---------------------------------------------------------------------------
    def _feed(self, batch: dict[TopicPartition, list[Any]], now: float) -> Owned:
        """Buffer a fetched batch; partitions that hit their cut limit go to ``self.blocked``."""
        rolls: Owned = []
        for tp, fetched in batch.items():
            state = self.states.get(tp)
            if state is None:
                # Fetched before the assignment callback built its state: read them again.
                with contextlib.suppress(kafka.IllegalStateError):
                    self.consumer.seek(tp, fetched[0].offset)
                continue
            if tp in self.done:
                continue
            if fetched[0].offset > state.next_offset:
                self._jumps.append((tp, state, state.next_offset, fetched[0].offset))
            records = fetched
            end = max(self.ends[tp], state.needed_end()) if self.once else 0
            if self.once and fetched[-1].offset >= end:  # never cut a recorded cut short
                records = [r for r in fetched if r.offset < end]
            hours = hours_of(self.archive_settings.event_time_spec(tp.topic), records)
            ts_types = [_TS_TYPES.get(r.timestamp_type, "CreateTime") for r in records]
            rolls += [(state, r) for r in state.add_records(records, hours, ts_types, now)]
            self._count_taken(tp, state, records)
        return rolls

    async def _check_jumps(self) -> None:
        """Tell retention loss from legitimate gaps where a partition's offsets jumped.

        Transaction markers, aborted records and compaction leave gaps that are no loss. A
        jump is loss when the log start had moved past the expected offset: the fetch was
        reset to the earliest offset. The offsets from the expected one up to the first one
        read (or the log start, if lower) were deleted before they were read.
        """
        jumps, self._jumps = self._jumps, []
        starts = await self.kafka_waits.attempt("log start offsets", lambda: self.log_starts.get(
            sorted({tp for tp, _, _, _ in jumps})))
        if starts is None:  # stopping, and Kafka did not answer: no commit moves past the jumps
            return
        await self.faults.reach("loss-checked", partitions=len(starts))
        for tp, state, expected, got in jumps:
            start = starts.get(tp, 0)
            if start <= expected:
                observe.event("offset gap", logging.DEBUG, topic=tp.topic,
                              partition=tp.partition, expected=expected, got=got)
                continue
            await adoption.report_retention_loss(self.storage, tp, expected, min(got, start),
                                                 state.cuts, when="while running",
                                                 reported=self.reported_lost)

    def _count_taken(self, tp: TopicPartition, state: PartitionState, records: list[Any]) -> None:
        """Count the records buffered; a blocked partition is read again from where it stopped."""
        taken = len(records)
        if state.blocked_at is not None:  # read the rest again once uploads caught up
            taken = sum(1 for r in records if r.offset < state.blocked_at)
            self.consumer.seek(tp, state.blocked_at)
            self.blocked.add(tp)
        self.progress_bar.advance(taken)
        if taken:
            self.dirty.add(tp)

    async def _on_timers(self, now: float) -> Owned:
        """Once a second: idle and age rolls, passed recorded cuts, and periodic commits."""
        if now - self._last_tick < 1.0:
            return []
        self._last_tick = now
        idle = [(st, r) for st in self.states.values() for r in st.roll_expired(now)]
        if idle:
            await self._intend(idle, point="idle-intent")
        observe.BUFFERED.set(self._held())
        rolls = await self._passed()
        interval = self.archive_settings.commit_interval_seconds
        if now - self._last_commit >= interval and self.dirty:
            await self._commit(set(self.dirty))
            self._last_commit = now
        return rolls

    async def _position(self, tp: TopicPartition, state: PartitionState) -> int | None:
        """The consumer's position in ``tp``; None if ``state`` no longer owns it then."""
        try:
            position: int = await self.consumer.position(tp)
        except kafka.IllegalStateError:  # revoked meanwhile
            position = -1
        await self.faults.reach("position-read", partition=partition_name(tp))
        return None if position < 0 or self.left(tp, state, "position") else position

    async def _passed(self) -> Owned:
        """Roll rebuilt cuts whose last record the consumer has moved past without seeing."""
        rolls: Owned = []
        for tp, state in list(self.states.items()):
            if state.rebuilding and self.owns(tp, state):
                position = await self._position(tp, state)
                if position is None:
                    continue
                passed = state.passed(position)
                for r in passed:
                    observe.event("recorded cut passed", topic=tp.topic, partition=tp.partition,
                                  cut=[r.cut.first, r.cut.last], records=len(r.cols),
                                  position=position, next_offset=state.next_offset)
                rolls += [(state, r) for r in passed]
                if (rewind := state.take_rewind()) is not None:  # a rebuild pass is over:
                    self.consumer.seek(tp, rewind)  # read what it skipped
        return rolls

    def _relieve_memory(self) -> Owned:
        rolls = relieve_memory(self.states.values(), self.archive_settings.memory_budget_bytes,
                               self.uploads.held_bytes)
        for tp, state in self.states.items():  # a pass ended by giving up a rebuild: read its
            if (rewind := state.take_rewind()) is not None:  # skipped records again now, not
                self.consumer.seek(tp, rewind)  # after a batch that would look like a jump
        self.summary.peak_buffered_bytes = max(self.summary.peak_buffered_bytes, self._held())
        return [(self.states[TopicPartition(r.topic, r.partition)], r) for r in rolls]

    async def _unblock(self) -> None:
        """Let partitions at their cut limit go on: wait for their uploads, then commit."""
        if self.blocked:
            await self._drain(self.blocked)
            await self._commit(self.blocked)
            self.blocked.clear()

    def _buffered(self) -> int:
        return sum(st.buffered_bytes for st in self.states.values())

    def _held(self) -> int:
        """Estimated bytes of open buffers and files in flight (what the budget bounds)."""
        return self._buffered() + self.uploads.held_bytes

    # -- files -----------------------------------------------------------------------------
    async def _intend(self, rolls: Owned, point: str = "intent-committed") -> None:
        """Commit the decided cuts, then start their uploads (never the other way round).

        A partition revoked meanwhile is left alone: its last commit records the cuts, and the
        new owner writes their files.
        """
        tps = {TopicPartition(r.topic, r.partition) for st, r in rolls}
        if not await self._commit(tps):
            return
        cuts = [[r.topic, r.partition, r.cut.first, r.cut.last, r.cut.hour] for _, r in rolls]
        await self.faults.reach("intent-committed", cuts=cuts)
        if point != "intent-committed":
            await self.faults.reach(point, cuts=cuts)
        for state, roll in rolls:
            tp = TopicPartition(roll.topic, roll.partition)
            while self.uploads.full and self.owns(tp, state):
                await self._reap(block=True)
            if self.left(tp, state, "intent"):
                continue
            observe.event("file decided", logging.DEBUG, topic=roll.topic,
                          partition=roll.partition, hour=roll.cut.hour, first=roll.cut.first,
                          last=roll.cut.last, records=len(roll.cols), rebuilt=roll.rebuilt)
            self.uploads.start(state, roll)
        # The estimate peaks now, with the rolls' files in flight (not after relief).
        self.summary.peak_buffered_bytes = max(self.summary.peak_buffered_bytes, self._held())

    async def _reap(self, *, block: bool) -> None:
        """Collect finished uploads; with ``block``, wait for at least one."""
        if not self.uploads:
            return
        if block:
            await self.uploads.wait()
            await self.faults.reach("reap-waited")
        for state, roll, written in self.uploads.finished():
            if isinstance(written, BaseException):
                self._unwritten(roll, written)
                continue
            observe.event("file done", logging.DEBUG, topic=roll.topic, partition=roll.partition,
                          first=roll.cut.first, last=roll.cut.last, bytes=written)
            state.done(roll.cut)
            if self.owns(TopicPartition(roll.topic, roll.partition), state):
                self.dirty.add(TopicPartition(roll.topic, roll.partition))
            if written:
                await self.faults.reach("file-durable", topic=roll.topic,
                                        partition=roll.partition, first=roll.cut.first,
                                        last=roll.cut.last, hour=roll.cut.hour)
                self.summary.records += len(roll.cols)
                self.summary.files += 1
                self.summary.bytes_written += written
                observe.FILES.labels(roll.topic).inc()
                observe.BYTES.labels(roll.topic).inc(written)
                observe.RECORDS.labels(roll.topic).inc(len(roll.cols))

    def _unwritten(self, roll: Roll, error: BaseException) -> None:
        """A file whose write failed: the end of the run, unless it is stopping anyway.

        Its cut stays pending, so no commit moves past its records.
        """
        if not self.stopping.is_set():
            raise error
        self.summary.unwritten_files += 1
        self.summary.unwritten_error = self.summary.unwritten_error or str(error)
        observe.event("file not written: stopping", logging.WARNING, topic=roll.topic,
                      partition=roll.partition, first=roll.cut.first, last=roll.cut.last,
                      error=str(error))

    async def _drain(self, tps: set[TopicPartition] | None = None) -> None:
        """Wait until no file of ``tps`` (of any partition: None) is in flight."""
        while self.uploads and (tps is None or any(
                TopicPartition(*where) in tps for where in self.uploads.partitions())):
            await self._reap(block=True)

    def _adopted(self, tps: set[TopicPartition]) -> None:
        observe.event("partitions adopted", partitions={
            partition_name(tp): {"resume": self.states[tp].resume,
                                 "cuts": len(self.states[tp].cuts), "end": self.ends.get(tp)}
            for tp in tps})
        if self.once:
            self.progress_bar.total(sum(max(0, self.ends[tp] - st.resume)
                                        for tp, st in self.states.items() if tp in self.ends))

    # -- bounded runs ----------------------------------------------------------------------
    async def _bounded_run_done(self) -> bool:
        """Whether a ``once`` run has read every assigned partition to its end offset."""
        for tp, state in list(self.states.items()):
            # Records skipped by a rebuild pass come again (deferred).
            if tp in self.done or state.deferred or not self.owns(tp, state):
                continue
            end = self.ends.get(tp, 0)
            if state.next_offset < end:
                position = await self._position(tp, state)
                if position is None or position < end:
                    continue
            self.done.add(tp)
            self.consumer.pause(tp)
        if self.states and self.done >= set(self.states):
            observe.event("end offsets reached", records=self.summary.records,
                          buffered=self._buffered(), uploading=len(self.uploads))
            return True
        self._unassigned_seconds = 0.0 if self.states else self._unassigned_seconds + 0.2
        if self._unassigned_seconds > 60:
            raise BrokerError("no partitions were assigned within 60 s", retriable=True)
        return False

    async def _finish(self) -> None:
        rolls: Owned = []
        for tp, state in self.states.items():
            end = max(self.ends.get(tp, 0), state.next_offset)
            rolls += [(state, r) for r in state.finish(end)]
        if rolls:
            await self._intend(rolls)
