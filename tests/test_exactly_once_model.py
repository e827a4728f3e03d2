"""The exactly-once protocol of eventvault.archiver.batching, driven through crashes by Hypothesis.

A model of the runner: every roll is committed as an intent (progress with its cut) before its
file is written; uploads, commits, idle rolls, memory pressure (the runner's
``relieve_memory`` with a small budget), timer checks of passed cuts and crashes interleave at
random; a crash loses buffers and queued uploads, and the restart resumes from the last
committed progress (encoded and decoded as Kafka would hold it, within a commit-metadata limit
that is drawn small, so that offsets around 1e9 and beyond fill it). Uploads of a dead
incarnation may still land late (a zombie), and compaction may remove records after a crash.
Every commit must fit the limit (it raised there before, and the restart raised again); a rebuilt
file must have the name of the cut decided before the crash and the same records (less those
compacted away); after the run, and a drain that goes on under memory pressure, every surviving
offset must be in exactly one file, and no offset in two.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from eventvault.archiver.batching import Limits, PartitionState, Roll, record_size, relieve_memory
from eventvault.layout import FileRef, Hour
from eventvault.progress import Cut, Progress, decode_progress, encode_progress

HOURS: list[Hour] = [None, 9, 10, 11, 493_000, 493_001]  # 493_000: 2026-03-28T16Z
RECORD = record_size(None, b"v", ())


def name(cut: Cut) -> str:
    """The file name a cut is stored under."""
    return FileRef("t", cut.hour, 0, cut.first, cut.last).key


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
    budget: int = 1 << 40  # memory budget of "pressure" (relieve_memory)
    storage: dict[str, list[int]] = field(default_factory=dict)  # file name: offsets
    decided: dict[Cut, frozenset[int]] = field(default_factory=dict)  # as first decided
    committed: Progress = field(default_factory=lambda: Progress(0))
    queue: list[Roll] = field(default_factory=list)
    zombie_queue: list[Roll] = field(default_factory=list)
    pos: int = 0  # index into records of the next record to deliver
    state: PartitionState = field(init=False)
    end: int = field(init=False)  # the log end offset: compaction does not lower it

    def __post_init__(self) -> None:
        self.end = self.records[-1][0] + 1 if self.records else 0
        self.restart()

    def restart(self) -> None:
        self.state = PartitionState("t", 0, self.committed, self.limits)
        self.seek(self.committed.offset)

    def seek(self, offset: int) -> None:
        self.pos = next((i for i, (o, _) in enumerate(self.records) if o >= offset),
                        len(self.records))

    def commit(self) -> None:
        """Commit the progress as Kafka holds it: it must fit the metadata limit."""
        progress = self.state.progress()
        text = encode_progress(progress, self.limits.max_progress_chars)
        self.committed = decode_progress(progress.offset, text)
        assert len(self.committed.cuts) <= self.limits.max_cuts

    def intend(self, rolls: list[Roll]) -> None:
        if rolls:
            self.check_decided(rolls)
            self.commit()  # intent: cuts durable before files
            self.queue += rolls

    def check_decided(self, rolls: list[Roll]) -> None:
        """A new cut gets a new name; a rebuilt one the name and records decided before."""
        alive = {o for o, _ in self.records}
        for roll in rolls:
            rows = set(roll.cols.offsets)
            if roll.rebuilt:
                assert roll.cut in self.decided, f"rebuilt {name(roll.cut)} was never decided"
                before = self.decided[roll.cut]
                assert rows <= before, (name(roll.cut), rows, before)
                assert before & alive <= rows, (name(roll.cut), rows, before)
            else:
                assert roll.cut not in self.decided, f"{name(roll.cut)} decided twice"
                self.decided[roll.cut] = frozenset(rows)

    def rewind(self) -> None:
        """A blocked partition did not take the records from ``blocked_at`` on: feed again."""
        if self.state.blocked_at is not None:
            self.seek(self.state.blocked_at)

    def write(self, roll: Roll, *, zombie: bool = False) -> None:
        key = name(roll.cut)
        if key in self.storage:
            assert set(self.storage[key]) <= self.decided[roll.cut]  # created once, kept
        elif len(roll.cols):
            offsets = roll.cols.offsets
            assert offsets == sorted(offsets)
            assert all(roll.cut.first <= o <= roll.cut.last for o in offsets)
            self.storage[key] = list(offsets)
        if not zombie:
            self.state.done(roll.cut)

    def relieve(self) -> None:
        """The runner's memory relief, and the bound it must keep."""
        inflight = sum(r.nbytes for r in self.queue) * 5 // 2
        self.intend(relieve_memory([self.state], self.budget, inflight))
        buffered = self.state.buffered_bytes
        assert (buffered + inflight <= self.budget or buffered <= self.budget // 4
                or len(self.state.buffers) <= 1), "rebuild buffers held past the budget"

    def tick(self) -> None:
        """The runner's timer: roll recorded cuts the position has passed, then seek back if a
        rebuild pass is over."""
        position = self.records[self.pos][0] if self.pos < len(self.records) else self.end
        self.intend(self.state.passed(position))
        rewind = self.state.take_rewind()
        if rewind is not None:
            self.seek(rewind)

    def step(self, op: str, rng: random.Random) -> None:
        st_ = self.state
        if op == "add" and self.pos < len(self.records):
            offset, hour = self.records[self.pos]
            self.pos += 1
            self.intend(st_.add(offset, hour, offset, "CreateTime", None, b"v", (), 0.0))
            self.rewind()
        elif op == "batch" and self.pos < len(self.records):
            batch = self.records[self.pos:self.pos + rng.randint(1, 12)]
            self.pos += len(batch)
            self.intend(st_.add_records([Rec(o, o) for o, _ in batch], [h for _, h in batch],
                                        ["CreateTime"] * len(batch), 0.0))
            self.rewind()
        elif op == "idle":
            self.intend(st_.roll_expired(now=1e12))
        elif op == "pressure":
            self.relieve()
        elif op == "tick":
            self.tick()
        elif op == "upload" and self.queue:
            self.write(self.queue.pop(rng.randrange(len(self.queue))))
        elif op == "zombie" and self.zombie_queue:
            self.write(self.zombie_queue.pop(0), zombie=True)
        elif op == "commit":
            self.commit()
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
        """Read to the end as the runner does, memory pressure on: it must converge."""
        steps = 0
        while self.pos < len(self.records) or self.state.deferred:
            steps += 1
            assert steps < 20 * (len(self.records) + 2) ** 2, "recovery does not converge"
            if self.pos < len(self.records):
                self.step("add", random.Random(0))
            self.relieve()
            if self.state.blocked_at is not None:  # wait for uploads, commit, go on
                while self.queue:
                    self.write(self.queue.pop(0))
                self.commit()
            if self.pos >= len(self.records):
                self.tick()
        self.intend(self.state.finish(self.end))
        while self.queue:
            self.write(self.queue.pop(0))
        self.commit()


@st.composite
def worlds(draw: st.DrawFn) -> tuple[World, list[str], int]:
    n = draw(st.integers(1, 60))
    # Offsets from 0 or around 1e9 and 1e12, with jumps (compaction, transactions, a topic
    # where most records are of other partitions' keys): bigger numbers in the progress.
    base = draw(st.sampled_from([0, 10**9 - 7, 10**12]))
    gaps = draw(st.lists(st.integers(1, 3) | st.sampled_from([10**4, 10**7, 10**9]),
                         min_size=n, max_size=n))
    hours = draw(st.lists(st.sampled_from(HOURS), min_size=n, max_size=n))
    offsets = [base + sum(gaps[: i + 1]) for i in range(n)]
    limits = Limits(max_records=draw(st.integers(1, 6)), max_cuts=draw(st.integers(2, 8)),
                    grace_hours=draw(st.none() | st.integers(0, 1)),
                    max_progress_chars=draw(st.integers(150, 700)))
    budget = RECORD * draw(st.integers(2, 12))
    ops = draw(st.lists(st.sampled_from(
        ["add"] * 3 + ["batch"] * 3 + ["idle", "pressure", "pressure", "tick", "upload",
                                       "upload", "commit", "crash", "zombie", "compact"]),
        max_size=300))
    world = World(list(zip(offsets, hours, strict=True)), limits, budget)
    return world, ops, draw(st.integers(0, 9))


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
    cuts = {name(cut): cut for cut in world.decided}
    for key, offsets in world.storage.items():
        assert all(original[o] == cuts[key].hour for o in offsets), "record in the wrong hour"
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
    world.commit()
    assert world.committed.offset == 100  # hour 9 still open
    world.step("crash", random.Random(0))
    world.drain()  # no idle pause this time
    counts = Counter(o for offsets in world.storage.values() for o in offsets)
    assert set(counts.values()) == {1}
    assert sorted(counts) == [o for o, _ in records]
    assert name(Cut(150, 180, 10)) in world.storage
    assert name(Cut(181, 300, 10)) in world.storage


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


P = 10**9  # offsets of a partition that has seen a billion records
H = 493_000  # 2026-03-28T16Z, in hours since the epoch


def _recovering(records: list[tuple[int, Hour]], recorded: list[Cut], limits: Limits,
                budget: int) -> World:
    """A world restarting from progress at the first record with ``recorded`` cuts pending
    (decided with the records of their hour in their range, none written)."""
    world = World(records, limits, budget)
    for cut in recorded:
        world.decided[cut] = frozenset(o for o, h in records if h == cut.hour
                                       and cut.first <= o <= cut.last)
    world.committed = Progress(records[0][0], tuple(recorded))
    world.restart()
    return world


def _records_once(world: World) -> None:
    counts = Counter(o for offsets in world.storage.values() for o in offsets)
    assert counts == Counter(o for o, _ in world.records)


def test_rebuild_under_memory_pressure_with_large_offsets_fits_the_commit_metadata() -> None:
    """Issue 10 item 4, as it happened: a recorded cut of hour H spans 2,000 offsets from 1e9;
    hour H+1 is interleaved. The rebuild buffer is over the memory budget, so relief rolled
    the H+1 buffer after every record, each a new cut pinned by the rebuild: the progress grew
    past 3800 characters, the commit raised, and the restart from the same progress raised
    again. Now the rebuild pass reads hour H alone, then reads H+1 again."""
    records: list[tuple[int, Hour]] = [(P + i, H + i % 2) for i in range(2000)]
    cut = Cut(P, P + 1998, H)
    world = _recovering(records, [cut], Limits(max_records=10_000, max_cuts=64),
                        budget=RECORD * 50)
    while world.pos < len(world.records) or world.state.deferred:
        world.step("add", random.Random(0))
        world.relieve()
        while world.queue:
            world.write(world.queue.pop(0))
        world.commit()
        assert len(encode_progress(world.committed)) <= 3800
    world.drain()
    _records_once(world)
    assert sorted(world.storage[name(cut)]) == sorted(world.decided[cut])


def test_rebuilds_that_do_not_fit_the_budget_together_are_rebuilt_one_pass_after_another() -> None:
    """Three recorded cuts (hours H, H+1, H+2 interleaved) of 300 records each; the budget
    holds about one: the oldest rebuild goes on, the others are given up and rebuilt in later
    passes, each file with its recorded name and records."""
    records: list[tuple[int, Hour]] = [(P + i, H + i % 3) for i in range(900)]
    cuts = [Cut(P + k, P + 897 + k, H + k) for k in range(3)]
    world = _recovering(records, cuts, Limits(max_records=10_000), budget=RECORD * 320)
    peak = 0
    while world.pos < len(world.records) or world.state.deferred:
        world.step("add", random.Random(0))
        world.relieve()
        peak = max(peak, world.state.buffered_bytes)
        while world.queue:
            world.write(world.queue.pop(0))
        world.commit()
    world.drain()
    _records_once(world)
    assert {key for key in world.storage} == {name(c) for c in cuts}
    assert peak <= RECORD * 320 + RECORD * 2


def test_a_new_file_never_spans_a_recorded_cut_of_its_hour() -> None:
    """Recorded cut 5..7 of hour 10 lost its records to compaction and is rolled empty; the
    new file of hour 10 that starts at 3 must end before 5: a file 3..8 would hold offsets of
    that recorded range, and after a crash record 8 would be routed to no cut (a duplicate)."""
    records: list[tuple[int, Hour]] = [(3, 10), (4, 9), (8, 10), (9, 9)]
    world = _recovering(records, [Cut(5, 7, 10)], Limits(max_records=10), budget=1 << 40)
    world.decided[Cut(5, 7, 10)] = frozenset()
    world.drain()
    _records_once(world)
    ten = sorted(c for c in world.decided if c.hour == 10 and c != Cut(5, 7, 10))
    assert all(c.last < 5 or c.first > 7 for c in ten), ten


def test_hour_grace_closes_old_hours_by_record_time_alone() -> None:
    state = PartitionState("t", 0, Progress(0), Limits(grace_hours=1))
    rolls = []
    for offset, hour in enumerate([10, 10, 11, 10, 12, 11, 13, None, 10]):
        rolls += state.add(offset, hour, 0, "CreateTime", None, b"v", (), 0.0)
    # hour 10 closes when 12 is read, hour 11 when 13 is read; a late 10 opens a new file
    assert [(r.cut.hour, r.cut.first, r.cut.last) for r in rolls] == [(10, 0, 3), (11, 2, 5)]
    assert sorted(h for h in state.buffers if h is not None) == [10, 12, 13]
    assert None in state.buffers
