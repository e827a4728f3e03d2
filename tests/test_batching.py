"""Pure buffering policies: memory relief and event hours."""

from __future__ import annotations

from dataclasses import dataclass

from eventvault.archiver.batching import Limits, PartitionState, relieve_memory
from eventvault.eventtime import EventTimeSpec
from eventvault.layout import hours_of
from eventvault.progress import Cut, Progress


def _state(partition: int, sizes: dict[int, int]) -> PartitionState:
    st = PartitionState("t", partition, Progress(0), Limits())
    for offset, (hour, size) in enumerate(sizes.items()):
        st.add(offset, hour, 0, "CreateTime", None, b"x" * size, (), 0.0)
    return st


def test_relief_rolls_the_largest_buffers_until_under_budget() -> None:
    a, b = _state(0, {1: 5000, 2: 100}), _state(1, {1: 3000, 3: 200})
    rolls = relieve_memory([a, b], budget=4000, inflight_bytes=0)
    assert [(r.partition, r.cut.hour) for r in rolls] == [(0, 1)]
    assert relieve_memory([a, b], budget=100_000, inflight_bytes=0) == []


def test_relief_leaves_small_buffers_when_uploads_hold_the_memory() -> None:
    a = _state(0, {1: 500})
    assert relieve_memory([a], budget=4000, inflight_bytes=10_000) == []


def test_relief_never_rolls_a_rebuilt_cut_early() -> None:
    st = PartitionState("t", 0, Progress(0, (Cut(0, 5, 1),)), Limits())
    st.add(0, 1, 0, "CreateTime", None, b"x" * 5000, (), 0.0)
    assert relieve_memory([st], budget=100, inflight_bytes=0) == []


@dataclass
class R:
    timestamp: int
    value: bytes | None


def test_hours_of() -> None:
    recs = [R(3_600_000 * 5 + 1, None), R(-1, None), R(0, b'{"at": "1970-01-01T07:00:00Z"}')]
    assert hours_of(EventTimeSpec(), recs) == [5, None, 0]
    assert hours_of(EventTimeSpec("at"), recs) == [None, None, 7]


def test_a_bounded_run_never_closes_a_rebuilt_cut_before_its_recorded_last_offset() -> None:
    """A --once run whose end offset falls inside a recorded cut leaves the cut open.

    Closing it would write the file named after the cut with part of its records, and the next
    run would skip the rest as durable (lost).
    """
    cut = Cut(5, 20, 1)
    st = PartitionState("t", 0, Progress(5, (cut,)), Limits())
    for offset in range(5, 10):  # the first end offset seen was 10, inside the cut
        st.add(offset, 1, 0, "CreateTime", None, b"x", (), 0.0)
    assert st.finish(10) == []
    assert st.needed_end() == 21  # how far a bounded run adopting it reads
    assert st.commit_point() == 5  # the next run reads the cut again
    for offset in range(10, 21):
        st.add(offset, 1, 0, "CreateTime", None, b"x", (), 0.0)
    assert st.progress().offset == 5
    assert len(st.pending) == 1
