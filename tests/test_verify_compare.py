"""The pure core of ``eventvault verify``: intervals against sets, and each defect on its own."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from eventvault.layout import FileRef, file_name
from eventvault.progress import Cut, Progress
from eventvault.verify.compare import (
    Defect,
    FileFacts,
    clip,
    file_defects,
    gaps,
    merge,
    never_archived_defects,
    plan_gaps,
    progress_defects,
    runs,
    size,
    subtract,
)

HOUR = 490_000  # some hour after 2025
US = 3_600_000_000
offset_sets = st.sets(st.integers(0, 200), max_size=80)


def expand(intervals: tuple[tuple[int, int], ...] | list[tuple[int, int]]) -> list[int]:
    return [o for first, last in intervals for o in range(first, last + 1)]


def disjoint_sorted(intervals: tuple[tuple[int, int], ...]) -> bool:
    return all(a[1] + 1 < b[0] for a, b in itertools.pairwise(intervals))


@given(offset_sets)
def test_runs_are_the_offsets_as_maximal_intervals(offsets: set[int]) -> None:
    found = runs(offsets)
    assert expand(found) == sorted(offsets)
    assert disjoint_sorted(found)
    assert size(found) == len(offsets)


@given(st.lists(offset_sets, max_size=6))
def test_merge_finds_the_union_and_every_offset_held_twice(files: list[set[int]]) -> None:
    owned = [(run, f"f{i}") for i, offsets in enumerate(files) for run in runs(offsets)]
    union, overlaps = merge(owned)
    assert expand(union) == sorted(set().union(*files))
    assert disjoint_sorted(union)
    held: dict[int, int] = {}
    for offsets in files:
        for o in offsets:
            held[o] = held.get(o, 0) + 1
    # each extra holding of an offset is in exactly one reported overlap
    extra = sorted(o for o, n in held.items() for _ in range(n - 1))
    assert sorted(expand([interval for interval, _, _ in overlaps])) == extra
    for _, key, other in overlaps:
        assert key != other


@given(offset_sets, st.integers(0, 220), st.integers(0, 220))
def test_gaps_are_the_complement_within_bounds(offsets: set[int], low: int, high: int) -> None:
    found = gaps(runs(offsets), low, high)
    assert expand(found) == [o for o in range(low, high) if o not in offsets]
    assert disjoint_sorted(found)


@given(offset_sets, offset_sets, st.integers(0, 220), st.integers(0, 220))
def test_clip_and_subtract_are_set_operations(a: set[int], b: set[int], low: int,
                                              high: int) -> None:
    assert expand(clip(runs(a), low, high)) == sorted(o for o in a if low <= o < high)
    assert expand(subtract(runs(a), runs(b))) == sorted(a - b)


@given(offset_sets, st.integers(0, 220), st.integers(0, 220),
       st.none() | st.integers(0, 220))
def test_plan_gaps_splits_every_missing_offset_once(offsets: set[int], log_start: int, end: int,
                                                    committed: int | None) -> None:
    covered = runs(offsets)
    plan = plan_gaps(covered, log_start, end, committed)
    horizon = committed if committed is not None else (max(offsets) + 1 if offsets else 0)
    missing = [o for o in range(max(end, horizon)) if o not in offsets]
    first = min(offsets) if offsets else log_start
    assert plan.expired == sum(1 for o in missing if o < min(first, log_start))
    assert expand(plan.unverifiable) == [o for o in missing if first <= o < log_start]
    assert disjoint_sorted(plan.unverifiable)
    assert expand(plan.probe) == [o for o in missing if log_start <= o < min(horizon, end)]
    assert expand(plan.pending) == [o for o in missing if max(horizon, log_start) <= o < end]
    assert plan.horizon == horizon


def facts(**changes: object) -> FileFacts:
    ref = FileRef("t", HOUR, 2, 10, 20)
    base = {"key": ref.key, "ref": ref, "rows": 3, "runs": ((10, 11), (20, 20)),
            "ordered": True, "partitions": (2, 2),
            "timestamps_us": (HOUR * US, HOUR * US + US - 1)}
    return FileFacts(**{**base, **changes})  # type: ignore[arg-type]


def kinds(found: Sequence[Defect]) -> list[str]:
    return [d.kind for d in found]


def test_a_good_file_has_no_defect() -> None:
    assert file_defects(facts(), check_hours=True) == []


def test_each_file_defect_alone() -> None:
    assert kinds(file_defects(facts(partitions=(1, 2)), True)) == ["name_mismatch"]
    outside = file_defects(facts(runs=((9, 11), (20, 21))), True)
    assert kinds(outside) == ["name_mismatch"]
    assert (outside[0].first, outside[0].last, outside[0].count) == (9, 21, 2)
    assert kinds(file_defects(facts(ordered=False), True)) == ["out_of_order"]
    assert kinds(file_defects(facts(problem="bad", readable=False), True)) == ["unreadable"]
    assert kinds(file_defects(facts(problem="schema differs"), True)) == ["schema"]
    late = facts(timestamps_us=(HOUR * US, (HOUR + 1) * US))
    assert kinds(file_defects(late, True)) == ["wrong_hour"]
    assert file_defects(late, check_hours=False) == []  # event time from a JSON field


def test_the_null_hour_holds_only_timestamps_outside_years_1970_to_9999() -> None:
    ref = FileRef("t", None, 2, 10, 20)
    assert file_defects(facts(ref=ref, timestamps_us=(-5, -1)), True) == []
    assert kinds(file_defects(facts(ref=ref, timestamps_us=(-5, 7)), True)) == ["wrong_hour"]


def test_progress_defects() -> None:
    below = FileRef("t", HOUR, 0, 0, 9)
    above = FileRef("t", HOUR + 1, 0, 5, 30)
    assert progress_defects("t", 0, None, []) == []
    assert kinds(progress_defects("t", 0, None, [below])) == ["group_offsets_missing"]
    assert progress_defects("t", 0, Progress(10), [below]) == []
    recorded = Progress(10, (Cut(5, 30, HOUR + 1),))
    assert progress_defects("t", 0, recorded, [below, above]) == []
    unrecorded = progress_defects("t", 0, Progress(10), [below, above])
    assert kinds(unrecorded) == ["unrecorded_file"]
    assert unrecorded[0].key == above.key


def test_defects_are_one_per_pair_of_files_and_one_for_missing_records() -> None:
    from eventvault.verify.compare import missing_defects, overlap_defects  # noqa: PLC0415

    overlaps = [((1, 1), "b", "a"), ((3, 3), "b", "a"), ((5, 6), "c", "a")]
    found = overlap_defects("t", 0, overlaps)
    assert [(d.key, d.first, d.last, d.count) for d in found] == [("b", 1, 3, 2),
                                                                  ("c", 5, 6, 2)]
    missing = missing_defects("t", 0, ((1, 1), (3, 5), (9, 9)), ((4, 4),))
    assert [(d.kind, d.first, d.last, d.count) for d in missing] == [("missing", 1, 9, 4)]
    assert missing_defects("t", 0, ((4, 4),), ((2, 6),)) == []


def test_the_text_report_lists_each_defect_and_the_verdict() -> None:
    from eventvault.verify.check import Report  # noqa: PLC0415
    from eventvault.verify.cli import render  # noqa: PLC0415
    from eventvault.verify.compare import PartitionReport, missing_defects  # noqa: PLC0415

    defect = missing_defects("t", 0, ((5, 9),), ())
    bad = PartitionReport("t", 0, 2, 10, (0, 19), 0, 20, 20, unverifiable=3,
                          defects=tuple(defect))
    good = PartitionReport("t", 1, 1, 20, (0, 19), 0, 20, 20)
    text = render(Report("g", (bad, good), (), 3, 100, 0.5))
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["partition", "files", "rows"]
    assert lines[0].split()[-5:] == ["expired", "unverifiable", "nonexistent", "pending",
                                     "defects"]
    assert lines[1].split() == ["t[0]", "2", "10", "0..19", "0", "20", "20", "0", "3", "0", "0",
                                "1"]
    assert "missing: t[0] offsets 5..9 (5) Kafka holds these records" in lines[3]
    assert lines[-1].startswith("NOT EXACT: 1 defect (3 files, group g")
    assert render(Report("g", (good,), (), 1, 1, 0.1)).splitlines()[-1].startswith("exact")


@given(st.sets(st.integers(0, 120), max_size=60), st.lists(st.sets(st.integers(0, 120),
       min_size=1, max_size=30), max_size=5), st.integers(0, 40), st.integers(0, 130),
       st.none() | st.integers(0, 130), st.booleans(), st.integers(0, 8))
def test_a_partition_verdict_matches_counting_offset_by_offset(
        records: set[int], files: list[set[int]], log_start: int, end: int,
        committed: int | None, expect_progress: bool, gap_limit: int) -> None:
    """Kafka holds ``records`` (the rest are markers, compacted or aborted); the archive holds
    ``files``. Every count of the verdict, against one computed offset by offset.
    ``expect_progress``: the topic is archived and no archiver runs; unverifiable gaps longer
    than ``gap_limit`` are defects."""
    from eventvault.kafka import TopicPartition  # noqa: PLC0415
    from eventvault.verify.check import KafkaState, PartitionCheck  # noqa: PLC0415

    progress = None if committed is None else Progress(committed)
    facts_list = [FileFacts(ref.key, ref, len(offsets), runs(offsets))
                  for offsets in files
                  for ref in [FileRef("t", HOUR, 0, min(offsets), max(offsets))]]
    part = PartitionCheck(TopicPartition("t", 0), facts_list, KafkaState(log_start, end, progress,
                                                                  progress), False, gap_limit)
    wanted = set(expand(part.ranges_to_read()))
    report = part.report(runs(records & wanted), expect_progress=expect_progress)

    archived = set().union(*files)
    horizon = committed if committed is not None else (max(archived) + 1 if archived else 0)
    absent = {o for o in range(max(end, horizon)) if o not in archived}
    read = {o for o in absent if log_start <= o < end}
    assert wanted == read
    count = {kind: sum(d.count for d in report.defects if d.kind == kind)
             for kind in ("missing", "duplicate", "unrecorded_file", "group_offsets_missing",
                          "never_archived", "unverifiable_gap")}
    never = expect_progress and not files and committed is None and bool(records & read)
    assert count["never_archived"] == (end - log_start if never else 0)
    assert count["missing"] == len({o for o in records & read if o < horizon})
    assert count["duplicate"] == sum(len(f) for f in files) - len(archived)
    assert report.pending == (0 if never else len({o for o in records & read if o >= horizon}))
    assert report.nonexistent == len(read - records)
    first = min(archived) if archived else log_start
    assert report.expired == len({o for o in absent if o < min(first, log_start)})
    unverifiable = sorted(o for o in absent if first <= o < log_start)
    assert report.unverifiable == len(unverifiable)
    long_gaps = [gap for gap in runs(unverifiable) if gap[1] - gap[0] + 1 > gap_limit]
    assert count["unverifiable_gap"] == size(long_gaps)
    if committed is None:
        assert count["group_offsets_missing"] == (1 if files else 0)
    else:
        assert count["unrecorded_file"] == sum(1 for f in files if max(f) >= committed)


def test_a_partition_never_archived_is_one_defect_of_its_retained_offsets() -> None:
    found = never_archived_defects("t", 1, 5, 3005, None)  # not read: too many offsets
    assert [(d.kind, d.partition, d.first, d.last, d.count) for d in found] == [
        ("never_archived", 1, 5, 3004, 3000)]
    assert never_archived_defects("t", 1, 5, 10, 0) == []  # only markers
    assert never_archived_defects("t", 1, 5, 5, None) == []  # empty


@given(st.lists(st.integers(1, 3), min_size=1, max_size=40), st.integers(0, 100))
def test_a_transactional_topic_past_retention_is_unverifiable_not_a_defect(
        batches: list[int], cut: int) -> None:
    """30 plain records, then transactions of 1 to 3 records, each followed by its commit
    marker; retention passes some of them. The markers' offsets below the log start are
    unverifiable (counted, no defect); a deleted file of offsets 5..29 is a defect."""
    from eventvault.kafka import TopicPartition  # noqa: PLC0415
    from eventvault.verify.check import KafkaState, PartitionCheck  # noqa: PLC0415

    offsets, at = list(range(30)), 30
    for count in batches:
        offsets += range(at, at + count)
        at += count + 1  # the commit marker
    log_start = min(30 + cut, at)

    def verdict(kept: list[int]) -> tuple[int, list[tuple[str, int]]]:
        held = [FileFacts(ref.key, ref, len(kept), runs(kept))
                for ref in [FileRef("t", HOUR, 0, min(kept), max(kept))]]
        state = KafkaState(log_start, at, Progress(at), Progress(at))
        report = PartitionCheck(TopicPartition("t", 0), held, state, False, 10).report(())
        return report.unverifiable, [(d.kind, d.count) for d in report.defects]

    markers = sum(1 for o in range(log_start) if o not in offsets)
    assert verdict(offsets) == (markers, [])
    assert verdict([o for o in offsets if not 5 <= o < 30]) == (
        markers + 25, [("unverifiable_gap", 25)])


def test_keys_with_impossible_dates_are_bad_keys_to_verify(tmp_path: Path) -> None:
    from eventvault.storage.local import LocalStorage  # noqa: PLC0415
    from eventvault.verify.scan import archive_keys  # noqa: PLC0415

    store = LocalStorage(tmp_path)
    good = FileRef("t", HOUR, 0, 0, 9).key
    bad = [f"topic=t/date=2026-02-30/hour=00/{file_name(0, 10, 19)}",
           f"topic=t/date=2026-01-01/hour=__HIVE_DEFAULT_PARTITION__/{file_name(0, 20, 29)}"]
    for key in [good, *bad]:
        store.put(key, b"")
    files, others = archive_keys(store, "t")
    assert ([key for key, _ in files], sorted(others)) == ([good], sorted(bad))
