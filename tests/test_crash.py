"""Exactly once in the archive through kill -9, restarts, rebalances and S3 faults.

Every test ends by counting the archive's records by (partition, offset): each produced
offset exactly once, none missing; and ``eventvault verify`` is a second oracle, which also
compares the files with Kafka and with the group's committed progress.
"""

from __future__ import annotations

import json
import random
import signal
import time
import uuid
from pathlib import Path

import pytest

from eventvault.errors import StorageError
from eventvault.settings import Settings, StorageSettings
from eventvault.storage import open_storage
from eventvault.verify.check import Report, verify
from tests.cliutil import archiver_env
from tests.crashutil import Producer, assert_exactly_once, log_events, start_archiver, wait_for
from tests.faulty_s3 import FaultyS3
from tests.kafkautil import archive_once, create_topic, read_archive, settings

pytestmark = pytest.mark.integration


def assert_verified(s: Settings, topic: str) -> Report:
    """``eventvault verify`` finds the archive exact."""
    report = verify(s, open_storage(s.storage), [topic], s.archive.group_id)
    assert report.exact, report.defects[:5]
    return report


def test_kill_9_at_random_moments_then_drain(kafka_bootstrap: str, tmp_path: Path) -> None:
    topic = f"crash.kill9-{uuid.uuid4().hex[:6]}"
    partitions, total = 4, 24_000
    create_topic(kafka_bootstrap, topic, partitions=partitions)
    url = f"file://{tmp_path}/arch"
    env = archiver_env(kafka_bootstrap, url, topic, MAX_FILE_RECORDS="150",
                       MAX_FILE_AGE_SECONDS="2")
    producer = Producer(kafka_bootstrap, topic, total, partitions)
    producer.start()
    rng = random.Random(3)
    log = tmp_path / "archiver.log"
    kills = 0
    while kills < 6:
        proc = start_archiver(env, log)
        # A killed member holds its partitions until its 6 s session expires; the next one
        # gets them after that and works for a few seconds before its own kill.
        time.sleep(rng.uniform(8.0, 12.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
    producer.join(timeout=150)
    assert producer.sent == total
    store = open_storage(StorageSettings(url=url))
    files_before_drain = len(list(store.list()))
    s = settings(kafka_bootstrap, url, [topic], f"g-{topic}")
    archive_once(s)
    assert_exactly_once(read_archive(store), partitions, total)
    report = assert_verified(s, topic)
    assert sum(p.rows for p in report.partitions) == total
    assert {(p.pending, p.expired) for p in report.partitions} == {(0, 0)}
    adopted = [json.loads(line) for line in log.read_text().splitlines()
               if '"partitions adopted"' in line]
    assert files_before_drain > 20, "the killed archivers wrote little: the test proved little"
    assert any(p["cuts"] > 0 and p["resume"] > 0 for a in adopted
               for p in a["partitions"].values()), "no restart resumed with recorded cuts"


def test_rebalance_between_two_members(kafka_bootstrap: str, tmp_path: Path) -> None:
    """B joins while A archives (partitions move), A is killed, B takes all; then drain."""
    topic = f"crash.rebalance-{uuid.uuid4().hex[:6]}"
    partitions, total = 6, 15_000
    create_topic(kafka_bootstrap, topic, partitions=partitions)
    url = f"file://{tmp_path}/arch"
    env = archiver_env(kafka_bootstrap, url, topic, MAX_FILE_RECORDS="200")
    producer = Producer(kafka_bootstrap, topic, total, partitions)
    producer.start()
    log = tmp_path / "archiver.log"
    a = start_archiver(env, log)
    wait_for(lambda: log_events(log, "partitions assigned"), "the first member's partitions")
    assert len(log_events(log, "partitions assigned")[0]["partitions"]) == partitions, \
        "the first member did not hold every partition before the second joined"
    time.sleep(2)
    b = start_archiver(env, log)
    time.sleep(6)
    a.send_signal(signal.SIGKILL)
    a.wait()
    producer.join(timeout=150)
    time.sleep(8)
    b.send_signal(signal.SIGTERM)  # graceful: uploads finish, progress committed
    assert b.wait(timeout=60) == 0
    revoked = log.read_text().count('"partitions revoked"')
    assert revoked >= 1, "no rebalance happened"
    store = open_storage(StorageSettings(url=url))
    drain = settings(kafka_bootstrap, url, [topic], f"g-{topic}")
    archive_once(drain)
    assert_exactly_once(read_archive(store), partitions, total)
    assert_verified(drain, topic)


@pytest.mark.parametrize("rate", [0.3])
def test_s3_faults_are_retried(kafka_bootstrap: str, s3_endpoint: str, s3_bucket: str,
                               rate: float) -> None:
    topic = f"s3.faults-{uuid.uuid4().hex[:6]}"
    partitions = 3
    create_topic(kafka_bootstrap, topic, partitions=partitions)
    producer = Producer(kafka_bootstrap, topic, 3000, partitions)
    producer.run()
    proxy = FaultyS3(s3_endpoint, rate).start()
    try:
        s = settings(kafka_bootstrap, f"s3://{s3_bucket}/faulty", [topic], f"g-{topic}",
                     endpoint=proxy.endpoint_url, max_file_records=100)
        summary = archive_once(s)
    finally:
        proxy.stop()
    assert sum(proxy.injected.values()) >= 10, proxy.injected
    assert {"503", "500", "reset-before", "reset-after"} <= set(proxy.injected)
    assert summary.files >= 30
    store = open_storage(StorageSettings(url=f"s3://{s3_bucket}/faulty", endpoint_url=s3_endpoint))
    assert_exactly_once(read_archive(store), partitions, 3000)
    assert_verified(settings(kafka_bootstrap, f"s3://{s3_bucket}/faulty", [topic], f"g-{topic}",
                             endpoint=s3_endpoint), topic)


def test_s3_outage_fails_the_run_then_a_rerun_completes(kafka_bootstrap: str, s3_endpoint: str,
                                                        s3_bucket: str) -> None:
    """Every PUT fails: the run exits with a storage error and commits nothing past the
    files that exist; a rerun against a healthy S3 archives everything exactly once."""
    topic = f"s3.outage-{uuid.uuid4().hex[:6]}"
    create_topic(kafka_bootstrap, topic, partitions=2)
    Producer(kafka_bootstrap, topic, 1000, 2).run()
    proxy = FaultyS3(s3_endpoint, rate=1.0).start()
    url = f"s3://{s3_bucket}/outage"
    try:
        s = settings(kafka_bootstrap, url, [topic], f"g-{topic}", endpoint=proxy.endpoint_url,
                     max_file_records=100)
        s = s.model_copy(update={"storage": s.storage.model_copy(update={"max_attempts": 2})})
        with pytest.raises(StorageError):
            archive_once(s)
    finally:
        proxy.stop()
    healthy = settings(kafka_bootstrap, url, [topic], f"g-{topic}", endpoint=s3_endpoint,
                       max_file_records=100)
    # the run that gave up committed nothing past the files that exist: verify agrees
    gave_up = assert_verified(healthy, topic)
    assert sum(p.pending for p in gave_up.partitions) == 1000 - sum(p.rows for p in
                                                                    gave_up.partitions)
    archive_once(healthy)
    store = open_storage(healthy.storage)
    assert_exactly_once(read_archive(store), 2, 1000)
