"""Probing clients of the aiokafka adapter: log starts kept open, records present in ranges.

Part of the aiokafka adapter with :mod:`eventvault.kafka`, whose client options and quiet stop
these use. The archiver asks :class:`LogStarts` whether a jump in offsets is retention;
``verify`` asks :func:`records_present` whether an archive gap holds records.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError as AIOKafkaError
from aiokafka.structs import TopicPartition

from eventvault.errors import BrokerError
from eventvault.kafka import client_options, stop_quietly
from eventvault.settings import KafkaSettings

__all__ = ["LogStarts", "Presence", "records_present"]


class LogStarts:
    """Log start offsets, read by a client of its own that stays open between lookups.

    The archiver asks whenever a partition's offsets jump (is it retention, or markers and
    compaction?), which can be every batch of a transactional topic: one request, not a new
    client each time.
    """

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings
        self._probe: AIOKafkaConsumer | None = None

    async def get(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """The log start offset of each of ``partitions`` now."""
        try:
            if self._probe is None:
                self._probe = AIOKafkaConsumer(**client_options(self.settings))
                await self._probe.start()
            starts: dict[TopicPartition, int] = await self._probe.beginning_offsets(partitions)
        except AIOKafkaError as exc:
            raise BrokerError(f"cannot read log start offsets of {len(partitions)} partitions: "
                              f"{exc}", retriable=exc.retriable) from exc
        return starts

    async def close(self) -> None:
        """Stop the client (if one was started)."""
        if self._probe is not None:
            await stop_quietly(self._probe)
            self._probe = None


@dataclass(frozen=True)
class Presence:
    """What :func:`records_present` found: the records, and the log starts once it had read.

    Offsets of a range below ``log_starts`` were deleted (retention, delete-records) before or
    while it read: it cannot say whether they held records.
    """

    found: dict[TopicPartition, list[tuple[int, int]]]
    log_starts: dict[TopicPartition, int]


async def records_present(settings: KafkaSettings,
                          ranges: dict[TopicPartition, tuple[tuple[int, int], ...]],
                          ) -> Presence:
    """The offsets in each partition's ``ranges`` (inclusive) that hold committed records.

    A read_committed client of its own reads only those ranges: offsets it skips hold
    transaction markers, aborted records, or records compaction removed. Each partition's
    ranges start at its log start read just before them, and a seek below the log start
    (retention ran meanwhile) resumes at the earliest offset, never at the end. Raises
    BrokerError if a range stops being read for the request timeout.
    """
    found: dict[TopicPartition, list[tuple[int, int]]] = {tp: [] for tp in ranges}
    if not ranges:
        return Presence(found, {})
    probe = AIOKafkaConsumer(**client_options(settings), isolation_level="read_committed",
                             enable_auto_commit=False, auto_offset_reset="earliest")
    try:
        await probe.start()
        probe.assign(list(ranges))
        ends = await probe.end_offsets(list(ranges))
        for tp, wanted in ranges.items():
            probe.pause(*(other for other in ranges if other != tp))
            probe.resume(tp)
            # once per partition: a transactional topic has a gap (range) per marker
            start = (await probe.beginning_offsets([tp]))[tp]
            for first, last in wanted:
                await _read_range(probe, tp, max(first, start), min(last + 1, ends[tp]),
                                  settings.request_timeout_ms / 1000, found[tp])
        starts: dict[TopicPartition, int] = await probe.beginning_offsets(list(ranges))
    except AIOKafkaError as exc:
        raise BrokerError(f"cannot read records of {len(ranges)} partitions: {exc}",
                          retriable=exc.retriable) from exc
    finally:
        await probe.stop()
    return Presence(found, starts)


async def _read_range(probe: AIOKafkaConsumer, tp: TopicPartition, start: int, stop: int,
                      stall_seconds: float, found: list[tuple[int, int]]) -> None:
    """Add the offsets of records in ``[start, stop)`` to ``found`` (intervals, in order)."""
    if start >= stop:
        return
    probe.seek(tp, start)
    deadline, reached = time.monotonic() + stall_seconds, start
    while (position := await probe.position(tp)) < stop:
        if position > reached:  # progress: the timeout is for a stall, not for the range
            deadline, reached = time.monotonic() + stall_seconds, position
        if time.monotonic() > deadline:
            raise BrokerError(f"reading {tp.topic}[{tp.partition}] from {start} to {stop} "
                              f"stopped at {position}", retriable=True)
        batch = await probe.getmany(tp, timeout_ms=500, max_records=50_000)
        for record in batch.get(tp, []):
            if record.offset >= stop:
                break
            if found and found[-1][1] + 1 == record.offset:
                found[-1] = (found[-1][0], record.offset)
            else:
                found.append((record.offset, record.offset))
