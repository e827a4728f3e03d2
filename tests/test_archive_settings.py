"""Archive settings that had no test: file limits by bytes and by age, LogAppendTime topics,
server-side encryption of stored objects, and topics chosen by a regular expression."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import boto3
import pytest
from aiokafka import AIOKafkaProducer

from eventvault.archiver.batching import record_size
from eventvault.archiver.runner import Archiver
from eventvault.layout import parse_file_key
from eventvault.storage import open_storage
from eventvault.storage.local import LocalStorage
from eventvault.times import MS_PER_HOUR
from tests.kafkautil import Rec, archive_once, create_topic, produce, read_archive, settings

pytestmark = pytest.mark.integration
BASE_MS = 1_767_225_600_000  # 2026-01-01T00:00Z


def files_by_partition(rows: list[dict[str, object]]) -> dict[int, list[list[int]]]:
    """Each partition's files, in offset order, as their offsets."""
    files: dict[str, list[int]] = defaultdict(list)
    for row in rows:
        files[str(row["file"])].append(int(str(row["offset"])))
    found: dict[int, list[list[int]]] = defaultdict(list)
    for key in sorted(files):
        ref = parse_file_key(key)
        assert ref is not None
        found[ref.partition].append(files[key])
    return found


def test_max_file_bytes_rolls_files(kafka_bootstrap: str, tmp_path: Path) -> None:
    topic = f"limits.bytes-{uuid.uuid4().hex[:6]}"
    create_topic(kafka_bootstrap, topic, partitions=2)
    value = b"x" * 1000
    produce(kafka_bootstrap, topic, [Rec(i % 2, b"k", value, timestamp_ms=BASE_MS)
                                     for i in range(200)])
    limit = 10_000
    per_file = -(-limit // record_size(b"k", value, ()))  # a file rolls once it reaches limit
    s = settings(kafka_bootstrap, f"file://{tmp_path}/a", [topic], f"g-{topic}",
                 max_file_bytes=limit)
    archive_once(s)
    files = files_by_partition(read_archive(open_storage(s.storage)))
    for partition in (0, 1):
        sizes = [len(offsets) for offsets in files[partition]]
        assert sizes == [per_file] * (100 // per_file) + ([100 % per_file] if 100 % per_file
                                                          else []), sizes


def test_max_file_age_rolls_a_busy_buffer(kafka_bootstrap: str, tmp_path: Path) -> None:
    """Records every 0.1 s never leave the buffer idle for idle_seconds: only age rolls it."""
    topic = f"limits.age-{uuid.uuid4().hex[:6]}"
    create_topic(kafka_bootstrap, topic)
    s = settings(kafka_bootstrap, f"file://{tmp_path}/a", [topic], f"g-{topic}",
                 idle_seconds=60.0, max_file_age_seconds=2.0)
    store = LocalStorage(tmp_path / "a")
    archiver = Archiver(s, store)
    written_while_running: list[str] = []

    async def scenario() -> None:
        task = asyncio.create_task(archiver.run())
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            started = time.monotonic()
            while time.monotonic() - started < 9:
                await producer.send_and_wait(topic, b"busy", timestamp_ms=BASE_MS)
                await asyncio.sleep(0.1)
        finally:
            await producer.stop()
        written_while_running.extend(store.list("topic="))
        archiver.stop()
        await task

    asyncio.run(scenario())
    assert len(written_while_running) >= 2, written_while_running
    rows = read_archive(store)
    offsets = sorted(int(r["offset"]) for r in rows)
    assert offsets == list(range(len(offsets)))


def test_log_append_time_topic(kafka_bootstrap: str, tmp_path: Path) -> None:
    """The broker's append time replaces the producer's: stored with its type, and it picks
    the hour directory."""
    topic = f"logappend-{uuid.uuid4().hex[:6]}"
    create_topic(kafka_bootstrap, topic, config={"message.timestamp.type": "LogAppendTime"})
    before_ms = int(time.time() * 1000)
    produce(kafka_bootstrap, topic, [Rec(0, b"k%d" % i, b"v", timestamp_ms=BASE_MS)
                                     for i in range(20)])
    after_ms = int(time.time() * 1000)
    s = settings(kafka_bootstrap, f"file://{tmp_path}/a", [topic], f"g-{topic}")
    archive_once(s)
    rows = read_archive(open_storage(s.storage))
    assert len(rows) == 20
    for row in rows:
        assert row["timestamp_type"] == "LogAppendTime"
        stamp = row["timestamp"]
        assert isinstance(stamp, datetime)
        stamp_ms = int(stamp.astimezone(UTC).timestamp() * 1000)
        assert before_ms - 1000 <= stamp_ms <= after_ms + 1000
        assert row["hour"] == stamp_ms // MS_PER_HOUR


@pytest.mark.parametrize(("sse", "key_id"), [("AES256", None), ("aws:kms", "alias/archive")])
def test_server_side_encryption_reaches_s3(kafka_bootstrap: str, s3_endpoint: str,
                                           s3_bucket: str, sse: str, key_id: str | None) -> None:
    topic = f"sse-{uuid.uuid4().hex[:6]}"
    create_topic(kafka_bootstrap, topic)
    produce(kafka_bootstrap, topic, [Rec(0, b"k", b"v", timestamp_ms=BASE_MS)] * 3)
    s = settings(kafka_bootstrap, f"s3://{s3_bucket}/enc", [topic], f"g-{topic}",
                 endpoint=s3_endpoint)
    storage = {**s.storage.model_dump(), "sse": sse, "sse_kms_key_id": key_id}
    s = s.model_copy(update={"storage": type(s.storage)(**storage)})
    assert archive_once(s).files == 1
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    [key] = [o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket)["Contents"]]
    head = client.head_object(Bucket=s3_bucket, Key=key)
    assert head["ServerSideEncryption"] == sse
    if key_id:
        assert head["SSEKMSKeyId"].endswith(key_id)


def test_topics_regex_archives_exactly_the_matching_topics(kafka_bootstrap: str,
                                                           tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:6]
    wanted = [f"rx{run}.orders", f"rx{run}.payments"]
    unwanted = [f"rx{run}.orders.dlq", f"x.rx{run}.payments"]  # the whole name must match
    for topic in wanted + unwanted:
        create_topic(kafka_bootstrap, topic)
        produce(kafka_bootstrap, topic, [Rec(0, b"k", topic.encode(), timestamp_ms=BASE_MS)])
    s = settings(kafka_bootstrap, f"file://{tmp_path}/a", [], f"g-rx{run}",
                 topics_regex=rf"rx{run}\.(orders|payments)")
    archive_once(s)
    store = open_storage(s.storage)
    assert list(store.topics()) == sorted(wanted)
    assert sorted(r["value"] for r in read_archive(store)) == sorted(t.encode() for t in wanted)
