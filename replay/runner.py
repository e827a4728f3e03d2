"""A replay run: plan, preflight, then transactions of records with their progress.

Exactly once in the target (for read_committed consumers): every transaction carries the
records and, through ``send_offsets_to_transaction``, the next source offset of every source
partition as commit metadata of the group ``eventvault-replay-<id>`` on the target topic's
partitions. Both become visible together or not at all. The producer's transactional id is
``eventvault-replay-<id>``, so a resumed run fences (and aborts) the killed run's open
transaction and goes on from the committed progress. Before each commit, the transaction's
map from source to target offsets is written to ``_replays/<id>/offsets/<n>.parquet``; files
numbered past the committed transaction count are ignored and overwritten.
"""

from __future__ import annotations

import asyncio
import io
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError as AIOKafkaError
from aiokafka.producer.message_accumulator import BatchBuilder

from archiver.errors import ConfigError
from archiver.eventtime import EventTimeSpec, event_time_us
from archiver.layout import FileRef, parse_key
from archiver.settings import Settings
from archiver.storage import Storage, open_storage
from replay import target as tgt
from replay.errors import PreflightError, RejectedError
from replay.plan import (
    Plan,
    clusters,
    decode_progress,
    encode_progress,
    partitioner,
    plan_key,
    provenance,
    select_files,
)
from replay.preflight import Finding, preflight
from replay.report import MAP_SCHEMA, build_report
from replay.source import PartitionSummary, Source


def new_id(now: datetime) -> str:
    """A fresh replay id: UTC start time and random hex."""
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


@dataclass
class Pacing:
    """Upper limits on records/s and bytes/s (None: unlimited)."""

    records_per_s: float | None = None
    bytes_per_s: float | None = None
    started: float = field(default_factory=time.monotonic)

    def delay(self, records: int, nbytes: int, now: float) -> float:
        """Seconds to wait at ``now`` so that ``records`` and ``nbytes`` keep both limits."""
        due = max(records / self.records_per_s if self.records_per_s else 0.0,
                  nbytes / self.bytes_per_s if self.bytes_per_s else 0.0)
        return max(0.0, self.started + due - now)

    async def wait(self, records: int, nbytes: int) -> None:
        """Sleep until ``records`` and ``nbytes`` are within both limits."""
        ahead = self.delay(records, nbytes, time.monotonic())
        if ahead > 0.01:
            await asyncio.sleep(ahead)


@dataclass
class Prepared:
    """A replay after planning and preflight, before producing."""

    plan: Plan
    info: tgt.TargetInfo | None
    files: dict[int, list[FileRef]]
    ranges: dict[int, tuple[int, int | None]]
    summary: list[PartitionSummary]
    findings: list[Finding]
    seq: int
    next_offsets: dict[int, int]


async def prepare(settings: Settings, plan: Plan, source: Source, storage: Storage,
                  force: bool) -> Prepared:
    """Read committed progress, plan files, summarise the rest of the selection, preflight."""
    kafka = settings.replay.target or settings.kafka
    info = await tgt.describe(kafka, plan.target.topic)
    seq, next_offsets = 0, dict[int, int]()
    if info is not None:
        seq, next_offsets = decode_progress(await tgt.committed(
            kafka, group_id(plan.replay_id), plan.target.topic, info.partitions))
    sel = plan.selection
    refs = [r for r in map(parse_key, storage.list(f"topic={sel.topic}/")) if r is not None]
    files = select_files(refs, sel, source.record_time)
    ranges = {}
    for p in files:
        lo, hi = sel.offset_range(p)
        ranges[p] = (max(lo, next_offsets.get(p, lo)), hi)
    summary = source.summary([f for fs in files.values() for f in fs], ranges)
    now_ms = int(time.time() * 1000)
    findings = preflight(info, plan.target, sel.topic, summary, now_ms, force)
    return Prepared(plan, info, files, ranges, summary, findings, seq, next_offsets)


def group_id(replay_id: str) -> str:
    """The group whose commit metadata holds a replay's progress."""
    return f"eventvault-replay-{replay_id}"


@dataclass
class _Txn:
    """Records of the open transaction: batches being filled and batches sent."""

    builders: dict[int, tuple[BatchBuilder, list[tuple[int, int]]]] = field(default_factory=dict)
    sent: list[tuple[int, list[tuple[int, int]], asyncio.Future[Any]]] = field(
        default_factory=list)
    records: int = 0
    nbytes: int = 0


class Producing:
    """The produce loop of one run (see the module docstring)."""

    def __init__(self, settings: Settings, prep: Prepared, storage: Storage, source: Source,
                 spec: EventTimeSpec, pacing: Pacing, bar: Any) -> None:
        assert prep.info is not None
        self.settings, self.prep, self.storage, self.source = settings, prep, storage, source
        self.plan, self.info, self.spec, self.pacing, self.bar = (
            prep.plan, prep.info, spec, pacing, bar)
        self.seq = prep.seq
        self.next_offsets = dict(prep.next_offsets)
        self.place = partitioner(self.plan.target, self.info.partitions)
        self.producer = tgt.producer(settings.replay.target or settings.kafka,
                                     group_id(self.plan.replay_id), settings.replay.batch_bytes)
        self.txn = _Txn()
        self.records = 0  # appended by this run (what pacing counts)
        self.nbytes = 0
        self.delivered = 0  # committed by this run
        sel = self.plan.selection
        self.by_event_time = spec.field is not None and (
            sel.start_us is not None or sel.end_us is not None)

    async def run(self) -> int:
        """Produce the rest of the selection; return the records delivered by this run."""
        try:
            await self.producer.start()  # init_transactions: fences an earlier run's producer
            await self.producer.begin_transaction()
            self.pacing.started = time.monotonic()
            for partition, files in self.prep.files.items():
                for cluster in clusters(files):
                    for batch in self.source.batches(cluster,
                                                     {partition: self.prep.ranges[partition]}):
                        await self._add_batch(batch)
            await self._commit()
        except AIOKafkaError as exc:
            raise RejectedError(f"replay {self.plan.replay_id}: {exc}", retriable=True,
                                replay_id=self.plan.replay_id) from exc
        finally:
            await self.producer.stop()
        return self.delivered

    def _wanted(self, ts_us: int, value: bytes | None) -> bool:
        """Whether a record's JSON event time is within --start/--end."""
        sel = self.plan.selection
        at = event_time_us(self.spec, ts_us // 1000, value)
        return at is not None and (sel.start_us is None or at >= sel.start_us) and (
            sel.end_us is None or at < sel.end_us)

    async def _add_batch(self, batch: pa.RecordBatch) -> None:
        cols = batch.to_pydict()
        sel_topic, rid = self.plan.selection.topic, self.plan.replay_id
        keep_time = self.plan.target.timestamp == "original"
        limits = self.settings.replay
        for p, off, ts, key, value, headers in zip(
                cols["partition"], cols["offset"], cols["ts"], cols["key"], cols["value"],
                cols["headers"], strict=True):
            if self.by_event_time and not self._wanted(ts, value):
                continue
            hdrs = [(h["key"], h["value"]) for h in headers]
            if self.plan.target.provenance:
                hdrs += provenance(rid, sel_topic, p, off)
            stamp = ts // 1000 if keep_time and ts >= 0 else None
            await self._append(self.place(p, key), p, off, stamp, key, value, hdrs)
            self.next_offsets[p] = off + 1
            size = len(key or b"") + len(value or b"")
            self.txn.records += 1
            self.txn.nbytes += size
            self.records += 1
            self.nbytes += size
            if (self.txn.records >= limits.transaction_records
                    or self.txn.nbytes >= limits.transaction_bytes):
                await self._commit()
            if self.pacing.records_per_s or self.pacing.bytes_per_s:
                await self.pacing.wait(self.records, self.nbytes)
        self.bar.update(batch.num_rows)

    async def _append(self, tp: int, p: int, off: int, stamp: int | None, key: bytes | None,
                      value: bytes | None, hdrs: Sequence[tuple[str, bytes | None]]) -> None:
        entry = self.txn.builders.get(tp)
        if entry is None:
            entry = self.txn.builders[tp] = (self.producer.create_batch(), [])
        if entry[0].append(timestamp=stamp, key=key, value=value, headers=hdrs) is None:
            await self._send(tp)
            entry = self.txn.builders[tp] = (self.producer.create_batch(), [])
            entry[0].append(timestamp=stamp, key=key, value=value, headers=hdrs)
        entry[1].append((p, off))

    async def _send(self, tp: int) -> None:
        builder, origins = self.txn.builders.pop(tp)
        fut = await self.producer.send_batch(builder, self.plan.target.topic, partition=tp)
        self.txn.sent.append((tp, origins, fut))

    async def _commit(self) -> None:
        """Send what is buffered, write the offset map, commit records and progress."""
        for tp in list(self.txn.builders):
            await self._send(tp)
        if not self.txn.sent:
            return
        rows: dict[str, list[int]] = {name: [] for name in MAP_SCHEMA.names}
        for tp, origins, fut in self.txn.sent:
            try:
                base = (await fut).offset
            except AIOKafkaError as exc:
                raise self._rejected(origins, exc) from exc
            partitions, offsets = zip(*origins, strict=True)
            rows["source_partition"] += partitions
            rows["source_offset"] += offsets
            rows["target_partition"] += [tp] * len(origins)
            rows["target_offset"] += range(base, base + len(origins))
        self.seq += 1
        sink = io.BytesIO()
        pq.write_table(pa.table(rows, schema=MAP_SCHEMA), sink, compression="zstd")
        self.storage.put(plan_key(self.plan.replay_id, f"offsets/{self.seq:08d}.parquet"),
                         sink.getvalue())
        n = self.info.partitions
        await self.producer.send_offsets_to_transaction(
            {TopicPartition(self.plan.target.topic, t):
             (0, encode_progress(self.seq, self.next_offsets, t, n)) for t in range(n)},
            group_id(self.plan.replay_id))
        await self.producer.commit_transaction()
        self.delivered += self.txn.records
        self.txn = _Txn()
        await self.producer.begin_transaction()

    def _rejected(self, origins: list[tuple[int, int]], exc: AIOKafkaError) -> RejectedError:
        p, first = origins[0]
        last = origins[-1][1]
        where = f"{first}" if first == last else f"{first}..{last}"
        return RejectedError(
            f"{self.plan.target.topic} refused record {self.plan.selection.topic}/{p}/{where}: "
            f"{type(exc).__name__}: {exc}; nothing of this transaction is committed; fix the "
            f"cause, then: eventvault replay --resume {self.plan.replay_id}",
            topic=self.plan.selection.topic, partition=p, offsets=(first, last),
            replay_id=self.plan.replay_id)


async def replay(settings: Settings, plan: Plan, *, resume: bool, dry_run: bool, force: bool,
                 pacing: Pacing, bar_factory: Any) -> dict[str, Any]:
    """Run (or dry-run) ``plan``; return the report (also stored, unless a dry run)."""
    storage = open_storage(settings.storage)
    spec = settings.archive.event_time_spec(plan.selection.topic)
    source = Source(settings.storage, plan.selection, spec.field is None)
    try:
        prep = await prepare(settings, plan, source, storage, force)
        fatal = [f.message for f in prep.findings if f.fatal]
        if dry_run:
            return build_report(storage, prep, "dry-run", 0, 0.0, prep.seq)
        if fatal:
            raise PreflightError(f"replay refused: {fatal[0]}"
                                 + (f" (and {len(fatal) - 1} more)" if len(fatal) > 1 else ""),
                                 findings=fatal)
        if not resume:
            storage.put(plan_key(plan.replay_id, "plan.json"), plan.to_json().encode())
        started = time.monotonic()
        total = sum(s.records for s in prep.summary)
        with bar_factory(total) as bar:
            producing = Producing(settings, prep, storage, source, spec, pacing, bar)
            try:
                await producing.run()
            except RejectedError:
                build_report(storage, prep, "failed", producing.delivered,
                             time.monotonic() - started, producing.seq)
                raise
        return build_report(storage, prep, "completed", producing.delivered,
                            time.monotonic() - started, producing.seq)
    finally:
        source.close()


def load_plan(storage: Storage, replay_id: str) -> Plan:
    """The stored plan of replay ``replay_id``."""
    key = plan_key(replay_id, "plan.json")
    if not storage.exists(key):
        raise ConfigError(f"no replay {replay_id} in the archive (no {key})", setting="--resume")
    return Plan.from_json(storage.get(key).decode())


def now() -> datetime:
    """The current UTC time."""
    return datetime.now(UTC)
