"""The exactly-once protocol of eventvault.archiver.batching, driven through crashes by Hypothesis.

A model of the runner: every roll is committed as an intent (progress with its cut) before its
file is written; uploads, commits, idle rolls, memory-pressure rolls and crashes interleave at
random; a crash loses buffers and queued uploads, and the restart resumes from the last
committed progress (encoded and decoded as Kafka would hold it). Uploads of a dead incarnation
may still land late (a zombie), and compaction may remove records after a crash. At the end
every surviving offset must be in exactly one file, and no offset in two.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from eventvault.archiver.batching import Limits, PartitionState, Roll
from eventvault.layout import Hour
from eventvault.progress import Cut, Progress, decode_progress, encode_progress

HOURS: list[Hour] = [None, 9, 10, 11]


@dataclass(frozen=True)
class Rec:
    offset: int
    timestamp: int
    key: bytes | None = None
    value: bytes | None = b"v"
    headers: Sequence[tuple[str, bytes | None]] = ()


@dataclass
class World:
    records: list[tuple[int, Hour]]
    limits: Limits
    storage: dict[Cut, list[int]] = field(default_factory=dict)
    committed: Progress = field(default_factory=lambda: Progress(0))
    queue: list[Roll] = field(default_factory=list)
    zombie_queue: list[Roll] = field(default_factory=list)
    pos: int = 0  # index into records of the next record to deliver
    state: PartitionState = field(init=False)

    def __post_init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        text = encode_progress(self.committed)
        self.state = PartitionState("t", 0, decode_progress(self.committed.offset, text),
                                    self.limits)
        self.pos = next((i for i, (o, _) in enumerate(self.records)
                         if o >= self.committed.offset), len(self.records))

    def intend(self, rolls: list[Roll]) -> None:
        if rolls:
            self.committed = self.state.progress()  # intent: cuts durable before files
            # What Kafka's commit metadata holds stays bounded (offset.metadata.max.bytes);
            # only a rebuild after a restart may pin more cuts for a while.
            assert len(self.committed.cuts) <= self.limits.max_cuts or self.state.rebuilding
            self.queue += rolls

    def rewind(self) -> None:
        """A blocked partition did not take the records from ``blocked_at`` on: feed again."""
        if self.state.blocked_at is not None:
            self.pos = next(i for i, (o, _) in enumerate(self.records)
                            if o == self.state.blocked_at)

    def write(self, roll: Roll, *, zombie: bool = False) -> None:
        if roll.rebuilt and roll.cut in self.storage:
            pass  # its file was written before; keep it
        elif len(roll.cols):
            offsets = roll.cols.offsets
            assert offsets == sorted(offsets)
            assert all(roll.cut.first <= o <= roll.cut.last for o in offsets)
            self.storage[roll.cut] = list(offsets)
        if not zombie:
            self.state.done(roll.cut)

    def step(self, op: str, rng: random.Random) -> None:
        st_ = self.state
        if op == "add" and self.pos < len(self.records):
            offset, hour = self.records[self.pos]
            self.pos += 1
            self.intend(st_.add(offset, hour, offset, "CreateTime", None, b"v", (), 0.0))
            self.rewind()
        elif op == "batch" and self.pos < len(self.records):
            batch = self.records[self.pos:self.pos + rng.randint(1, 6)]
            self.pos += len(batch)
            self.intend(st_.add_records([Rec(o, o) for o, _ in batch], [h for _, h in batch],
                                        ["CreateTime"] * len(batch), 0.0))
            self.rewind()
        elif op == "idle":
            self.intend(st_.roll_expired(now=1e12))
        elif op == "pressure" and st_.buffers:
            hours = [h for h, b in st_.buffers.items() if b.cut is None]
            if hours:
                self.intend([st_.roll(rng.choice(hours))])
        elif op == "upload" and self.queue:
            self.write(self.queue.pop(rng.randrange(len(self.queue))))
        elif op == "zombie" and self.zombie_queue:
            self.write(self.zombie_queue.pop(0), zombie=True)
        elif op == "commit":
            self.committed = st_.progress()
        elif op == "crash":
            self.zombie_queue += self.queue
            self.queue = []
            self.restart()
        elif op == "compact":
            # Compaction may remove records the archiver has not read yet.
            unread = [i for i in range(self.pos, len(self.records))]
            if unread:
                del self.records[rng.choice(unread)]
        elif op == "compact_next" and self.pos < len(self.records):
            del self.records[self.pos]

    def drain(self) -> None:
        while self.pos < len(self.records):
            self.step("add", random.Random(0))
            if self.state.blocked_at is not None:  # wait for uploads, commit, go on
                while self.queue:
                    self.write(self.queue.pop(0))
                self.committed = self.state.progress()
        end = self.records[-1][0] + 1 if self.records else 0
        self.intend(self.state.finish(end))
        while self.queue:
            self.write(self.queue.pop(0))
        self.committed = self.state.progress()


@st.composite
def worlds(draw: st.DrawFn) -> tuple[World, list[str], int]:
    n = draw(st.integers(1, 40))
    gaps = draw(st.lists(st.integers(1, 3), min_size=n, max_size=n))
    hours = draw(st.lists(st.sampled_from(HOURS), min_size=n, max_size=n))
    offsets = [sum(gaps[: i + 1]) for i in range(n)]
    limits = Limits(max_records=draw(st.integers(1, 6)), max_cuts=draw(st.integers(2, 8)),
                    grace_hours=draw(st.none() | st.integers(0, 1)))
    ops = draw(st.lists(st.sampled_from(
        ["add"] * 3 + ["batch"] * 3 + ["idle", "pressure", "upload", "upload", "commit",
                                       "crash", "zombie", "compact"]), max_size=200))
    return World(list(zip(offsets, hours, strict=True)), limits), ops, draw(st.integers(0, 9))


@settings(max_examples=600, deadline=None)
@given(worlds())
def test_every_offset_exactly_once_through_crashes(case: tuple[World, list[str], int]) -> None:
    world, ops, seed = case
    original = dict(world.records)
    rng = random.Random(seed)
    for op in ops:
        world.step(op, rng)
    for roll in world.zombie_queue:  # late uploads of dead incarnations land too
        world.write(roll, zombie=True)
    world.drain()
    counts = Counter(o for offsets in world.storage.values() for o in offsets)
    assert max(counts.values(), default=1) == 1, counts.most_common(3)
    assert set(counts) >= {o for o, _ in world.records}, "a surviving record is missing"
    assert set(counts) <= set(original)
    for cut, offsets in world.storage.items():
        assert all(original[o] == cut.hour for o in offsets), "record in the wrong hour"
    if world.records:  # the end is committed; records compacted away after being read may
        # have moved it past the last one that survives, never past the last one produced
        assert world.records[-1][0] + 1 <= world.committed.offset <= max(original) + 1


def test_pitfall_idle_roll_then_crash_does_not_duplicate() -> None:
    """shared/pitfalls.md #1, literally: hour 9 open at 100; hour 10 rolled by the idle timer
    at 150-180 and 181-300; crash; the restart reads 100.. with no idle pause."""
    records: list[tuple[int, Hour]] = [(100, 9), *((o, 10) for o in range(150, 301)), (301, 9)]
    world = World(records, Limits(max_records=10_000))
    for _ in range(1 + 31):  # offsets 100 and 150..180
        world.step("add", random.Random(0))
    world.intend([world.state.roll(10)])  # the idle timer fires for hour 10
    for _ in range(120):  # 181..300
        world.step("add", random.Random(0))
    world.intend([world.state.roll(10)])
    while world.queue:
        world.write(world.queue.pop(0))
    world.committed = world.state.progress()
    assert world.committed.offset == 100  # hour 9 still open
    world.step("crash", random.Random(0))
    world.drain()  # no idle pause this time
    counts = Counter(o for offsets in world.storage.values() for o in offsets)
    assert set(counts.values()) == {1}
    assert sorted(counts) == [o for o, _ in records]
    assert Cut(150, 180, 10) in world.storage
    assert Cut(181, 300, 10) in world.storage


def _drive(world: World, ops: list[str]) -> Counter[int]:
    rng = random.Random(0)
    for op in ops:
        world.step(op, rng)
    for roll in world.zombie_queue:
        world.write(roll, zombie=True)
    world.drain()
    return Counter(o for offsets in world.storage.values() for o in offsets)


def test_recorded_cut_whose_first_record_was_compacted_holds_the_commit_point() -> None:
    """Cut (1..5, hour 10) is decided, not written; crash; record 1 is compacted away. The
    restart must not commit past offset 1 before that cut is rebuilt, or record 5 is lost."""
    world = World([(1, 10), (2, 9), (3, 9), (4, 9), (5, 10)], Limits(max_records=2))
    world.step("add", random.Random(0))
    for _ in range(4):
        world.step("add", random.Random(0))
    assert {r.cut for r in world.queue} == {Cut(2, 3, 9), Cut(1, 5, 10)}
    world.write(next(r for r in world.queue if r.cut == Cut(2, 3, 9)))
    world.queue = [r for r in world.queue if r.cut != Cut(2, 3, 9)]
    world.queue, dropped = [], world.queue  # crash: the write of cut 1..5 never happened
    world.restart()
    del world.records[0]  # compaction removes offset 1
    counts = _drive(world, ["add", "add", "upload", "commit", "crash"])
    assert dropped
    assert counts == Counter({2: 1, 3: 1, 4: 1, 5: 1})


def test_rebuilt_cut_keeps_its_recorded_name_when_its_first_record_is_gone() -> None:
    """A zombie writes cut 1..5 after the restart rebuilt it without record 1: same file name,
    so record 5 is stored once."""
    world = World([(1, 10), (2, 9), (5, 10)], Limits(max_records=2))
    counts = _drive(world, ["add", "add", "add", "crash", "compact_next", "add", "add"])
    assert counts[5] == 1



def test_hour_grace_closes_old_hours_by_record_time_alone() -> None:
    state = PartitionState("t", 0, Progress(0), Limits(grace_hours=1))
    rolls = []
    for offset, hour in enumerate([10, 10, 11, 10, 12, 11, 13, None, 10]):
        rolls += state.add(offset, hour, 0, "CreateTime", None, b"v", (), 0.0)
    # hour 10 closes when 12 is read, hour 11 when 13 is read; a late 10 opens a new file
    assert [(r.cut.hour, r.cut.first, r.cut.last) for r in rolls] == [(10, 0, 3), (11, 2, 5)]
    assert sorted(h for h in state.buffers if h is not None) == [10, 12, 13]
    assert None in state.buffers
