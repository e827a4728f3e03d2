"""Taking partitions over: their committed progress, checked before the archiver goes on.

What the rebalance listener needs when partitions are assigned, apart from the archiver's own
state: the progress the group committed (decoded), the check that the event-time setting did
not change under recorded cuts, and the report of records that retention deleted before they
were archived, and the refusal to start over a partition whose progress was lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping

from eventvault import kafka, observe
from eventvault.errors import ArchiveStateError
from eventvault.kafka import TopicPartition
from eventvault.layout import parse_file_key, topic_prefix
from eventvault.progress import Progress, decode_progress
from eventvault.settings import KafkaSettings
from eventvault.storage import Storage


def partition_name(tp: TopicPartition) -> str:
    """``topic[partition]``, as logs and summaries name a partition."""
    return f"{tp.topic}[{tp.partition}]"


async def committed_progress(settings: KafkaSettings, group_id: str,
                             tps: Iterable[TopicPartition]) -> dict[TopicPartition, Progress]:
    """The committed progress of ``tps`` (partitions never committed are left out)."""
    committed = await kafka.committed_offsets(settings, group_id, tps)
    found = {}
    for tp, (offset, metadata) in committed.items():
        try:
            found[tp] = decode_progress(offset, metadata)
        except ValueError as exc:
            raise ArchiveStateError(f"unreadable progress of {partition_name(tp)}: {exc}",
                                    topic=tp.topic, partition=tp.partition) from exc
    return found


def check_event_time_setting(tp: TopicPartition, progress: Progress, hashed: str) -> None:
    """Refuse a changed event-time setting while cuts of the partition are recorded."""
    if progress.cuts and progress.spec_hash != hashed:
        raise ArchiveStateError(
            f"the event-time setting of topic {tp.topic} changed while files of "
            f"partition {tp.partition} were in progress; restore the previous setting, "
            "let one `eventvault archive --once` finish, then change it",
            topic=tp.topic, partition=tp.partition)


def report_retention_loss(tp: TopicPartition, resume: int, start: int) -> None:
    """Log and count the records between ``resume`` and the log start that were never read."""
    observe.event("records deleted by retention before they were archived",
                  logging.ERROR, topic=tp.topic, partition=tp.partition,
                  lost_from=resume, lost_to=start - 1, records=start - resume)
    observe.LOST.labels(tp.topic, str(tp.partition)).inc(start - resume)


async def refuse_lost_progress(storage: Storage, found: Mapping[TopicPartition, Progress],
                               tps: Iterable[TopicPartition]) -> None:
    """Refuse partitions without committed progress whose files are already in the archive.

    Kafka deletes an empty group's offsets after ``offsets.retention.minutes``; starting such a
    partition from the log start would archive the retained log again under new cut points
    (duplicates). The archive is listed only for partitions without a committed offset.
    """
    lost = {tp for tp in tps if tp not in found}
    if not lost:
        return
    archived = await asyncio.to_thread(_archived, storage, lost)
    if archived:
        names = ", ".join(partition_name(tp) for tp in sorted(archived))
        raise ArchiveStateError(
            f"no committed offset for {names} but the archive already has files of it: the "
            "group's offsets expired (offsets.retention.minutes) or were deleted, and archiving "
            "from the log start would duplicate records; run `eventvault verify`, then "
            "`eventvault archive --resume-from-archive` to go on after the highest archived "
            "offset", partitions=[partition_name(tp) for tp in sorted(archived)])


def _archived(storage: Storage, wanted: set[TopicPartition]) -> set[TopicPartition]:
    """The partitions of ``wanted`` that have at least one archive file."""
    found: set[TopicPartition] = set()
    for topic in sorted({tp.topic for tp in wanted}):
        for key in storage.list(topic_prefix(topic)):
            ref = parse_file_key(key)
            if ref is not None and TopicPartition(topic, ref.partition) in wanted:
                found.add(TopicPartition(topic, ref.partition))
                if found >= {tp for tp in wanted if tp.topic == topic}:
                    break
    return found
