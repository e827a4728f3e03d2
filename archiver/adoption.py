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

from eventvault import format as fmt
from eventvault import kafka, observe
from eventvault.errors import ArchiveStateError, StorageError
from eventvault.kafka import TopicPartition
from eventvault.layout import FileRef, parse_file_key, topic_prefix
from eventvault.progress import Cut, Progress, decode_progress
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


async def report_retention_loss(storage: Storage, tp: TopicPartition, lost_from: int,
                                lost_to: int, cuts: Iterable[Cut], *, when: str,
                                reported: dict[TopicPartition, int]) -> int:
    """Log (ERROR) and count the records in ``[lost_from, lost_to)`` that Kafka deleted unread.

    Each offset is reported once: ``reported`` holds, per partition, the offset below which
    loss was already reported (a rewind or a new adoption can come upon the same gap again).

    Offsets of that range that are in files of recorded ``cuts`` already written (by an owner
    before a crash) are archived, not lost: they are counted out. ``when`` says whether the
    loss was found at adoption or while running. Returns the records lost. The report never
    ends the run: if those files cannot be read (a role without ``s3:GetObject``), the whole
    range is reported as an upper bound, ``archived_in_recorded_cuts`` unknown.
    """
    lost_from = max(lost_from, reported.get(tp, lost_from))
    if lost_to <= lost_from:
        return 0
    reported[tp] = lost_to
    unread = ""
    try:
        in_files: int | str = await asyncio.to_thread(archived_offsets, storage, tp, cuts,
                                                      lost_from, lost_to)
    except StorageError as exc:
        in_files, unread = "unknown", str(exc)
    lost = lost_to - lost_from - (in_files if isinstance(in_files, int) else 0)
    if lost > 0:
        observe.event("records deleted by retention before they were archived",
                      logging.ERROR, topic=tp.topic, partition=tp.partition, found=when,
                      lost_from=lost_from, lost_to=lost_to - 1, records=lost,
                      archived_in_recorded_cuts=in_files,
                      **({"records_is_upper_bound": True, "files_unread": unread} if unread
                         else {}))
        observe.LOST.labels(tp.topic, str(tp.partition)).inc(lost)
    return lost


def archived_offsets(storage: Storage, tp: TopicPartition, cuts: Iterable[Cut], lower: int,
                     upper: int) -> int:
    """How many offsets in ``[lower, upper)`` are in written files of the recorded ``cuts``."""
    found = 0
    for cut in cuts:
        if cut.last < lower or cut.first >= upper:
            continue
        key = FileRef(tp.topic, cut.hour, tp.partition, cut.first, cut.last).key
        if storage.exists(key):
            offsets = fmt.decode(storage.get(key)).column("offset").to_pylist()
            found += sum(1 for offset in offsets if lower <= offset < upper)
    return found


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
