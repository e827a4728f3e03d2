"""The verify run: storage and Kafka are asked, the pure comparison decides.

Order matters when an archiver runs meanwhile. The committed offsets are read *before* the
listing, for the gaps: every offset below them was in a durable file before they were
committed, so the listing must show it. They are read again *after* the listing, for the
files beyond them: a listed file's cut was committed before the file was written, so that
second read either names the cut or has passed it.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass, replace

from eventvault import kafka, kafka_probes
from eventvault.errors import ArchiveStateError
from eventvault.kafka import TopicPartition
from eventvault.observe import ProgressBar
from eventvault.progress import Progress, decode_progress
from eventvault.settings import Settings
from eventvault.storage import Storage
from eventvault.verify import compare
from eventvault.verify.compare import Defect, FileFacts, Interval, PartitionReport
from eventvault.verify.scan import archive_keys, scan_files

UNVERIFIABLE_GAP = 1000
"""A gap between archived offsets below the log start longer than this is a defect: markers
and compaction leave short ones, a deleted file of that many records does not."""

PENDING_READ = 1000
"""Offsets above the committed offset are read in Kafka only when this few (per partition):
enough to tell the markers a caught-up archiver leaves after its last record, never a topic."""


@dataclass(frozen=True)
class Report:
    """Everything ``eventvault verify`` found."""

    group_id: str
    partitions: tuple[PartitionReport, ...]
    other: tuple[Defect, ...]
    files: int
    bytes_read: int
    seconds: float
    removed: tuple[str, ...] = ()
    """Listed files gone when read (retention or erasure ran meanwhile): left out."""

    @property
    def exact(self) -> bool:
        """Whether the archive holds every record Kafka holds below the progress, once."""
        return compare.exact(self.partitions, self.other)

    @property
    def defects(self) -> list[Defect]:
        """Every defect, partitions' first."""
        return [d for p in self.partitions for d in p.defects] + list(self.other)


@dataclass(frozen=True)
class KafkaState:
    """What Kafka says of one partition (None: the topic or partition is not there)."""

    log_start: int | None
    end: int | None
    before: Progress | None
    after: Progress | None


def verify(settings: Settings, storage: Storage, topics: list[str], group_id: str,
           show_progress: bool = False, gap_limit: int = UNVERIFIABLE_GAP) -> Report:
    """Compare the archive of ``topics`` with Kafka and with ``group_id``'s progress.

    ``gap_limit``: unverifiable gaps longer than this many offsets are defects (0: all).
    """
    started = time.monotonic()
    partitions: list[PartitionReport] = []
    other: list[Defect] = []
    removed: list[str] = []
    files = 0
    for topic in topics:
        found, reports, gone = _verify_topic(settings, storage, topic, group_id,
                                             show_progress, gap_limit)
        other += found
        partitions += reports
        removed += gone
        files += sum(r.files for r in reports)
    return Report(group_id, tuple(partitions), tuple(other), files, storage.bytes_read,
                  time.monotonic() - started, tuple(removed))


def _verify_topic(settings: Settings, storage: Storage, topic: str, group_id: str,
                  show_progress: bool, gap_limit: int,
                  ) -> tuple[list[Defect], list[PartitionReport], list[str]]:
    info = asyncio.run(kafka.describe_topic(settings.kafka, topic))
    tps = [TopicPartition(topic, p) for p in range(info.partitions if info else 0)]
    before = asyncio.run(_progress(settings, group_id, tps))
    keys, others = archive_keys(storage, topic)
    after = asyncio.run(_progress(settings, group_id, tps))
    running = bool(tps) and asyncio.run(kafka.group_members(settings.kafka, group_id)) > 0
    starts, ends = asyncio.run(kafka.log_offsets(settings.kafka, tps, "read_committed")) \
        if tps else ({}, {})
    with ProgressBar(show_progress, f"verifying {topic}", total=len(keys)) as bar:
        scanned = list(scan_files(storage, keys, bar.advance))
    facts = [item for item in scanned if item is not None]
    removed = [key for (key, _), item in zip(keys, scanned, strict=True) if item is None]
    by_partition: dict[int, list[FileFacts]] = defaultdict(list)
    for item in facts:
        by_partition[item.ref.partition].append(item)
    check_hours = settings.archive.event_time_spec(topic).field is None
    partitions = {}
    for partition in sorted({tp.partition for tp in tps} | set(by_partition)):
        tp = TopicPartition(topic, partition)
        state = KafkaState(starts.get(tp), ends.get(tp), before.get(tp), after.get(tp))
        partitions[tp] = PartitionCheck(tp, by_partition[partition], state, check_hours,
                                        gap_limit)
    # A partition without files or progress is a defect once its topic is archived, unless
    # an archiver runs: it may own the partition and not have decided its first file yet.
    expect_progress = bool(facts or before or after) and not running
    probes = {tp: part.ranges_to_read() for tp, part in partitions.items()}
    probes = {tp: ranges for tp, ranges in probes.items() if ranges}
    presence = asyncio.run(kafka_probes.records_present(settings.kafka, probes))
    reports = [part.report(tuple(presence.found.get(tp, ())), presence.log_starts.get(tp),
                           expect_progress) for tp, part in partitions.items()]
    stray = [Defect("bad_key", topic, key=key, detail="not an archive file name")
             for key in others]
    return stray, reports, removed


async def _progress(settings: Settings, group_id: str,
                    tps: list[TopicPartition]) -> dict[TopicPartition, Progress]:
    if not tps:
        return {}
    committed = await kafka.committed_offsets(settings.kafka, group_id, tps)
    try:
        return {tp: decode_progress(offset, metadata)
                for tp, (offset, metadata) in committed.items()}
    except ValueError as exc:
        raise ArchiveStateError(f"unreadable progress of group {group_id}: {exc}",
                                group_id=group_id) from exc


class PartitionCheck:
    """One partition's files and Kafka state; its report once Kafka was read in the gaps."""

    def __init__(self, tp: TopicPartition, files: list[FileFacts], state: KafkaState,
                 check_hours: bool, gap_limit: int = UNVERIFIABLE_GAP) -> None:
        self.tp, self.files, self.state, self.gap_limit = tp, files, state, gap_limit
        self.defects: list[Defect] = []
        for facts in files:
            self.defects += compare.file_defects(facts, check_hours)
        self.covered, overlaps = compare.merge((run, f.key) for f in files for run in f.runs)
        self.defects += compare.overlap_defects(tp.topic, tp.partition, overlaps)
        self.committed = state.before.offset if state.before else None
        self.plan = None if state.log_start is None or state.end is None else \
            compare.plan_gaps(self.covered, state.log_start, state.end, self.committed)

    def ranges_to_read(self) -> tuple[Interval, ...]:
        """The gaps to read in Kafka: below the committed offset, and above it when few."""
        if self.plan is None:
            return ()
        pending = self.plan.pending if compare.size(self.plan.pending) <= PENDING_READ else ()
        return self.plan.probe + pending

    def report(self, present: tuple[Interval, ...],
               probed_log_start: int | None = None,
               expect_progress: bool = False) -> PartitionReport:
        """The verdict, given the records Kafka holds in the probed gaps.

        ``probed_log_start`` is the log start once the gaps were read: offsets read below it
        and not found were deleted meanwhile: expired or unverifiable, not nonexistent.
        ``expect_progress``: the topic is archived and no archiver runs, so records in a
        partition with neither files nor committed progress were never archived (a defect).
        """
        files, state, (topic, partition) = self.files, self.state, self.tp
        report = PartitionReport(topic, partition, len(files), sum(f.rows for f in files),
                                 (self.covered[0][0], self.covered[-1][1]) if self.covered
                                 else None, state.log_start, state.end, self.committed)
        if self.plan is None:  # not in Kafka: the files alone
            return replace(report, defects=tuple(self.defects))
        plan = self.plan
        below = compare.clip(present, 0, plan.horizon)
        unreadable = [(f.ref.first_offset, f.ref.last_offset) for f in files if not f.readable]
        defects = self.defects + compare.missing_defects(topic, partition, below,
                                                         _union(unreadable))
        defects += compare.progress_defects(topic, partition, state.after,
                                            [f.ref for f in files])
        read = self.ranges_to_read()
        deleted = compare.subtract(compare.clip(read, 0, probed_log_start or 0), present)
        first = self.covered[0][0] if self.covered else state.log_start or 0
        late = compare.clip(deleted, first, probed_log_start or 0)  # between archived offsets
        unverifiable = _union([*plan.unverifiable, *late])
        defects += compare.unverifiable_defects(topic, partition, unverifiable, self.gap_limit)
        waiting = compare.size(present) - compare.size(below)  # records above the horizon
        pending = waiting if len(read) > len(plan.probe) else compare.size(plan.pending)
        if expect_progress and not files and state.before is None and state.after is None:
            records = waiting if len(read) > len(plan.probe) else None
            unarchived = compare.never_archived_defects(topic, partition, state.log_start or 0,
                                                        state.end or 0, records)
            defects += unarchived
            pending = 0 if unarchived else pending
        return replace(report, expired=plan.expired + compare.size(deleted) - compare.size(late),
                       unverifiable=compare.size(unverifiable),
                       nonexistent=compare.size(read) - compare.size(present)
                       - compare.size(deleted), pending=pending, defects=tuple(defects))


def _union(intervals: list[Interval]) -> tuple[Interval, ...]:
    """Possibly overlapping intervals as sorted disjoint ones."""
    covered, _ = compare.merge((interval, "") for interval in intervals)
    return covered
