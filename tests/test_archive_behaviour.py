"""How the archiver behaves over time: bounded runs, idle rolls, event time, memory budget."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client import REGISTRY

from eventvault.archiver.runner import Archiver
from eventvault.layout import HIVE_NULL
from eventvault.storage import open_storage
from eventvault.storage.local import LocalStorage
from tests.kafkautil import Rec, archive_once, create_topic, produce, read_archive, settings

pytestmark = pytest.mark.integration


async def _end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        return {tp.partition: o for tp, o in (await consumer.end_offsets(tps)).items()}
    finally:
        await consumer.stop()


def test_once_stops_at_end_offsets_seen_at_start(kafka_bootstrap: str, tmp_path: Path) -> None:
    topic = f"once.live-{uuid.uuid4().hex[:6]}"
    create_topic(kafka_bootstrap, topic, partitions=2)
    produce(kafka_bootstrap, topic, [Rec(i % 2, None, b"pre", timestamp_ms=None)
                                     for i in range(2000)])
    stop = threading.Event()

    async def keep_producing() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=5)
        await producer.start()
        try:
            deadline = time.monotonic() + 60
            while not stop.is_set() and time.monotonic() < deadline:
                for i in range(50):
                    await producer.send(topic, b"live", partition=i % 2)
                await asyncio.sleep(0.01)
        finally:
            await producer.stop()

    thread = threading.Thread(target=lambda: asyncio.run(keep_producing()))
    thread.start()
    try:
        time.sleep(1.0)
        before = asyncio.run(_end_offsets(kafka_bootstrap, topic, 2))
        s = settings(kafka_bootstrap, f"file://{tmp_path}/a", [topic], f"g-{topic}")
        summary = archive_once(s)
        after = asyncio.run(_end_offsets(kafka_bootstrap, topic, 2))
    finally:
        stop.set()
        thread.join()
    rows = read_archive(open_storage(s.storage))
    for p in (0, 1):
        offsets = sorted(r["offset"] for r in rows if r["partition"] == p)
        end = summary.committed[f"{topic}[{p}]"]
        assert offsets == list(range(end)), "not a gap-free prefix"
        assert before[p] <= end < after[p], "did not stop at the end offsets seen at start"


def test_idle_partition_reaches_storage_in_bounded_time(kafka_bootstrap: str,
                                                        tmp_path: Path) -> None:
    topic = f"idle.quiet-{uuid.uuid4().hex[:6]}"
    create_topic(kafka_bootstrap, topic, partitions=1)
    s = settings(kafka_bootstrap, f"file://{tmp_path}/a", [topic], f"g-{topic}",
                 idle_seconds=1.0, max_file_records=1_000_000)
    store = LocalStorage(tmp_path / "a")
    archiver = Archiver(s, store)
    found: list[int] = []

    async def scenario() -> None:
        task = asyncio.create_task(archiver.run())
        await asyncio.sleep(3)  # joined the group
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        for i in range(5):
            await producer.send_and_wait(topic, b"quiet %d" % i)
        await producer.stop()
        sent = time.monotonic()
        while time.monotonic() - sent < 20 and len(found) < 5:
            await asyncio.sleep(0.2)
            found[:] = [r["offset"] for r in read_archive(store)]
        found.append(int(time.monotonic() - sent))
        archiver.stop()
        await task

    asyncio.run(scenario())
    *offsets, waited = found
    assert offsets == [0, 1, 2, 3, 4]
    assert waited <= 5, "records of a quiet partition waited more than idle time + ticks"
    labels = {"topic": topic}
    assert REGISTRY.get_sample_value("eventvault_records_archived_total", labels) == 5
    assert REGISTRY.get_sample_value("eventvault_files_written_total", labels) == 1
    assert REGISTRY.get_sample_value("eventvault_partition_lag",
                                     {**labels, "partition": "0"}) == 0


def test_event_time_from_json_field_and_bad_event_times(kafka_bootstrap: str,
                                                        tmp_path: Path) -> None:
    topic = f"events_json-{uuid.uuid4().hex[:6]}"
    create_topic(kafka_bootstrap, topic)
    ts = 1_700_000_000_000  # 2023-11-14T22:13:20Z: the record timestamp, not the event time
    values = {
        b"iso": b'{"meta": {"at": "2026-03-01T10:30:00+02:00"}}',
        b"naive": b'{"meta": {"at": "2026-03-01T10:30:00"}}',
        b"missing": b'{"meta": {}}',
        b"notjson": b"\xff\x00garbage",
        b"negative": b'{"meta": {"at": -5}}',
        b"badtext": b'{"meta": {"at": "yesterday"}}',
        b"millis": b'{"meta": {"at": 1767225600000}}',
        b"tombstone": None,
    }
    produce(kafka_bootstrap, topic, [Rec(0, k, v, timestamp_ms=ts) for k, v in values.items()])
    s = settings(kafka_bootstrap, f"file://{tmp_path}/a", [topic], f"g-{topic}",
                 event_time={topic: {"field": "meta.at"}})
    archive_once(s)
    where = {r["key"]: r["file"].split("/")[1] + "/" + r["file"].split("/")[2]
             for r in read_archive(open_storage(s.storage))}
    null = f"date={HIVE_NULL}/hour={HIVE_NULL}"
    assert where == {
        b"iso": "date=2026-03-01/hour=08", b"naive": "date=2026-03-01/hour=10",
        b"millis": "date=2026-01-01/hour=00", b"missing": null, b"notjson": null,
        b"negative": null, b"badtext": null, b"tombstone": null,
    }


def test_memory_stays_within_budget_with_many_open_hours(kafka_bootstrap: str,
                                                         tmp_path: Path) -> None:
    """Late events keep 200 hour buckets open; 40 MB of records pass a 16 MiB budget."""
    topic = f"late.hours-{uuid.uuid4().hex[:6]}"
    create_topic(kafka_bootstrap, topic, partitions=2)
    base = 1_760_000_000_000
    records = [Rec(i % 2, b"%d" % i, bytes([i % 251]) * 20_000,
                   timestamp_ms=base + (i * 7919 % 200) * 3_600_000) for i in range(2000)]
    produced = produce(kafka_bootstrap, topic, records)
    budget = 16 << 20
    s = settings(kafka_bootstrap, f"file://{tmp_path}/a", [topic], f"g-{topic}",
                 memory_budget_bytes=budget, max_cuts_per_partition=100)
    summary = archive_once(s)
    # Sampled at its peak, with rolled files in flight (each counts 2.5 times its buffered
    # size while it is encoded): relief keeps buffers plus files in flight under the budget
    # when it rolls, so the peak is at most the budget plus 1.5 times what one relief rolled.
    assert summary.peak_buffered_bytes <= budget * 5 // 2
    assert summary.peak_buffered_bytes > budget, "the peak was not sampled with files in flight"
    rows = read_archive(open_storage(s.storage))
    counts = Counter((r["partition"], r["offset"]) for r in rows)
    assert set(counts.values()) == {1}
    assert set(counts) == set(produced)


def test_cut_limit_applies_backpressure(kafka_bootstrap: str, tmp_path: Path) -> None:
    """One record per file and room for two cuts: the archiver must keep stopping, waiting for
    uploads and reading again, and still archive every record exactly once."""
    topic = f"backpressure-{uuid.uuid4().hex[:6]}"
    create_topic(kafka_bootstrap, topic, partitions=2)
    produced = produce(kafka_bootstrap, topic, [
        Rec(i % 2, b"%d" % i, b"v", timestamp_ms=1_760_000_000_000 + (i % 3) * 3_600_000)
        for i in range(300)])
    s = settings(kafka_bootstrap, f"file://{tmp_path}/a", [topic], f"g-{topic}",
                 max_file_records=1, max_cuts_per_partition=2)
    summary = archive_once(s)
    assert summary.files == 300
    rows = read_archive(open_storage(s.storage))
    counts = Counter((r["partition"], r["offset"]) for r in rows)
    assert set(counts.values()) == {1}
    assert set(counts) == set(produced)
