"""Helpers of the real-process fault tests: a live producer with late events, the oracle.

The producer's record ``i`` goes to partition ``i % partitions`` with key ``k<i>`` and value
``v<i>``; one idempotent producer keeps each partition's records in send order, so offset ``o``
of partition ``p`` holds record ``o * partitions + p``: the oracle checks values, not only
(partition, offset).
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


def log_events(log: Path, event: str) -> list[dict[str, Any]]:
    """The JSON log lines of ``event`` in an archiver's log."""
    return [json.loads(line) for line in log.read_text().splitlines()
            if line.startswith("{") and json.loads(line).get("event") == event]


def start_archiver(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``eventvault archive`` in the background, its output appended to ``log``."""
    with log.open("ab") as out:
        return start_cli("archive", env=env, stdout=out, stderr=out)


def wait_for(what: str, check: Callable[[], object], timeout: float = 60.0) -> None:
    """Poll ``check`` until it is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
