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
import signal
import time
from dataclasses import dataclass, field
from typing import Any

from eventvault import format as fmt
from eventvault import kafka, observe
from eventvault.archiver import adoption
from eventvault.archiver.adoption import partition_name
from eventvault.archiver.batching import Limits, PartitionState, Roll, relieve_memory
from eventvault.archiver.encoder import Uploads
from eventvault.errors import BrokerError, EventVaultError
from eventvault.kafka import TopicPartition
from eventvault.layout import hours_of
from eventvault.progress import Progress, encode_progress, spec_hash
from eventvault.settings import Settings
from eventvault.storage import Storage

_TS_TYPES = fmt.TIMESTAMP_TYPES


@dataclass
class Summary:
    """What a run did."""

    records: int = 0
    files: int = 0
    bytes_written: int = 0
    committed: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    peak_buffered_bytes: int = 0


class Archiver(kafka.RebalanceListener):  # type: ignore[misc]
    """Archive the configured topics into ``storage``."""

    def __init__(self, settings: Settings, storage: Storage, *, once: bool = False,
                 show_progress: bool = False) -> None:
        self.archive_settings = config = settings.archive
        self.kafka_settings = settings.kafka
        self.once = once
        self.limits = Limits(config.max_file_records, config.max_file_bytes, config.idle_seconds,
                             config.max_file_age_seconds, config.max_cuts_per_partition,
                             config.hour_grace_hours)
        self.states: dict[TopicPartition, PartitionState] = {}
        self.ends: dict[TopicPartition, int] = {}
        self.done: set[TopicPartition] = set()
        self.dirty: set[TopicPartition] = set()
        self.blocked: set[TopicPartition] = set()
        self.summary = Summary()
        self.uploads = Uploads(storage, config.zstd_level, config.upload_concurrency)
        self.progress_bar = observe.ProgressBar(once and show_progress)
        self.stopping: asyncio.Event
        self.consumer: Any = None
        self.fatal: Exception | None = None
        self._last_tick = self._last_commit = 0.0
        self._unassigned_seconds = 0.0

    def stop(self) -> None:
        """Ask a running archiver to stop after its current batch (uploads finish first)."""
        self.stopping.set()

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
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stopping.set)
        try:
            await self._start()
            await self._loop()
            if self.fatal is not None:
                raise self.fatal
            if self.once:
                await self._finish()
            await self._drain()
            await self._commit(set(self.states))
        finally:
            with contextlib.suppress(Exception):
                await self.consumer.stop()
            self.uploads.close()
            self.progress_bar.close()
        self.summary.seconds = time.monotonic() - started
        self.summary.committed = {partition_name(tp): st.progress().offset
                                  for tp, st in sorted(self.states.items())}
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
            rolls += await self._on_timers(now)
            rolls += self._relieve_memory()
            if rolls:
                await self._intend(rolls)
            await self._unblock()
            if self.once and await self._bounded_run_done():
                return
            await self._reap(block=self._held() > self.archive_settings.memory_budget_bytes)

    # -- records ---------------------------------------------------------------------------
    def _feed(self, batch: dict[TopicPartition, list[Any]], now: float) -> list[Roll]:
        """Buffer a fetched batch; partitions that hit their cut limit go to ``self.blocked``."""
        rolls: list[Roll] = []
        for tp, fetched in batch.items():
            state = self.states.get(tp)
            if state is None:
                # Fetched before the assignment callback built its state: read them again.
                with contextlib.suppress(kafka.IllegalStateError):
                    self.consumer.seek(tp, fetched[0].offset)
                continue
            if tp in self.done:
                continue
            if fetched[0].offset != state.next_offset:
                observe.event("offset gap", logging.DEBUG, topic=tp.topic, partition=tp.partition,
                              expected=state.next_offset, got=fetched[0].offset)
            records = fetched
            if self.once and fetched[-1].offset >= self.ends[tp]:
                records = [r for r in fetched if r.offset < self.ends[tp]]
            hours = hours_of(self.archive_settings.event_time_spec(tp.topic), records)
            ts_types = [_TS_TYPES.get(r.timestamp_type, "CreateTime") for r in records]
            rolls += state.add_records(records, hours, ts_types, now)
            self._count_taken(tp, state, records)
        return rolls

    def _count_taken(self, tp: TopicPartition, state: PartitionState, records: list[Any]) -> None:
        """Count the records buffered; a blocked partition is read again from where it stopped."""
        taken = len(records)
        if state.blocked_at is not None:  # read the rest again once uploads caught up
            taken = sum(1 for r in records if r.offset < state.blocked_at)
            self.consumer.seek(tp, state.blocked_at)
            self.blocked.add(tp)
        self.summary.records += taken
        self.progress_bar.advance(taken)
        if taken:
            self.dirty.add(tp)

    async def _on_timers(self, now: float) -> list[Roll]:
        """Once a second: idle and age rolls, passed recorded cuts, and periodic commits."""
        if now - self._last_tick < 1.0:
            return []
        self._last_tick = now
        rolls: list[Roll] = []
        for state in self.states.values():
            rolls += state.roll_expired(now)
        observe.BUFFERED.set(self._held())
        rolls += await self._passed()
        interval = self.archive_settings.commit_interval_seconds
        if now - self._last_commit >= interval and self.dirty:
            await self._commit(set(self.dirty))
            self._last_commit = now
        return rolls

    async def _passed(self) -> list[Roll]:
        """Roll rebuilt cuts whose last record the consumer has moved past without seeing."""
        rolls: list[Roll] = []
        for tp, state in list(self.states.items()):
            if state.rebuilding:
                position = await self.consumer.position(tp)
                passed = state.passed(position)
                for r in passed:
                    observe.event("recorded cut passed", topic=tp.topic, partition=tp.partition,
                                  cut=[r.cut.first, r.cut.last], records=len(r.cols),
                                  position=position, next_offset=state.next_offset)
                rolls += passed
                if (rewind := state.take_rewind()) is not None:  # a rebuild pass is over:
                    self.consumer.seek(tp, rewind)  # read what it skipped
        return rolls

    def _relieve_memory(self) -> list[Roll]:
        rolls = relieve_memory(self.states.values(), self.archive_settings.memory_budget_bytes,
                               self.uploads.held_bytes)
        self.summary.peak_buffered_bytes = max(self.summary.peak_buffered_bytes, self._held())
        return rolls

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
    async def _intend(self, rolls: list[Roll]) -> None:
        """Commit the decided cuts, then start their uploads (never the other way round)."""
        tps = {TopicPartition(r.topic, r.partition) for r in rolls}
        if not await self._commit(tps):
            return
        for roll in rolls:
            state = self.states[TopicPartition(roll.topic, roll.partition)]
            observe.event("file decided", logging.DEBUG, topic=roll.topic,
                          partition=roll.partition, hour=roll.cut.hour, first=roll.cut.first,
                          last=roll.cut.last, records=len(roll.cols), rebuilt=roll.rebuilt)
            while self.uploads.full:
                await self._reap(block=True)
            self.uploads.start(state, roll)

    async def _reap(self, *, block: bool) -> None:
        """Collect finished uploads; with ``block``, wait for at least one."""
        if not self.uploads:
            return
        if block:
            await self.uploads.wait()
        for state, roll, written in self.uploads.finished():
            observe.event("file done", logging.DEBUG, topic=roll.topic, partition=roll.partition,
                          first=roll.cut.first, last=roll.cut.last, bytes=written)
            state.done(roll.cut)
            self.dirty.add(TopicPartition(roll.topic, roll.partition))
            if written:
                self.summary.files += 1
                self.summary.bytes_written += written
                observe.FILES.labels(roll.topic).inc()
                observe.BYTES.labels(roll.topic).inc(written)
                observe.RECORDS.labels(roll.topic).inc(len(roll.cols))

    async def _drain(self, tps: set[TopicPartition] | None = None) -> None:
        """Wait until no file of ``tps`` (of any partition: None) is in flight."""
        while self.uploads and (tps is None or any(
                TopicPartition(*where) in tps for where in self.uploads.partitions())):
            await self._reap(block=True)

    # -- progress --------------------------------------------------------------------------
    def _offsets_to_commit(self, tps: set[TopicPartition]) -> dict[TopicPartition, Any]:
        """The progress of ``tps`` as commit offsets with metadata; updates the gauges."""
        offsets = {}
        for tp in tps:
            state = self.states.get(tp)
            if state is None:
                continue
            progress = state.progress()
            offsets[tp] = kafka.OffsetAndMetadata(progress.offset, encode_progress(progress))
            observe.COMMITTED.labels(tp.topic, str(tp.partition)).set(progress.offset)
            highwater = self.consumer.highwater(tp)
            if highwater is not None:
                observe.LAG.labels(tp.topic, str(tp.partition)).set(highwater - progress.offset)
        return offsets

    async def _commit(self, tps: set[TopicPartition], *, reset: bool = True) -> bool:
        """Commit the progress of ``tps``; False if the group fenced the commit.

        With ``reset``, fenced partitions then resume from what Kafka holds.
        """
        offsets = self._offsets_to_commit(tps)
        if not offsets:
            return True
        observe.event("commit", logging.DEBUG, progress={
            partition_name(tp): om.metadata + f"@{om.offset}" for tp, om in offsets.items()})
        try:
            await self.consumer.commit(offsets)
        except kafka.COMMIT_REFUSED as exc:
            observe.event("commit refused", reason=str(exc), reset=reset,
                          partitions=[partition_name(tp) for tp in offsets])
            if reset:
                await self._reset(set(offsets))
            return False
        self.dirty -= set(offsets)
        return True

    async def _reset(self, tps: set[TopicPartition]) -> None:
        """Forget local state of ``tps`` and resume them from what Kafka holds."""
        for tp in tps:
            self.states.pop(tp, None)
        still = tps & self.consumer.assignment()
        if still:
            await self._adopt(still)

    async def _adopt(self, tps: set[TopicPartition]) -> None:
        """Build states of ``tps`` from committed progress.

        This runs in aiokafka's coordinator task, concurrently with the loop: a state appears
        only once it is complete.
        """
        found = await adoption.committed_progress(self.kafka_settings,
                                                  self.archive_settings.group_id, tps)
        await adoption.refuse_lost_progress(self.uploads.writer.storage, found, tps)
        starts, ends = await kafka.log_offsets(self.kafka_settings, sorted(tps),
                                               self.archive_settings.isolation_level)
        if self.once:
            self.ends.update({tp: o for tp, o in ends.items() if tp not in self.ends})
        for tp in tps:
            hashed = spec_hash(self.archive_settings.event_time_spec(tp.topic).fingerprint)
            progress = found.get(tp, Progress(0, (), hashed))
            adoption.check_event_time_setting(tp, progress, hashed)
            # Positions are set here by seek() alone, never by aiokafka's reset path, which
            # raced with offset lookups (seen: a position at the end offset with no record
            # delivered). Below the log start offset (retention) there is nothing to read.
            start = starts.get(tp, 0)
            if tp in found and start > progress.offset:
                adoption.report_retention_loss(tp, progress.offset, start)
            self.consumer.seek(tp, max(progress.offset, start))
            self.states[tp] = PartitionState(tp.topic, tp.partition, progress, self.limits,
                                             hashed)
        self._report_adopted(tps)

    def _report_adopted(self, tps: set[TopicPartition]) -> None:
        observe.event("partitions adopted", partitions={
            partition_name(tp): {"resume": self.states[tp].resume,
                                 "cuts": len(self.states[tp].cuts), "end": self.ends.get(tp)}
            for tp in tps})
        if self.once:
            self.progress_bar.total(sum(max(0, self.ends[tp] - st.resume)
                                        for tp, st in self.states.items() if tp in self.ends))

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """Finish uploads of revoked partitions, commit their progress, forget them."""
        mine = set(revoked) & set(self.states)
        if not mine:
            return
        await self._drain(mine)
        with contextlib.suppress(kafka.AIOKafkaError):
            await self._commit(mine, reset=False)
        for tp in mine:
            self.states.pop(tp, None)
            self.done.discard(tp)
        observe.event("partitions revoked", partitions=sorted(partition_name(tp) for tp in mine))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        """Load the committed progress of newly assigned partitions."""
        try:
            await self._adopt(set(assigned))
        except Exception as exc:  # aiokafka would only log it: end the run instead
            self.fatal = exc
            self.stopping.set()
            if not isinstance(exc, EventVaultError):  # expected: the run's one error line
                raise
            return
        observe.event("partitions assigned",
                      partitions=sorted(partition_name(tp) for tp in assigned))

    # -- bounded runs ----------------------------------------------------------------------
    async def _bounded_run_done(self) -> bool:
        """Whether a ``once`` run has read every assigned partition to its end offset."""
        for tp, state in self.states.items():
            if tp in self.done or state.deferred:  # records skipped by a rebuild pass come again
                continue
            end = self.ends.get(tp, 0)
            if state.next_offset >= end or await self.consumer.position(tp) >= end:
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
        rolls: list[Roll] = []
        for tp, state in self.states.items():
            rolls += state.finish(max(self.ends.get(tp, 0), state.next_offset))
        if rolls:
            await self._intend(rolls)
