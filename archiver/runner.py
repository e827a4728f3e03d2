"""The archiver: a consumer-group member that turns records into archive files.

The loop: fetch a batch; feed each record to its partition's
:class:`~archiver.batching.PartitionState`; for every file that decides, first commit the
partition's progress (offset plus decided cuts: the intent), then encode and upload the file
(archiver.encoder, a thread pool); commit advanced progress as uploads finish.
``once`` stops at the end offsets seen when each partition was first assigned. See
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

from aiokafka import ConsumerRebalanceListener
from aiokafka import TopicPartition as TP
from aiokafka.errors import CommitFailedError, IllegalStateError, RebalanceInProgressError

from archiver import format as fmt
from archiver import kafka, observe
from archiver import progress as prog
from archiver.batching import Limits, PartitionState, Roll, relieve_memory
from archiver.encoder import Writer
from archiver.errors import ArchiveStateError, KafkaError
from archiver.layout import hours_of
from archiver.settings import Settings
from archiver.storage import Storage

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


class Archiver(ConsumerRebalanceListener):  # type: ignore[misc]
    """Archive the configured topics into ``storage``."""

    def __init__(self, settings: Settings, storage: Storage, *, once: bool = False,
                 show_progress: bool = False) -> None:
        self.s = settings.archive
        self.kafka_settings = settings.kafka
        self.once = once
        self.limits = Limits(self.s.max_file_records, self.s.max_file_bytes, self.s.idle_seconds,
                             self.s.max_file_age_seconds, self.s.max_cuts_per_partition,
                             self.s.hour_grace_hours)
        self.states: dict[TP, PartitionState] = {}
        self.ends: dict[TP, int] = {}
        self.done: set[TP] = set()
        self.inflight: dict[asyncio.Future[int], tuple[PartitionState, Roll, int]] = {}
        self.inflight_bytes = 0
        self.dirty: set[TP] = set()
        self.blocked: set[TP] = set()
        self.summary = Summary()
        self.writer = Writer(storage, self.s.zstd_level, self.s.upload_concurrency)
        self.ui = observe.Progress(once and show_progress)
        self.stopping: asyncio.Event
        self.consumer: Any = None
        self.fatal: Exception | None = None

    def stop(self) -> None:
        """Ask a running archiver to stop after its current batch (uploads finish first)."""
        self.stopping.set()

    # -- lifecycle -------------------------------------------------------------------------
    async def run(self) -> Summary:
        """Run until stopped (or, with ``once``, until the end offsets seen are archived)."""
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        self.stopping = asyncio.Event()
        self.consumer = kafka.consumer(self.kafka_settings, self.s.group_id,
                                       self.s.isolation_level,
                                       min(50 << 20, self.s.memory_budget_bytes // 8),
                                       self.s.session_timeout_ms)
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
            self.writer.close()
            self.ui.close()
        self.summary.seconds = time.monotonic() - started
        self.summary.committed = {f"{tp.topic}[{tp.partition}]": st.progress().offset
                                  for tp, st in sorted(self.states.items())}
        return self.summary

    async def _start(self) -> None:
        try:
            await self.consumer.start()
            if self.s.topics:
                known = await self.consumer.topics()
                missing = sorted(set(self.s.topics) - known)
                if missing:
                    where = self.kafka_settings.bootstrap_servers
                    raise KafkaError(f"topic(s) not found on {where}: {', '.join(missing)}",
                                     topics=missing)
                self.consumer.subscribe(self.s.topics, listener=self)
            elif self.s.topics_regex:
                self.consumer.subscribe(pattern=f"^(?:{self.s.topics_regex})$", listener=self)
            else:
                raise KafkaError("no topics to archive: set archive.topics or archive.topics_regex")
        except kafka.AIOKafkaError as exc:
            raise KafkaError(f"cannot reach Kafka at {self.kafka_settings.bootstrap_servers}: "
                             f"{exc}", retriable=True) from exc

    async def _loop(self) -> None:
        last_tick = last_commit = time.monotonic()
        waited = 0.0
        while not self.stopping.is_set():
            batch = await self.consumer.getmany(timeout_ms=200, max_records=20_000)
            now = time.monotonic()
            rolls = self._feed(batch, now)
            if now - last_tick >= 1.0:
                rolls += self._tick(now) + await self._passed()
                if now - last_commit >= self.s.commit_interval_seconds and self.dirty:
                    await self._commit(set(self.dirty))
                    last_commit = now
                last_tick = now
            rolls += relieve_memory(self.states.values(), self.s.memory_budget_bytes,
                                    self.inflight_bytes)
            held = self._buffered() + self.inflight_bytes
            self.summary.peak_buffered_bytes = max(self.summary.peak_buffered_bytes, held)
            if rolls:
                await self._intend(rolls)
            if self.blocked:
                await self._drain(self.blocked)
                await self._commit(self.blocked)
                self.blocked.clear()
            if self.once:
                await self._check_done()
                if self.states and self.done >= set(self.states):
                    observe.event("end offsets reached", records=self.summary.records,
                                  buffered=self._buffered(), uploading=len(self.inflight))
                    return
                waited = 0.0 if self.states else waited + 0.2
                if waited > 60:
                    raise KafkaError("no partitions were assigned within 60 s", retriable=True)
            await self._reap(block=self._over_budget())

    # -- records ---------------------------------------------------------------------------
    def _feed(self, batch: dict[TP, list[Any]], now: float) -> list[Roll]:
        """Buffer a fetched batch; partitions that hit their cut limit go to ``self.blocked``."""
        rolls: list[Roll] = []
        for tp, fetched in batch.items():
            state = self.states.get(tp)
            if state is None:
                # Fetched before the assignment callback built its state: read them again.
                with contextlib.suppress(IllegalStateError):
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
            hours = hours_of(self.s.event_time_spec(tp.topic), records)
            ts_types = [_TS_TYPES.get(r.timestamp_type, "CreateTime") for r in records]
            rolls += state.add_records(records, hours, ts_types, now)
            n = len(records)
            if state.blocked_at is not None:  # read the rest again once uploads caught up
                n = sum(1 for r in records if r.offset < state.blocked_at)
                self.consumer.seek(tp, state.blocked_at)
                self.blocked.add(tp)
            self.summary.records += n
            self.ui.advance(n)
            if n:
                self.dirty.add(tp)
        return rolls

    def _tick(self, now: float) -> list[Roll]:
        rolls: list[Roll] = []
        for state in self.states.values():
            rolls += state.roll_expired(now)
        observe.BUFFERED.set(self._buffered() + self.inflight_bytes)
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
        return rolls

    def _buffered(self) -> int:
        return sum(st.buffered_bytes for st in self.states.values())

    def _over_budget(self) -> bool:
        return self._buffered() + self.inflight_bytes > self.s.memory_budget_bytes

    # -- files -----------------------------------------------------------------------------
    async def _intend(self, rolls: list[Roll]) -> None:
        """Commit the decided cuts, then start their uploads (never the other way round)."""
        tps = {TP(r.topic, r.partition) for r in rolls}
        if not await self._commit(tps):
            return
        for roll in rolls:
            state = self.states[TP(roll.topic, roll.partition)]
            observe.event("file decided", logging.DEBUG, topic=roll.topic,
                          partition=roll.partition, hour=roll.cut.hour, first=roll.cut.first,
                          last=roll.cut.last, records=len(roll.cols), rebuilt=roll.rebuilt)
            while len(self.inflight) >= 2 * self.s.upload_concurrency:
                await self._reap(block=True)
            fut = self.writer.submit(roll)
            # While a file is encoded, its records, the Arrow table and the Parquet bytes
            # coexist: count it at 2.5 times its buffered size.
            held = roll.nbytes * 5 // 2
            self.inflight[fut] = (state, roll, held)
            self.inflight_bytes += held

    async def _reap(self, *, block: bool) -> None:
        """Collect finished uploads; with ``block``, wait for at least one."""
        if not self.inflight:
            return
        if block:
            await asyncio.wait(self.inflight, return_when=asyncio.FIRST_COMPLETED)
        for fut in [f for f in self.inflight if f.done()]:
            entry = self.inflight.pop(fut, None)
            if entry is None:
                continue  # reaped by the rebalance listener meanwhile
            state, roll, nbytes = entry
            self.inflight_bytes -= nbytes
            written = fut.result()  # a storage error ends the run; progress stays consistent
            observe.event("file done", logging.DEBUG, topic=roll.topic, partition=roll.partition,
                          first=roll.cut.first, last=roll.cut.last, bytes=written)
            state.done(roll.cut)
            tp = TP(roll.topic, roll.partition)
            self.dirty.add(tp)
            if written:
                self.summary.files += 1
                self.summary.bytes_written += written
                observe.FILES.labels(roll.topic).inc()
                observe.BYTES.labels(roll.topic).inc(written)
                observe.RECORDS.labels(roll.topic).inc(len(roll.cols))

    async def _drain(self, tps: set[TP] | None = None) -> None:
        while any(tps is None or TP(r.topic, r.partition) in tps
                  for _, r, _ in self.inflight.values()):
            await self._reap(block=True)

    # -- progress --------------------------------------------------------------------------
    async def _commit(self, tps: set[TP], *, reset: bool = True) -> bool:
        """Commit the progress of ``tps``; False if the group fenced the commit.

        With ``reset``, fenced partitions then resume from what Kafka holds.
        """
        offsets = {}
        for tp in tps:
            state = self.states.get(tp)
            if state is not None:
                p = state.progress()
                offsets[tp] = kafka.OffsetAndMetadata(p.offset, prog.encode(p))
                observe.COMMITTED.labels(tp.topic, str(tp.partition)).set(p.offset)
                highwater = self.consumer.highwater(tp)
                if highwater is not None:
                    observe.LAG.labels(tp.topic, str(tp.partition)).set(highwater - p.offset)
        if not offsets:
            return True
        observe.event("commit", logging.DEBUG, progress={
            f"{tp.topic}[{tp.partition}]": om.metadata + f"@{om.offset}"
            for tp, om in offsets.items()})
        try:
            await self.consumer.commit(offsets)
        except (CommitFailedError, RebalanceInProgressError, IllegalStateError) as exc:
            observe.event("commit refused", reason=str(exc), reset=reset,
                          partitions=[f"{t.topic}[{t.partition}]" for t in offsets])
            if reset:
                await self._reset(set(offsets))
            return False
        self.dirty -= set(offsets)
        return True

    async def _reset(self, tps: set[TP]) -> None:
        """Forget local state of ``tps`` and resume them from what Kafka holds."""
        for tp in tps:
            self.states.pop(tp, None)
        still = tps & self.consumer.assignment()
        if still:
            await self._adopt(still)

    async def _adopt(self, tps: set[TP]) -> None:
        """Build states of ``tps`` from committed progress.

        This runs in aiokafka's coordinator task, concurrently with the loop: a state appears
        only once it is complete.
        """
        found = await kafka.committed_progress(self.kafka_settings, self.s.group_id, tps)
        starts, ends = await kafka.log_offsets(self.kafka_settings, sorted(tps),
                                               self.s.isolation_level)
        if self.once:
            self.ends.update({tp: o for tp, o in ends.items() if tp not in self.ends})
        for tp in tps:
            spec_hash = prog.spec_hash(self.s.event_time_spec(tp.topic).fingerprint)
            progress = found.get(tp, prog.Progress(0, (), spec_hash))
            if progress.cuts and progress.spec_hash != spec_hash:
                raise ArchiveStateError(
                    f"the event-time setting of topic {tp.topic} changed while files of "
                    f"partition {tp.partition} were in progress; restore the previous setting, "
                    "let one `eventvault archive --once` finish, then change it",
                    topic=tp.topic, partition=tp.partition)
            # Positions are set here by seek() alone, never by aiokafka's reset path, which
            # raced with offset lookups (seen: a position at the end offset with no record
            # delivered). Below the log start offset (retention) there is nothing to read.
            start = starts.get(tp, 0)
            if tp in found and start > progress.offset:
                observe.event("records deleted by retention before they were archived",
                              logging.ERROR, topic=tp.topic, partition=tp.partition,
                              lost_from=progress.offset, lost_to=start - 1,
                              records=start - progress.offset)
                observe.LOST.labels(tp.topic, str(tp.partition)).inc(start - progress.offset)
            self.consumer.seek(tp, max(progress.offset, start))
            self.states[tp] = PartitionState(tp.topic, tp.partition, progress, self.limits,
                                             spec_hash)
        observe.event("partitions adopted", partitions={
            f"{tp.topic}[{tp.partition}]": {"resume": self.states[tp].resume,
                                            "cuts": len(self.states[tp].cuts),
                                            "end": self.ends.get(tp)} for tp in tps})
        if self.once:
            self.ui.total(sum(max(0, self.ends[tp] - st.resume)
                              for tp, st in self.states.items() if tp in self.ends))

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
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
        observe.event("partitions revoked", partitions=sorted(f"{t.topic}[{t.partition}]"
                                                              for t in mine))

    async def on_partitions_assigned(self, assigned: set[TP]) -> None:
        """Load the committed progress of newly assigned partitions."""
        try:
            await self._adopt(set(assigned))
        except Exception as exc:  # aiokafka would only log it: end the run instead
            self.fatal = exc
            self.stopping.set()
            raise
        observe.event("partitions assigned", partitions=sorted(
            f"{t.topic}[{t.partition}]" for t in assigned))

    # -- bounded runs ----------------------------------------------------------------------
    async def _check_done(self) -> None:
        for tp, state in self.states.items():
            if tp in self.done:
                continue
            position = await self.consumer.position(tp)
            if position >= self.ends.get(tp, 0) or state.next_offset >= self.ends.get(tp, 0):
                self.done.add(tp)
                self.consumer.pause(tp)

    async def _finish(self) -> None:
        rolls: list[Roll] = []
        for tp, state in self.states.items():
            rolls += state.finish(max(self.ends.get(tp, 0), state.next_offset))
        if rolls:
            await self._intend(rolls)

