"""The pure core of replay: file selection, clusters, partitioners, checkpoint, plan, preflight."""

from __future__ import annotations

import itertools

import pytest
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given
from hypothesis import strategies as st

from eventvault.kafka import TopicInfo
from eventvault.layout import FileRef
from eventvault.query.selection import Selection, clusters, select_files
from eventvault.replay.checkpoint import Checkpoint, decode_checkpoint, encode_checkpoint
from eventvault.replay.partitioning import murmur2, partitioner
from eventvault.replay.plan import Plan, Target
from eventvault.replay.preflight import preflight
from eventvault.replay.producer import Pacing
from eventvault.replay.source import PartitionSummary

# org.apache.kafka.common.utils.UtilsTest#testMurmur2
JAVA = {b"21": -973932308, b"foobar": -790332482, b"a-little-bit-long-string": -985981536,
        b"a-little-bit-longer-string": -1486304829,
        b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971, b"abc": 479470107}


def test_murmur2_matches_java() -> None:
    assert {k: murmur2(k) for k in JAVA} == JAVA


@given(st.binary(max_size=64))
def test_murmur2_matches_aiokafka(data: bytes) -> None:
    assert murmur2(data) & 0x7FFFFFFF == aiokafka_murmur2(data) & 0x7FFFFFFF


def test_partitioners() -> None:
    assert partitioner(Target("t"), 3)(2, b"x") == 2
    assert partitioner(Target("t", "map", ((0, 4), (1, 0))), 5)(0, None) == 4
    by_key = partitioner(Target("t", "key"), 7)
    assert by_key(0, b"foobar") == (-790332482 & 0x7FFFFFFF) % 7
    assert by_key(5, None) == 5


ranges = st.tuples(st.integers(0, 200), st.integers(0, 30))
files = st.lists(ranges.map(lambda r: FileRef("t", r[0] % 5 or None, 0, r[0], r[0] + r[1])),
                 max_size=20)


@given(files)
def test_clusters_never_interleave(refs: list[FileRef]) -> None:
    groups = clusters(refs)
    order = lambda f: (f.first_offset, f.last_offset, f.hour or -1)  # noqa: E731
    assert sorted((f for g in groups for f in g), key=order) == sorted(refs, key=order)
    for before, after in itertools.pairwise(groups):
        assert max(f.last_offset for f in before) < min(f.first_offset for f in after)


def test_select_files_by_partition_offsets_and_hours() -> None:
    hour = 494_000
    refs = [FileRef("t", hour, 0, 0, 9), FileRef("t", hour + 1, 0, 10, 19),
            FileRef("t", None, 0, 5, 5), FileRef("t", hour, 1, 0, 9),
            FileRef("u", hour, 0, 0, 9)]
    start = (hour + 1) * 3_600_000_000
    sel = Selection("t", start_us=start, partitions=(0,))
    assert select_files(refs, sel, record_time=True) == {0: [refs[2], refs[1]]}
    assert select_files(refs, sel, record_time=False) == {0: [refs[0], refs[2], refs[1]]}
    sel = Selection("t", from_offsets=((None, 6),), to_offsets=((0, 10),))
    assert select_files(refs, sel, True) == {0: [refs[0]], 1: [refs[3]]}
    assert sel.offset_range(0) == (6, 10)
    assert sel.offset_range(1) == (6, None)


@given(st.dictionaries(st.integers(0, 300), st.integers(0, 2**62), max_size=40),
       st.integers(1, 9), st.integers(1, 10**6))
def test_progress_round_trips_across_target_partitions(
        offsets: dict[int, int], count: int, seq: int) -> None:
    metadata = [encode_checkpoint(seq, offsets, t, count) for t in range(count)]
    assert decode_checkpoint(metadata) == Checkpoint(seq if offsets or count else 0, offsets)
    assert decode_checkpoint([]) == Checkpoint(0, {})


def test_plan_json_round_trip() -> None:
    plan = Plan("r1", Selection("a.b", 1, 2, (0, 1), ((None, 5),), ((1, 9),), (b"\x00k",),
                                "value_json->>'$.t' = 'x'"),
                Target("c", "map", ((0, 1),), False, "now"), "2026-11-22T00:00:00+00:00")
    assert Plan.from_json(plan.to_json()) == plan


def test_preflight() -> None:
    info = TopicInfo("dst", 2, 10_000, "CreateTime", 86_400_000, 2**63 - 1, 3_600_000)
    now = 1_800_000_000_000
    fresh = PartitionSummary(0, 10, 0, 9, (now - 1000) * 1000, now * 1000, 100, 50, 3)
    assert preflight(info, Target("dst"), "src", [fresh], now, force=False) == []
    old = PartitionSummary(3, 10, 0, 9, 0, now * 1000, 100, 9_900, 7)
    found = preflight(info, Target("dst"), "src", [old], now, force=False)
    messages = " | ".join(f.message for f in found)
    assert all(f.fatal for f in found)
    assert "source partition 3 has no target partition" in messages
    assert "record src/3/7 is 9900 bytes" in messages
    assert "retention.ms=86400000" in messages
    forced = preflight(info, Target("dst", "key"), "src", [old], now, force=True)
    assert [f.fatal for f in forced] == [True, False]  # too large stays fatal
    future = PartitionSummary(0, 1, 0, 0, now * 1000, (now + 7_200_000) * 1000, 1, 1, 0)
    assert "after.max.ms" in preflight(info, Target("dst"), "src", [future], now, False)[0].message
    assert preflight(None, Target("dst"), "src", [], now, False)[0].fatal
    many = [PartitionSummary(p, 1, 0, 0, now * 1000, now * 1000, 1, 1, 0) for p in range(300)]
    one = TopicInfo("dst", 1, 10_000, "CreateTime", -1, 2**63 - 1, 2**63 - 1)
    assert "offset.metadata.max.bytes" in preflight(one, Target("dst", "key"), "src", many, now,
                                                    False)[0].message
    assert preflight(info, Target("dst", "key"), "src", many[:100], now, False) == []


def test_pacing_keeps_both_limits() -> None:
    pacing = Pacing(records_per_s=100, bytes_per_s=1000, started=10.0)
    assert pacing.delay(50, 0, now=10.2) == pytest.approx(0.3)
    assert pacing.delay(50, 900, now=10.2) == pytest.approx(0.7)  # bytes are the tighter
    assert pacing.delay(10, 10, now=11.0) == 0.0
    assert Pacing(started=0.0).delay(10**9, 10**12, now=0.0) == 0.0
