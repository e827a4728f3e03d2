"""The produce loop of one replay run: transactions of records, each with its checkpoint.

Every transaction carries its records and, through ``send_offsets_to_transaction``, the
checkpoint (eventvault.replay.checkpoint); both become visible together or not at all. Before
each commit, the transaction's map from source to target offsets is written to
``_replays/<id>/offsets/<n>-<producer epoch>-<run token>.parquet`` (the token is random per
run and also in the checkpoint); once the commit returned, ``_replays/<id>/committed/<n>.json``
names that file. Files numbered past the committed transaction count are ignored, and of
several files of one number the one its marker names counts (eventvault.replay.report).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from eventvault import format as fmt
from eventvault import kafka
from eventvault.errors import BrokerError
from eventvault.eventtime import EventTimeSpec
from eventvault.kafka import TRANSACTION_LOST, AIOKafkaError, BatchBuilder, TopicPartition
from eventvault.layout import replay_key
from eventvault.observe import ProgressBar
from eventvault.query.selection import clusters, event_time_within
from eventvault.replay.checkpoint import RUN_TOKEN_CHARS, encode_checkpoint, group_id
from eventvault.replay.errors import FencedError, RejectedError
from eventvault.replay.partitioning import partitioner
from eventvault.replay.plan import provenance
from eventvault.replay.prepare import Prepared
from eventvault.replay.report import FIRST_COMMIT, map_file, record_commit
from eventvault.replay.source import Source
from eventvault.settings import Settings
from eventvault.storage import Storage

Headers = list[tuple[str, bytes | None]]
Origins = list[tuple[int, int]]
"""(source partition, source offset) of each record in a batch, in order."""


@dataclass
class Pacing:
    """Upper limits on records/s and bytes/s (None: unlimited)."""

    records_per_s: float | None = None
    bytes_per_s: float | None = None
    started: float = field(default_factory=time.monotonic)

    @property
    def limited(self) -> bool:
        """Whether any limit is set."""
        return bool(self.records_per_s or self.bytes_per_s)

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


async def fencing_producer(settings: Settings, replay_id: str) -> Any:
    """The replay's transactional producer, started: every earlier run of it is fenced.

    ``init_transactions`` (in ``start()``) bumps the epoch of the transactional id
    ``eventvault-replay-<id>`` and returns once the broker has finished an earlier run's open
    transaction (aborted; or committed, if that run had asked to commit it), so the progress
    read afterwards is final and no earlier run can add to it.
    """
    producer = kafka.transactional_producer(
        settings.replay.target or settings.kafka, group_id(replay_id),
        settings.replay.batch_bytes, settings.replay.transaction_timeout_ms)
    try:
        await producer.start()
    except AIOKafkaError as exc:
        await producer.stop()
        raise BrokerError(f"cannot start the producer of replay {replay_id}: {exc}",
                          retriable=exc.retriable, replay_id=replay_id) from exc
    return producer


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a batch's failure as seen (the error that stopped the run is reported)."""
    if not future.cancelled():
        future.exception()


@dataclass
class _Transaction:
    """Records of the open transaction: batches being filled and batches sent."""

    builders: dict[int, tuple[BatchBuilder, Origins]] = field(default_factory=dict)
    sent: list[tuple[int, Origins, asyncio.Future[Any]]] = field(default_factory=list)
    records: int = 0
    nbytes: int = 0
    opened: float | None = None  # monotonic time of its first record


class ReplayProducer:
    """Produces the rest of a prepared selection in transactions (see the module docstring)."""

    def __init__(self, settings: Settings, prepared: Prepared, storage: Storage, source: Source,
                 spec: EventTimeSpec, pacing: Pacing, bar: ProgressBar, producer: Any) -> None:
        assert prepared.info is not None
        self.limits = settings.replay
        self.prepared, self.storage, self.source = prepared, storage, source
        self.plan, self.info, self.spec, self.pacing, self.bar = (
            prepared.plan, prepared.info, spec, pacing, bar)
        self.transactions = prepared.checkpoint.transactions
        self.next_offsets = dict(prepared.checkpoint.next_offsets)
        self.place = partitioner(self.plan.target, self.info.partitions)
        self.producer = producer  # started by fencing_producer()
        self.epoch = kafka.producer_epoch(producer)  # names this run's offset-map files
        self.run_token = secrets.token_hex(RUN_TOKEN_CHARS // 2)  # and so does this token
        self.transaction = _Transaction()
        self.records = 0  # appended by this run (what pacing counts)
        self.nbytes = 0
        self.delivered = 0  # committed by this run
        self.by_event_time = spec.field is not None and self.plan.selection.timed

    async def run(self) -> int:
        """Produce the rest of the selection; return the records delivered by this run."""
        try:
            await self.producer.begin_transaction()
            self.pacing.started = time.monotonic()
            await self._produce_selection()
            await self._commit()
        except TRANSACTION_LOST as exc:
            raise self._fenced() from exc
        except AIOKafkaError as exc:
            raise RejectedError(f"replay {self.plan.replay_id}: {exc}", retriable=True,
                                replay_id=self.plan.replay_id) from exc
        finally:
            for _, _, future in self.transaction.sent:  # a failed transaction's other batches
                future.add_done_callback(_retrieve)
        return self.delivered

    def _fenced(self) -> FencedError:
        return FencedError(
            f"replay {self.plan.replay_id} was fenced: another run of it started (a second "
            f"--resume {self.plan.replay_id}), or a transaction stayed open past the "
            f"transaction timeout; this run stopped, its open transaction is aborted, and "
            f"{self.transactions} transactions are committed", replay_id=self.plan.replay_id)

    async def _produce_selection(self) -> None:
        for partition, files in self.prepared.files.items():
            ranges = {partition: self.prepared.ranges[partition]}
            for cluster in clusters(files):
                batches = self.source.batches(cluster, ranges)
                while (batch := await self._next_batch(batches)) is not None:
                    await self._add_batch(batch)

    async def _next_batch(self, batches: Iterator[pa.RecordBatch]) -> pa.RecordBatch | None:
        """The next batch from DuckDB (None after the last), read in a worker thread.

        While DuckDB reads (a file group's query starting, or a selective filter scanning
        many rows), the open transaction is committed once ``replay.transaction_seconds``
        old, so that a long read never meets the broker's transaction timeout.
        """
        fetch = asyncio.ensure_future(asyncio.to_thread(next, batches, None))
        try:
            while True:
                opened = self.transaction.opened
                wait = (None if opened is None else
                        max(0.0, opened + self.limits.transaction_seconds - time.monotonic()))
                done, _ = await asyncio.wait({fetch}, timeout=wait)
                if done:
                    return fetch.result()
                await self._commit()
        except BaseException:
            if not fetch.done():  # stop DuckDB before the connection is closed
                self.source.interrupt()
                await asyncio.wait({fetch})
                _retrieve(fetch)
            raise

    async def _add_batch(self, batch: pa.RecordBatch) -> None:
        columns = batch.to_pydict()
        keep_time = self.plan.target.timestamp == "original"
        for p, off, ts, key, value, headers in zip(
                columns["partition"], columns["offset"], columns["ts"], columns["key"],
                columns["value"], columns["headers"], strict=True):
            if self.by_event_time and not event_time_within(self.plan.selection, self.spec, ts,
                                                            value):
                # the checkpoint does not move past a skipped row (it names the next record
                # after the last one produced): a resume reads such rows again and skips them
                # again; only the age of what was already sent is checked here
                if self._transaction_full(0.0):
                    await self._commit()
                continue
            stamp = ts // 1000 if keep_time and ts >= 0 else None
            await self._append(self.place(p, key), p, off, stamp, key, value,
                               self._headers(p, off, headers))
            self.next_offsets[p] = off + 1
            self._count(len(key or b"") + len(value or b""))
            ahead = (self.pacing.delay(self.records, self.nbytes, time.monotonic())
                     if self.pacing.limited else 0.0)
            if self._transaction_full(ahead):
                await self._commit()
            if ahead:
                await self.pacing.wait(self.records, self.nbytes)
        self.bar.advance(batch.num_rows)

    def _headers(self, partition: int, offset: int, stored: list[dict[str, Any]]) -> Headers:
        """The record's own headers, then its provenance (unless turned off)."""
        headers: Headers = [(h["key"], h["value"]) for h in stored]
        if self.plan.target.provenance:
            headers += provenance(self.plan.replay_id, self.plan.selection.topic, partition,
                                  offset)
        return headers

    def _count(self, size: int) -> None:
        if self.transaction.opened is None:
            self.transaction.opened = time.monotonic()
        self.transaction.records += 1
        self.transaction.nbytes += size
        self.records += 1
        self.nbytes += size

    def _transaction_full(self, ahead: float) -> bool:
        """Whether to commit now: enough records or bytes, or open for long enough.

        ``ahead``: seconds pacing is about to wait; a transaction that would be open past
        ``replay.transaction_seconds`` by then is committed first, so that a slow replay never
        meets the broker's transaction timeout.
        """
        opened = self.transaction.opened
        return (self.transaction.records >= self.limits.transaction_records
                or self.transaction.nbytes >= self.limits.transaction_bytes
                or (opened is not None and time.monotonic() + ahead - opened
                    >= self.limits.transaction_seconds))

    async def _append(self, tp: int, p: int, off: int, stamp: int | None, key: bytes | None,
                      value: bytes | None, headers: Sequence[tuple[str, bytes | None]]) -> None:
        entry = self.transaction.builders.get(tp)
        if entry is None:
            entry = self.transaction.builders[tp] = (self.producer.create_batch(), [])
        if entry[0].append(timestamp=stamp, key=key, value=value, headers=headers) is None:
            await self._send(tp)
            entry = self.transaction.builders[tp] = (self.producer.create_batch(), [])
            entry[0].append(timestamp=stamp, key=key, value=value, headers=headers)
        entry[1].append((p, off))

    async def _send(self, tp: int) -> None:
        builder, origins = self.transaction.builders.pop(tp)
        future = await self.producer.send_batch(builder, self.plan.target.topic, partition=tp)
        self.transaction.sent.append((tp, origins, future))

    async def _commit(self) -> None:
        """Send what is buffered, write the offset map, commit records and checkpoint."""
        for tp in list(self.transaction.builders):
            await self._send(tp)
        if not self.transaction.sent:
            self.transaction.opened = None
            return
        rows = await self._offset_map_rows()
        number = self.transactions + 1
        name = map_file(number, self.epoch, self.run_token)
        self.storage.put(replay_key(self.plan.replay_id, name),
                         fmt.encode_rows(fmt.OFFSET_MAP_SCHEMA, rows))
        await self._commit_checkpoint(number)
        # killed before the marker: the next run writes it from the checkpoint's run token
        record_commit(self.storage, self.plan.replay_id, number, name)
        self.transactions = number  # only now: a failed commit's map file is not counted
        if number == 1:  # a map file 2 or a report proves the later commits
            self.storage.put(replay_key(self.plan.replay_id, FIRST_COMMIT), b"{}")
        self.delivered += self.transaction.records
        self.transaction = _Transaction()
        await self.producer.begin_transaction()

    async def _offset_map_rows(self) -> dict[str, list[int]]:
        """Where the sent batches landed (source -> target offsets); a refusal raises here."""
        rows: dict[str, list[int]] = {name: [] for name in fmt.OFFSET_MAP_SCHEMA.names}
        for tp, origins, future in self.transaction.sent:
            try:
                base = (await future).offset
            except TRANSACTION_LOST as exc:
                raise self._fenced() from exc
            except AIOKafkaError as exc:
                raise self._rejected(origins, exc) from exc
            partitions, offsets = zip(*origins, strict=True)
            rows["source_partition"] += partitions
            rows["source_offset"] += offsets
            rows["target_partition"] += [tp] * len(origins)
            rows["target_offset"] += range(base, base + len(origins))
        return rows

    async def _commit_checkpoint(self, number: int) -> None:
        count = self.info.partitions
        await self.producer.send_offsets_to_transaction(
            {TopicPartition(self.plan.target.topic, t):
             (0, encode_checkpoint(number, self.next_offsets, t, count, self.run_token))
             for t in range(count)},
            group_id(self.plan.replay_id))
        await self.producer.commit_transaction()

    def _rejected(self, origins: Origins, exc: AIOKafkaError) -> RejectedError:
        p, first = origins[0]
        last = origins[-1][1]
        where = f"{first}" if first == last else f"{first}..{last}"
        return RejectedError(
            f"{self.plan.target.topic} refused record {self.plan.selection.topic}/{p}/{where}: "
            f"{type(exc).__name__}: {exc}; nothing of this transaction is committed; fix the "
            f"cause, then: eventvault replay --resume {self.plan.replay_id}",
            topic=self.plan.selection.topic, partition=p, offsets=(first, last),
            replay_id=self.plan.replay_id)
