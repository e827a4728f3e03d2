"""The pure core of ``eventvault verify``: what an archive's files say against the topic.

Offsets are handled as sorted, disjoint, inclusive intervals (``(first, last)``), never one by
one, so that a partition of a billion records costs as much as its files. Defects are what
makes an archive not exact; the other counts (expired, unverifiable, nonexistent, pending)
explain offsets the archive rightly does not hold, or cannot be checked any more.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from eventvault.layout import MAX_HOUR, FileRef
from eventvault.progress import Cut, Progress
from eventvault.times import US_PER_HOUR

Interval = tuple[int, int]
"""Offsets ``first`` to ``last``, both included."""

DEFECTS = {
    "missing": "records Kafka holds that no archive file has",
    "duplicate": "offsets that are in more than one file",
    "name_mismatch": "a file whose rows are not of the partition or offsets its name says",
    "out_of_order": "a file whose rows are not in strictly increasing offset order",
    "unreadable": "a file that is not readable Parquet (its offsets are unknown)",
    "schema": "a file whose schema is not the archive's (eventvault/format.py)",
    "wrong_hour": "a file whose rows' timestamps are not of its date/hour directory",
    "bad_key": "an object under a topic folder whose key is not an archive file's",
    "group_offsets_missing": "files exist but the group has no committed offset (expired?)",
    "unverifiable_gap": "offsets between archived ones that Kafka deleted, in a gap longer than "
    "the limit (--unverifiable-gap; any with --strict): a deleted file?",
    "unrecorded_file": "a file at or beyond the committed offset that no recorded cut names",
    "never_archived": "a partition of an archived topic holds records but has neither files "
    "nor committed progress, and no archiver runs in the group",
}
"""Every kind of defect, with what it means (the report's legend and docs)."""


@dataclass(frozen=True)
class Defect:
    """One thing that makes the archive not exact."""

    kind: str
    topic: str
    partition: int | None = None
    key: str | None = None
    first: int | None = None
    last: int | None = None
    count: int = 1
    detail: str = ""


@dataclass(frozen=True)
class FileFacts:
    """What was read of one archive file: its footer statistics and offset column.

    ``runs`` are the file's distinct offsets as intervals; ``ordered`` says the offsets
    strictly increase in row order; ``partitions`` and ``timestamps_us`` are (min, max) of
    those columns; ``problem`` says why the file is unreadable or violates the schema, and
    ``readable`` whether its offsets are known anyway.
    """

    key: str
    ref: FileRef
    rows: int = 0
    runs: tuple[Interval, ...] = ()
    ordered: bool = True
    partitions: tuple[int, int] | None = None
    timestamps_us: tuple[int, int] | None = None
    problem: str | None = None
    readable: bool = True


@dataclass(frozen=True)
class GapPlan:
    """A partition's offsets missing from the archive, split by what may explain them.

    ``expired``: below the log start offset and below the first archived offset (retention
    deleted them before the archive began, or with its first files). ``unverifiable``: below
    the log start but above the first archived offset: Kafka can no longer say whether they
    held records (markers and compaction leave such gaps, a deleted file too).
    ``probe``: inside the retained log below the committed offset: Kafka is read there to
    tell records (missing) from offsets that hold none (markers, compacted, aborted).
    ``pending``: at or above the committed offset: not archived yet (read too when few, to
    tell records waiting from trailing markers). ``horizon`` is where pending starts.
    """

    expired: int
    unverifiable: tuple[Interval, ...]
    probe: tuple[Interval, ...]
    pending: tuple[Interval, ...]
    horizon: int


@dataclass(frozen=True)
class PartitionReport:
    """The verdict on one partition."""

    topic: str
    partition: int
    files: int
    rows: int
    archived: Interval | None
    log_start: int | None
    end: int | None
    committed: int | None
    expired: int = 0
    unverifiable: int = 0
    nonexistent: int = 0
    pending: int = 0
    defects: tuple[Defect, ...] = field(default=())


def runs(offsets: Iterable[int]) -> tuple[Interval, ...]:
    """Sorted distinct offsets as maximal intervals of consecutive offsets."""
    found: list[Interval] = []
    for offset in sorted(set(offsets)):
        if found and found[-1][1] + 1 == offset:
            found[-1] = (found[-1][0], offset)
        else:
            found.append((offset, offset))
    return tuple(found)


def size(intervals: Iterable[Interval]) -> int:
    """How many offsets the intervals hold."""
    return sum(last - first + 1 for first, last in intervals)


def merge(owned: Iterable[tuple[Interval, str]]) -> tuple[tuple[Interval, ...],
                                                           list[tuple[Interval, str, str]]]:
    """The union of every file's intervals, and each overlap as (interval, key, other key).

    An overlap is reported once, against the earlier file that reaches furthest.
    """
    union: list[Interval] = []
    overlaps: list[tuple[Interval, str, str]] = []
    reach, reacher = -1, ""
    for (first, last), key in sorted(owned):
        if first <= reach:
            overlaps.append(((first, min(last, reach)), key, reacher))
        if union and first <= union[-1][1] + 1:
            union[-1] = (union[-1][0], max(union[-1][1], last))
        else:
            union.append((first, last))
        if last > reach:
            reach, reacher = last, key
    return tuple(union), overlaps


def gaps(covered: Sequence[Interval], low: int, high: int) -> tuple[Interval, ...]:
    """Offsets in ``[low, high)`` that ``covered`` (sorted, disjoint) does not hold."""
    found: list[Interval] = []
    at = low
    for first, last in covered:
        if last < at:
            continue
        if first >= high:
            break
        if first > at:
            found.append((at, first - 1))
        at = max(at, last + 1)
    if at < high:
        found.append((at, high - 1))
    return tuple(found)


def clip(intervals: Iterable[Interval], low: int, high: int) -> tuple[Interval, ...]:
    """The parts of ``intervals`` inside ``[low, high)``."""
    return tuple((max(first, low), min(last, high - 1)) for first, last in intervals
                 if last >= low and first < high and max(first, low) <= min(last, high - 1))


def subtract(intervals: Sequence[Interval], removed: Sequence[Interval]) -> tuple[Interval, ...]:
    """``intervals`` without the offsets of ``removed`` (both sorted, disjoint)."""
    found: list[Interval] = []
    for first, last in intervals:
        found += gaps(clip(removed, first, last + 1), first, last + 1)
    return tuple(found)


def file_defects(facts: FileFacts, check_hours: bool) -> list[Defect]:
    """What is wrong with one file on its own: readability, schema, name, order, hour."""
    ref = facts.ref

    def here(kind: str, detail: str, first: int | None = None, last: int | None = None,
             count: int = 1) -> Defect:
        return Defect(kind, ref.topic, ref.partition, facts.key, first, last, count, detail)

    if facts.problem is not None:
        return [here("schema" if facts.readable else "unreadable", facts.problem,
                     ref.first_offset, ref.last_offset)]
    found = []
    if facts.partitions is not None and facts.partitions != (ref.partition, ref.partition):
        found.append(here("name_mismatch", f"partition column holds {facts.partitions[0]}.."
                          f"{facts.partitions[1]}"))
    outside = subtract(facts.runs, ((ref.first_offset, ref.last_offset),))
    if outside:
        found.append(here("name_mismatch", "offsets outside the name's range "
                          f"{ref.first_offset}..{ref.last_offset}", outside[0][0],
                          outside[-1][1], size(outside)))
    if not facts.ordered:
        found.append(here("out_of_order", "offsets do not strictly increase"))
    if check_hours and facts.timestamps_us is not None:
        found += _hour_defects(facts, facts.timestamps_us)
    return found


def _hour_defects(facts: FileFacts, timestamps: tuple[int, int]) -> list[Defect]:
    """Timestamps (min, max from the footer) against the file's hour directory."""
    ref = facts.ref
    low, high = timestamps
    if ref.hour is None:  # only timestamps before 1970 or after 9999 belong there
        limit = (MAX_HOUR + 1) * US_PER_HOUR
        wrong = [t for t in (low, high) if 0 <= t < limit]
    else:
        start, stop = ref.hour * US_PER_HOUR, (ref.hour + 1) * US_PER_HOUR
        wrong = [t for t in (low, high) if not start <= t < stop]
    if not wrong:
        return []
    return [Defect("wrong_hour", ref.topic, ref.partition, facts.key,
                   detail=f"timestamps from {low} to {high} µs are not all of this hour")]


def overlap_defects(topic: str, partition: int,
                    overlaps: Iterable[tuple[Interval, str, str]]) -> list[Defect]:
    """The overlaps between each pair of files as one duplicate defect."""
    pairs: dict[tuple[str, str], list[Interval]] = {}
    for interval, key, other in overlaps:
        pairs.setdefault((key, other), []).append(interval)
    return [Defect("duplicate", topic, partition, key, shared[0][0], shared[-1][1],
                   size(shared), detail=f"{_ranges(shared)} also in {other}")
            for (key, other), shared in sorted(pairs.items())]


def _ranges(intervals: Sequence[Interval], shown: int = 5) -> str:
    """``in 3 ranges: 4..9, 12, 15..20`` (the first few)."""
    text = ", ".join(f"{a}..{b}" if a != b else str(a) for a, b in intervals[:shown])
    more = ", ..." if len(intervals) > shown else ""
    return f"in {len(intervals)} range{'s' if len(intervals) != 1 else ''}: {text}{more}"


def plan_gaps(covered: Sequence[Interval], log_start: int, end: int,
              committed: int | None) -> GapPlan:
    """Split a partition's missing offsets: expired, unverifiable, to be read, and pending.

    Without a committed offset, the archive's own highest offset is the horizon: what lies
    below it should be archived, what lies above is not yet.
    """
    highest = covered[-1][1] + 1 if covered else 0
    horizon = committed if committed is not None else highest
    missing = gaps(covered, 0, max(end, horizon))
    first = covered[0][0] if covered else log_start
    expired = size(clip(missing, 0, min(first, log_start)))
    unverifiable = clip(missing, first, log_start)
    probe = clip(missing, log_start, min(horizon, end))
    pending = clip(missing, max(horizon, log_start), end)
    return GapPlan(expired, unverifiable, probe, pending, horizon)


def unverifiable_defects(topic: str, partition: int, unverifiable: Sequence[Interval],
                         limit: int) -> list[Defect]:
    """The unverifiable gaps longer than ``limit`` offsets, as one defect (0: every gap)."""
    long = [(first, last) for first, last in unverifiable if last - first + 1 > limit]
    if not long:
        return []
    return [Defect("unverifiable_gap", topic, partition, None, long[0][0], long[-1][1],
                   size(long), detail=f"below the log start, between archived offsets, "
                   f"{_ranges(long)}")]


def missing_defects(topic: str, partition: int, present: Sequence[Interval],
                    unreadable: Sequence[Interval]) -> list[Defect]:
    """Records Kafka holds in the gaps, less those an unreadable file may hold: one defect."""
    missing = subtract(present, unreadable)
    if not missing:
        return []
    return [Defect("missing", topic, partition, None, missing[0][0], missing[-1][1],
                   size(missing), detail=f"Kafka holds these records, {_ranges(missing)}")]


def never_archived_defects(topic: str, partition: int, log_start: int, end: int,
                           records: int | None) -> list[Defect]:
    """A partition the archiver never took, though its topic is archived: one defect.

    For a partition with neither files nor committed progress while no archiver runs in the
    group (the caller checks that): ``records`` is how many records Kafka holds in
    ``[log_start, end)``, None when that was not read (too many offsets to be only markers).
    """
    if end <= log_start or records == 0:
        return []
    return [Defect("never_archived", topic, partition, None, log_start, end - 1,
                   end - log_start, detail="Kafka holds records here, the archive has no file "
                   "and the group no committed offset")]


def progress_defects(topic: str, partition: int, progress: Progress | None,
                     files: Sequence[FileRef]) -> list[Defect]:
    """The group's committed progress against the files of one partition.

    Every file whose last offset is at or beyond the committed offset must be one of the
    recorded cuts: the archiver records a cut before writing its file, and drops it only once
    the committed offset has passed it. Files without any committed offset mean the group's
    offsets expired or were deleted: a new run would archive the retained log again.
    """
    if progress is None:
        if not files:
            return []
        highest = max(ref.last_offset for ref in files)
        return [Defect("group_offsets_missing", topic, partition, None, None, highest,
                       detail="the archiver would start this partition again from the log "
                       "start and archive records twice")]
    cuts = set(progress.cuts)
    return [Defect("unrecorded_file", topic, partition, ref.key, ref.first_offset,
                   ref.last_offset, detail=f"committed offset is {progress.offset}")
            for ref in files if ref.last_offset >= progress.offset
            and Cut(ref.first_offset, ref.last_offset, ref.hour) not in cuts]


def exact(reports: Iterable[PartitionReport], other: Sequence[Defect] = ()) -> bool:
    """Whether nothing is wrong: no defect in any partition, and none outside them."""
    return not other and not any(report.defects for report in reports)
