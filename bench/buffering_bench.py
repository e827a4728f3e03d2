"""Benchmark: buffering records in a partition's state, batch loop against one call per record.

Pure Python, no I/O: 400,000 records of ~1 KB with one header, in batches of 20,000, as the
archiver's consumer loop feeds them. Prints the best of 9 runs of each path.

    .venv/bin/python -m bench.buffering_bench
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from eventvault.archiver.batching import Limits, PartitionState
from eventvault.progress import Progress
from eventvault.times import MS_PER_HOUR, timestamp_us

N = 400_000
BATCH = 20_000
LIMITS = Limits(max_records=10**9, max_bytes=1 << 62, grace_hours=1)


@dataclass(frozen=True)
class Record:
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]


RECORDS = [Record(i, 1_767_225_600_000 + i * 10, b"order-%d" % i, b"x" * 1000,
                  (("content-type", b"application/json"),)) for i in range(N)]
HOURS = [r.timestamp // MS_PER_HOUR for r in RECORDS]
TYPES = ["CreateTime"] * N


def batch_loop() -> float:
    state = PartitionState("t", 0, Progress(0), LIMITS)
    started = time.perf_counter()
    for i in range(0, N, BATCH):
        state.add_records(RECORDS[i:i + BATCH], HOURS[i:i + BATCH], TYPES[i:i + BATCH], 0.0)
    return time.perf_counter() - started


def call_per_record() -> float:
    state = PartitionState("t", 0, Progress(0), LIMITS)
    started = time.perf_counter()
    for r, hour, ts_type in zip(RECORDS, HOURS, TYPES, strict=True):
        state.add(r.offset, hour, timestamp_us(r.timestamp), ts_type, r.key, r.value, r.headers,
                  0.0)
    return time.perf_counter() - started


def best(run: Callable[[], float], repeat: int = 9) -> float:
    return N / min(run() for _ in range(repeat))


def main() -> None:
    loop, calls = best(batch_loop), best(call_per_record)
    print(f"batch loop (add_records):  {loop:,.0f} records/s")
    print(f"one add() call per record: {calls:,.0f} records/s")
    print(f"ratio: {loop / calls:.2f}")


if __name__ == "__main__":
    main()
