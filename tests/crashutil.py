"""Helpers for tests that kill archiver processes: live producers, waiting for a condition,
the processes' JSON logs, and comparing the archive with what was produced.

``Producer``'s record ``i`` goes to partition ``i % partitions`` with key ``k<i>`` and value
``v<i>``; one idempotent producer keeps each partition's records in send order, so offset ``o``
of partition ``p`` holds record ``o * partitions + p`` (``assert_exactly_once`` checks values
by that rule). ``LiveProducer`` remembers what Kafka acknowledged (``assert_archive_is``).
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from tests.cliutil import start_cli

HOUR_MS = 3_600_000
BASE_MS = 1_767_225_600_000  # 2026-01-01T00:00Z


class Producer(threading.Thread):
    """Produces ``total`` records in bursts with pauses, hours jumping back (late events)."""

    def __init__(self, bootstrap: str, topic: str, total: int, partitions: int,
                 seed: int = 1) -> None:
        super().__init__(daemon=True)
        self.args = (bootstrap, topic, total, partitions)
        self.seed = seed
        self.sent = 0

    def run(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        bootstrap, topic, total, partitions = self.args
        rng = random.Random(self.seed)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True,
                                    linger_ms=2)
        await producer.start()
        try:
            deadline = time.monotonic() + 120
            while self.sent < total and time.monotonic() < deadline:
                burst = min(total - self.sent, rng.randint(50, 400))
                for _ in range(burst):
                    hour = self.sent // 1500 - rng.choice([0, 0, 0, 1, 5])  # some late
                    await producer.send(topic, b"v%d" % self.sent, key=b"k%d" % self.sent,
                                        partition=self.sent % partitions,
                                        timestamp_ms=BASE_MS + max(hour, 0) * HOUR_MS)
                    self.sent += 1
                await producer.flush()
                await asyncio.sleep(rng.choice([0.05, 0.2, 0.8]))  # quiet spells: idle rolls
        finally:
            await producer.stop()


def assert_exactly_once(rows: list[dict[str, Any]], partitions: int, total: int) -> None:
    """Each produced record exactly once, with the key and value it was produced with."""
    counts = Counter((r["partition"], r["offset"]) for r in rows)
    dupes = [k for k, n in counts.items() if n > 1]
    assert not dupes, f"{len(dupes)} records archived twice, e.g. {dupes[:5]}"
    assert len(counts) == total, f"{total - len(counts)} records missing"
    for p in range(partitions):
        offs = sorted(o for (pp, o) in counts if pp == p)
        assert offs == list(range(len(offs)))
    wrong = [(r["partition"], r["offset"]) for r in rows
             if (r["key"], r["value"]) != (b"k%d" % (r["offset"] * partitions + r["partition"]),
                                           b"v%d" % (r["offset"] * partitions + r["partition"]))]
    assert not wrong, f"{len(wrong)} records archived with other values, e.g. {wrong[:5]}"


class LiveProducer(threading.Thread):
    """Produces until stopped (or ``limit`` records), hours interleaved; keeps every
    acknowledged record by (partition, offset): (key, value)."""

    def __init__(self, bootstrap: str, topic: str, partitions: int, *, per_second: int = 400,
                 limit: int = 200_000) -> None:
        super().__init__(daemon=True)
        self.args = (bootstrap, topic, partitions, per_second, limit)
        self.acked: dict[tuple[int, int], tuple[bytes, bytes]] = {}
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # reported by stop()
            self.error = exc

    async def _run(self) -> None:
        bootstrap, topic, partitions, per_second, limit = self.args
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True,
                                    linger_ms=5)
        await producer.start()
        sent = 0
        try:
            while not self.stopping.is_set() and sent < limit:
                burst = []
                for _ in range(per_second // 10):
                    key, value = b"k%d" % sent, b"v%d-%s" % (sent, b"x" * (sent % 50))
                    hour = sent // 2000 + (sent % 3 == 2)  # two hours interleaved
                    burst.append((key, value, await producer.send(
                        topic, value, key=key, partition=sent % partitions,
                        timestamp_ms=BASE_MS + hour * HOUR_MS)))
                    sent += 1
                for key, value, future in burst:
                    meta = await future
                    self.acked[(meta.partition, meta.offset)] = (key, value)
                await asyncio.sleep(0.1)
        finally:
            await producer.stop()

    def stop(self) -> dict[tuple[int, int], tuple[bytes, bytes]]:
        """Stop producing; what Kafka acknowledged."""
        self.stopping.set()
        self.join(timeout=60)
        assert self.error is None, f"the producer failed: {self.error!r}"
        return self.acked


def wait_for(condition: Callable[[], object], what: str, timeout: float = 60.0) -> None:
    """Poll ``condition`` until it holds; fail the test naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def log_events(log: Path | str, event: str) -> list[dict[str, Any]]:
    """The JSON log lines of ``event`` in a process's log file (or its text)."""
    if isinstance(log, Path):
        log = log.read_text(errors="replace") if log.exists() else ""
    return [json.loads(line) for line in log.splitlines()
            if line.startswith("{") and f'"event": "{event}"' in line]


def assert_archive_is(rows: list[dict[str, Any]],
                      produced: dict[tuple[int, int], tuple[bytes, bytes]]) -> None:
    """Every produced record exactly once, with its key and value; nothing else."""
    counts = Counter((r["partition"], r["offset"]) for r in rows)
    dupes = [k for k, n in counts.items() if n > 1]
    assert not dupes, f"{len(dupes)} records archived twice, e.g. {dupes[:5]}"
    archived = {(r["partition"], r["offset"]): (r["key"], r["value"]) for r in rows}
    missing = sorted(set(produced) - set(archived))
    assert not missing, f"{len(missing)} records missing, e.g. {missing[:5]}"
    extra = sorted(set(archived) - set(produced))
    assert not extra, f"{len(extra)} records archived that were never acknowledged: {extra[:5]}"
    wrong = [k for k, v in produced.items() if archived[k] != v]
    assert not wrong, f"{len(wrong)} records with other keys or values, e.g. {wrong[:3]}"


def start_archiver(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``eventvault archive`` in the background, its output appended to ``log``."""
    with log.open("ab") as out:
        return start_cli("archive", env=env, stdout=out, stderr=out)
