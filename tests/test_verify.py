"""``eventvault verify`` against the real broker and moto S3: a clean archive is exact, and each
defect injected into a copy of it is reported as exactly that defect, with exit code 5."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions

from eventvault import format as fmt
from eventvault import kafka, kafka_probes
from eventvault.layout import FileRef, parse_file_key
from eventvault.settings import KafkaSettings, StorageSettings
from eventvault.storage.s3 import S3Storage
from eventvault.verify.check import verify
from eventvault.verify.cli import render
from tests.cliutil import archiver_env, run_cli, start_cli
from tests.kafkautil import Rec, archive_once, create_topic, delete_group, produce, settings

pytestmark = pytest.mark.integration
HOUR_MS = 3_600_000
BASE_MS = 1_767_225_600_000  # 2026-01-01T00:00Z


def verify_cli(bootstrap: str, endpoint: str, url: str, group: str,
               *extra: str) -> tuple[int, dict[str, Any]]:
    env = {"EVENTVAULT_KAFKA__BOOTSTRAP_SERVERS": bootstrap, "EVENTVAULT_STORAGE__URL": url,
           "EVENTVAULT_STORAGE__ENDPOINT_URL": endpoint, "EVENTVAULT_ARCHIVE__GROUP_ID": group}
    done = run_cli("verify", "--output", "json", *extra, env=env)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode >= 0, done.stderr[-3000:]
    return done.returncode, json.loads(done.stdout)


def defect_kinds(report: dict[str, Any]) -> Counter[str]:
    found = Counter(d["kind"] for p in report["partitions"] for d in p["defects"])
    found.update(d["kind"] for d in report["other"])
    return found


class Bucket:
    """The test bucket through boto3 (not through eventvault), to copy and damage archives."""

    def __init__(self, endpoint: str, name: str) -> None:
        self.client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        self.name = name

    def keys(self, prefix: str) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name,
                                                                       Prefix=prefix)
        return [o["Key"][len(prefix):] for page in pages for o in page.get("Contents", [])]

    def copy(self, source: str, target: str) -> None:
        for key in self.keys(source):
            self.client.copy_object(Bucket=self.name, Key=target + key,
                                    CopySource={"Bucket": self.name, "Key": source + key})

    def get(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.name, Key=key)["Body"].read()

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.name, Key=key, Body=data)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.name, Key=key)


def fresh_topic(bootstrap: str, kind: str, partitions: int = 1,
                config: dict[str, str] | None = None) -> tuple[str, str]:
    """A new topic and its archiver group."""
    topic = f"verify.{kind}-{uuid.uuid4().hex[:6]}"
    create_topic(bootstrap, topic, partitions=partitions, config=config)
    return topic, f"g-{topic}"


def later_file(keys: list[str]) -> FileRef:
    """A file of partition 0 that does not start at offset 0."""
    refs = sorted(ref for ref in map(parse_file_key, keys) if ref is not None)
    return next(r for r in refs if r.partition == 0 and r.first_offset > 0)


def test_verify_clean_archive_and_each_injected_defect(kafka_bootstrap: str, s3_endpoint: str,
                                                       s3_bucket: str) -> None:
    topic, group = fresh_topic(kafka_bootstrap, "defects", partitions=2)
    produce(kafka_bootstrap, topic, [Rec(i % 2, b"k%d" % i, b"v%d" % i,
                                         timestamp_ms=BASE_MS + (i // 2 % 3) * HOUR_MS)
                                     for i in range(600)])
    url = f"s3://{s3_bucket}/orig"
    archive_once(settings(kafka_bootstrap, url, [topic], group, s3_endpoint,
                          max_file_records=50))
    code, report = verify_cli(kafka_bootstrap, s3_endpoint, url, group)
    assert (code, report["exact"], defect_kinds(report)) == (0, True, Counter())
    assert [(p["partition"], p["rows"], p["archived"], p["committed"], p["pending"])
            for p in report["partitions"]] == [(0, 300, [0, 299], 300, 0),
                                               (1, 300, [0, 299], 300, 0)]
    bucket = Bucket(s3_endpoint, s3_bucket)
    keys = bucket.keys("orig/")
    victim = later_file(keys)
    rows = fmt.decode(bucket.get(f"orig/{victim.key}"))

    def dropped(prefix: str) -> None:
        bucket.delete(prefix + victim.key)

    def duplicated(prefix: str) -> None:
        twin = FileRef(topic, victim.hour, 0, victim.first_offset - 1, victim.last_offset)
        bucket.put(prefix + twin.key, bucket.get(prefix + victim.key))

    def reversed_rows(prefix: str) -> None:
        backwards = rows.take(list(range(rows.num_rows - 1, -1, -1)))
        bucket.put(prefix + victim.key, fmt.encode(backwards))

    def corrupted(prefix: str) -> None:
        bucket.put(prefix + victim.key, b"PAR1" + b"\x00" * 100)

    def misfiled(prefix: str) -> None:
        assert victim.hour is not None
        moved = FileRef(topic, victim.hour + 5, 0, victim.first_offset, victim.last_offset)
        bucket.put(prefix + moved.key, bucket.get(prefix + victim.key))
        bucket.delete(prefix + victim.key)

    def misnamed(prefix: str) -> None:
        moved = FileRef(topic, victim.hour, 0, victim.first_offset + 1, victim.last_offset)
        bucket.put(prefix + moved.key, bucket.get(prefix + victim.key))
        bucket.delete(prefix + victim.key)

    def reshaped(prefix: str) -> None:
        wide = rows.set_column(0, "partition", rows.column("partition").cast("int64"))
        bucket.put(prefix + victim.key, fmt.encode(wide))

    cases: list[tuple[Callable[[str], None], str, int]] = [
        (misnamed, "name_mismatch", 1), (reshaped, "schema", 1),
        (dropped, "missing", rows.num_rows), (duplicated, "duplicate", rows.num_rows),
        (reversed_rows, "out_of_order", 1), (corrupted, "unreadable", 1),
        (misfiled, "wrong_hour", 1)]
    for inject, kind, count in cases:
        prefix = f"{inject.__name__}/"
        bucket.copy("orig/", prefix)
        inject(prefix)
        code, report = verify_cli(kafka_bootstrap, s3_endpoint, f"s3://{s3_bucket}/{prefix}",
                                  group)
        defects = [d for p in report["partitions"] for d in p["defects"]]
        assert (code, report["exact"], defect_kinds(report)) == (5, False, Counter({kind: 1})), \
            (kind, defects)
        assert defects[0]["count"] == count, defects
        assert defects[0]["partition"] == 0

    delete_group(kafka_bootstrap, group)  # as Kafka does when the group's offsets expire
    code, report = verify_cli(kafka_bootstrap, s3_endpoint, url, group)
    assert (code, defect_kinds(report)) == (5, Counter({"group_offsets_missing": 2}))


async def _produce_transactions(bootstrap: str, topic: str) -> None:
    """Committed and aborted transactions: markers and aborted records the archive skips."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"tx-{topic}")
    await producer.start()
    try:
        for n in range(6):
            async with producer.transaction():
                for i in range(20):
                    await producer.send(topic, b"c%d-%d" % (n, i), partition=n % 2,
                                        timestamp_ms=BASE_MS)
            await producer.begin_transaction()
            await producer.send(topic, b"aborted", partition=n % 2, timestamp_ms=BASE_MS)
            await producer.abort_transaction()
    finally:
        await producer.stop()


def test_verify_transactional_topic_is_exact(kafka_bootstrap: str, s3_endpoint: str,
                                             s3_bucket: str) -> None:
    topic, group = fresh_topic(kafka_bootstrap, "tx", partitions=2)
    asyncio.run(_produce_transactions(kafka_bootstrap, topic))
    url = f"s3://{s3_bucket}/tx"
    archive_once(settings(kafka_bootstrap, url, [topic], group, s3_endpoint,
                          max_file_records=7))
    code, report = verify_cli(kafka_bootstrap, s3_endpoint, url, group)
    assert (code, report["exact"]) == (0, True), report
    parts = report["partitions"]
    assert [p["rows"] for p in parts] == [60, 60]
    # per partition: 3 commit markers, 3 aborted records and 3 abort markers hold no record
    assert [(p["nonexistent"], p["pending"]) for p in parts] == [(9, 0), (9, 0)], parts


async def _count_records(bootstrap: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        seen = 0
        while await consumer.position(tp) < end:
            seen += len((await consumer.getmany(tp, timeout_ms=500)).get(tp, []))
        return seen
    finally:
        await consumer.stop()


def test_verify_compacted_topic_is_exact(kafka_bootstrap: str, s3_endpoint: str,
                                         s3_bucket: str) -> None:
    topic, group = fresh_topic(kafka_bootstrap, "compact", config={
        "cleanup.policy": "compact", "segment.ms": "100", "min.cleanable.dirty.ratio": "0.001",
        "delete.retention.ms": "0", "min.compaction.lag.ms": "0"})
    produced = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # new records roll segments; the cleaner follows
        produce(kafka_bootstrap, topic, [Rec(0, b"k%d" % (i % 5), b"v%d" % i) for i in range(50)])
        produced += 50
        time.sleep(2)
        if asyncio.run(_count_records(kafka_bootstrap, topic)) < produced - 100:
            break
    kept = asyncio.run(_count_records(kafka_bootstrap, topic))
    assert kept < produced - 100, "the log cleaner did not compact within 120 s"
    url = f"s3://{s3_bucket}/compact"
    archive_once(settings(kafka_bootstrap, url, [topic], group, s3_endpoint))
    code, report = verify_cli(kafka_bootstrap, s3_endpoint, url, group)
    assert (code, report["exact"]) == (0, True), report
    part = report["partitions"][0]
    assert (part["log_start"], part["committed"]) == (0, part["end"])
    assert part["rows"] <= kept  # the cleaner may have gone on meanwhile
    assert part["nonexistent"] == part["end"] - part["rows"] > 0


def test_verify_while_the_archiver_runs_finds_no_false_defect(kafka_bootstrap: str,
                                                               tmp_path: Path) -> None:
    """The listing and the two reads of the committed progress are ordered so that files
    being written meanwhile are pending or recorded cuts, never defects."""
    topic, group = fresh_topic(kafka_bootstrap, "live", partitions=2)
    url = f"file://{tmp_path}/live"
    env = archiver_env(kafka_bootstrap, url, topic, MAX_FILE_RECORDS="30")
    assert env["EVENTVAULT_ARCHIVE__GROUP_ID"] == group  # verify checks the archiver's group
    stop = threading.Event()

    async def keep_producing() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=5)
        await producer.start()
        try:
            sent = 0
            while not stop.is_set():
                for _ in range(20):  # hours jump back and forth: cuts stay recorded
                    await producer.send(topic, b"v", partition=sent % 2,
                                        timestamp_ms=BASE_MS + (sent % 7 % 3) * HOUR_MS)
                    sent += 1
                await asyncio.sleep(0.05)
        finally:
            await producer.stop()

    thread = threading.Thread(target=lambda: asyncio.run(keep_producing()))
    thread.start()
    archiver = start_cli("archive", env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    reports = []
    try:
        time.sleep(6)
        for _ in range(4):
            done = run_cli("verify", "--topic", topic, "--output", "json", env=env)
            reports.append((done.returncode, json.loads(done.stdout)))
    finally:
        stop.set()
        thread.join()
        archiver.send_signal(signal.SIGTERM)
        archiver.wait(timeout=60)
    assert [(code, defect_kinds(report)) for code, report in reports] == [(0, Counter())] * 4
    assert all(sum(p["rows"] for p in report["partitions"]) > 0 for _, report in reports)
    assert any(sum(p["pending"] for p in report["partitions"]) > 0 for _, report in reports), \
        "verify never ran while records were waiting: the test proved little"


def test_verify_storage_error_is_one_line_and_exit_3(kafka_bootstrap: str,
                                                     s3_endpoint: str) -> None:
    done = run_cli("verify", "--topic", "any", "--storage-url", "s3://no-such-bucket-ev/x",
                   env={"EVENTVAULT_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
                        "EVENTVAULT_STORAGE__ENDPOINT_URL": s3_endpoint})
    assert done.returncode == 3, done.stderr
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("eventvault: error: S3")


def test_records_present_below_the_log_start_finds_what_kafka_still_holds(
        kafka_bootstrap: str) -> None:
    """A gap whose first offsets retention deleted after verify read the log offsets: the
    probe must not jump to the end of the log and call the whole gap nonexistent."""
    topic, _ = fresh_topic(kafka_bootstrap, "probe-start")
    produce(kafka_bootstrap, topic, [Rec(0, b"k", b"v%d" % i) for i in range(100)])
    tp = TopicPartition(topic, 0)
    kafka_settings = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    asyncio.run(kafka.delete_records(kafka_settings, {tp: 50}))
    presence = asyncio.run(kafka_probes.records_present(kafka_settings, {tp: ((10, 89),)}))
    assert presence.found[tp] == [(50, 89)]
    assert presence.log_starts[tp] == 50


def test_verify_reports_a_partition_added_after_archiving_as_never_archived(
        kafka_bootstrap: str, s3_endpoint: str, s3_bucket: str) -> None:
    """Partition 1 is added once partition 0 is archived: its records, with neither files nor
    committed progress while no archiver runs, are a defect, not pending."""
    topic, group = fresh_topic(kafka_bootstrap, "added")
    produce(kafka_bootstrap, topic, [Rec(0, b"k", b"v%d" % i, timestamp_ms=BASE_MS)
                                     for i in range(40)])
    url = f"s3://{s3_bucket}/added"
    archive = settings(kafka_bootstrap, url, [topic], group, s3_endpoint)
    archive_once(archive)

    async def add_partition() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            await admin.create_partitions({topic: NewPartitions(total_count=2)})
        finally:
            await admin.close()
    asyncio.run(add_partition())
    produce(kafka_bootstrap, topic, [Rec(1, b"k", b"w%d" % i, timestamp_ms=BASE_MS)
                                     for i in range(25)])
    code, report = verify_cli(kafka_bootstrap, s3_endpoint, url, group)
    assert (code, defect_kinds(report)) == (5, Counter({"never_archived": 1})), report
    defect = report["partitions"][1]["defects"][0]
    assert (defect["partition"], defect["first"], defect["last"], defect["count"]) == \
        (1, 0, 24, 25)
    archive_once(archive)  # the next run takes the new partition: exact again
    code, report = verify_cli(kafka_bootstrap, s3_endpoint, url, group)
    assert (code, [p["rows"] for p in report["partitions"]]) == (0, [40, 25]), report


def test_verify_reports_a_deleted_file_below_the_log_start_as_unverifiable(
        kafka_bootstrap: str, s3_endpoint: str, s3_bucket: str) -> None:
    """Retention passed an archived file, then the file was deleted: its offsets are between
    archived ones, so they are unverifiable (not expired), and a defect past the limit."""
    topic, group = fresh_topic(kafka_bootstrap, "unverifiable")
    produce(kafka_bootstrap, topic, [Rec(0, b"k", b"v%d" % i, timestamp_ms=BASE_MS)
                                     for i in range(3000)])
    url = f"s3://{s3_bucket}/unverifiable"
    archive_once(settings(kafka_bootstrap, url, [topic], group, s3_endpoint,
                          max_file_records=1200))
    tp = TopicPartition(topic, 0)
    asyncio.run(kafka.delete_records(KafkaSettings(bootstrap_servers=kafka_bootstrap),
                                     {tp: 2400}))
    code, report = verify_cli(kafka_bootstrap, s3_endpoint, url, group)
    part = report["partitions"][0]
    assert (code, part["log_start"], part["expired"], part["unverifiable"]) == (0, 2400, 0, 0)
    bucket = Bucket(s3_endpoint, s3_bucket)
    middle = FileRef(topic, BASE_MS // HOUR_MS, 0, 1200, 2399)
    assert middle.key in bucket.keys("unverifiable/")
    bucket.delete(f"unverifiable/{middle.key}")
    code, report = verify_cli(kafka_bootstrap, s3_endpoint, url, group)
    part = report["partitions"][0]
    assert (code, part["expired"], part["unverifiable"]) == (5, 0, 1200), report
    assert [(d["kind"], d["first"], d["last"], d["count"]) for d in part["defects"]] == [
        ("unverifiable_gap", 1200, 2399, 1200)]
    code, report = verify_cli(kafka_bootstrap, s3_endpoint, url, group,
                              "--unverifiable-gap", "1200")
    assert (code, report["partitions"][0]["unverifiable"]) == (0, 1200)
    code, report = verify_cli(kafka_bootstrap, s3_endpoint, url, group, "--strict",
                              "--unverifiable-gap", "1200")
    assert code == 5


class RetentionMeanwhile(S3Storage):
    """The archive on S3, with a retention run deleting ``victim`` just after the listing."""

    def __init__(self, settings: StorageSettings, bucket: Bucket, victim: str) -> None:
        name, prefix = settings.bucket_and_prefix()
        super().__init__(name, prefix, settings)
        self.retention, self.victim = bucket, victim

    def list(self, prefix: str = "") -> Iterator[str]:
        keys = list(super().list(prefix))
        if self.victim in keys and prefix.startswith("topic="):
            self.retention.delete(self.prefix + self.victim)
        return iter(keys)


def test_verify_leaves_out_a_file_deleted_between_listing_and_reading(
        kafka_bootstrap: str, s3_endpoint: str, s3_bucket: str) -> None:
    """A file gone when read is not a storage error (exit 3): it is left out and named; its
    records, still in Kafka, are then missing from the archive."""
    topic, group = fresh_topic(kafka_bootstrap, "removed")
    produce(kafka_bootstrap, topic, [Rec(0, b"k", b"v%d" % i, timestamp_ms=BASE_MS)
                                     for i in range(90)])
    archive = settings(kafka_bootstrap, f"s3://{s3_bucket}/removed", [topic], group,
                       s3_endpoint, max_file_records=30)
    archive_once(archive)
    bucket = Bucket(s3_endpoint, s3_bucket)
    victim = FileRef(topic, BASE_MS // HOUR_MS, 0, 30, 59).key
    storage = RetentionMeanwhile(archive.storage, bucket, victim)
    report = verify(archive, storage, [topic], group)
    assert report.removed == (victim,)
    assert [(p.files, p.rows) for p in report.partitions] == [(2, 60)]
    assert [(d.kind, d.first, d.last) for d in report.defects] == [("missing", 30, 59)]
    assert f"1 file removed while verifying (retention or erasure meanwhile), left out: " \
        f"{victim}" in render(report)
