"""S3 failing on every method (PUT, HEAD, GET, LIST), with a live producer and kill -9.

Faults come from tests/faulty_s3.py's proxy in streaks longer than botocore's own 5 attempts,
so only eventvault's retries get past them: the proxy counts the streaks outlasted. The
archive is then compared with what Kafka acknowledged, keys and values.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from eventvault import kafka
from eventvault.layout import parse_file_key
from eventvault.progress import decode_progress
from eventvault.settings import KafkaSettings, StorageSettings
from eventvault.storage import open_storage
from eventvault.storage.s3 import S3Storage
from tests.cliutil import archiver_env, run_cli, start_cli
from tests.crashutil import LiveProducer, assert_archive_is, wait_for
from tests.faulty_s3 import FaultyS3
from tests.kafkautil import create_topic, read_archive

pytestmark = pytest.mark.integration
SEED = int(os.environ.get("EVENTVAULT_TEST_SEED", random.randrange(10**6)))


def _env(bootstrap: str, url: str, topic: str, endpoint: str, **archive: str) -> dict[str, str]:
    return {**archiver_env(bootstrap, url, topic, MAX_FILE_RECORDS="150", **archive),
            "EVENTVAULT_STORAGE__ENDPOINT_URL": endpoint}


def _kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def test_faults_on_every_method_through_kills(kafka_bootstrap: str, s3_endpoint: str,
                                              s3_bucket: str, tmp_path: Path) -> None:
    print(f"seed {SEED} (replay with EVENTVAULT_TEST_SEED={SEED})")
    rng = random.Random(SEED)
    topic = f"s3.every-{uuid.uuid4().hex[:6]}"
    partitions = 2
    create_topic(kafka_bootstrap, topic, partitions=partitions)
    url = f"s3://{s3_bucket}/every"
    proxy = FaultyS3(s3_endpoint, rate=0.05, methods=("PUT", "POST", "HEAD", "GET"),
                     seed=SEED, streak=6, rates={"HEAD": 0.3, "GET": 0.1, "LIST": 0.5},
                     list_streak=3).start()
    env = _env(kafka_bootstrap, url, topic, proxy.endpoint_url)
    producer = LiveProducer(kafka_bootstrap, topic, partitions)
    producer.start()
    log = tmp_path / "archiver.log"
    try:
        for _ in range(3):
            with log.open("ab") as out:
                proc = start_cli("archive", env=env, stdout=out, stderr=out)
            time.sleep(rng.uniform(10.0, 14.0))  # 6 s for the killed one's session, then work
            _kill(proc)
        produced = producer.stop()
        drain = run_cli("archive", "--once", env=env, timeout=300)  # still through the faults
        assert drain.returncode == 0, drain.stderr[-3000:]
        faulty = open_storage(StorageSettings(url=url, endpoint_url=proxy.endpoint_url))
        rows = read_archive(faulty)  # LIST and GET through the faults too
        hours = {r["file"].rsplit("/", 1)[0] + "/" for r in rows}
        assert sum(len(list(faulty.list(hour))) for hour in hours) == len({r["file"] for r in rows})
    finally:
        producer.stopping.set()
        proxy.stop()
    print(f"faults {dict(proxy.by_method)}, streaks outlasted by eventvault's retries "
          f"{proxy.outlasted}, records {len(produced)}")
    assert_archive_is(rows, produced)
    assert {"PUT", "HEAD", "GET", "LIST"} <= set(proxy.by_method), proxy.by_method
    assert proxy.outlasted >= 3, (proxy.outlasted, proxy.by_method)
    assert len({r["file"] for r in rows}) > 20, "few files: the test proved little"


def test_a_run_that_gives_up_commits_only_what_exists(kafka_bootstrap: str, s3_endpoint: str,
                                                     s3_bucket: str, tmp_path: Path) -> None:
    """S3 goes down under a live archiver: it gives up with one line and exit 3. What it
    committed must match what exists: every offset below the committed offset is in a file,
    and every file is below it or a recorded cut of the committed progress."""
    topic = f"s3.gives-up-{uuid.uuid4().hex[:6]}"
    partitions = 2
    create_topic(kafka_bootstrap, topic, partitions=partitions)
    url = f"s3://{s3_bucket}/gives-up"
    store = open_storage(StorageSettings(url=url, endpoint_url=s3_endpoint))
    proxy = FaultyS3(s3_endpoint, rate=0.0, methods=("PUT", "POST", "HEAD"),
                     faults=("503", "500")).start()
    env = {**_env(kafka_bootstrap, url, topic, proxy.endpoint_url),
           "EVENTVAULT_STORAGE__MAX_ATTEMPTS": "2"}
    producer = LiveProducer(kafka_bootstrap, topic, partitions)
    producer.start()
    try:
        proc = start_cli("archive", env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        wait_for(lambda: len(list(store.list())) >= 6, "the first files", timeout=90)
        proxy.rate = 1.0  # S3 is down from here on
        _, stderr = proc.communicate(timeout=240)
        produced = producer.stop()
    finally:
        producer.stopping.set()
        proxy.stop()
    assert proc.returncode == 3, stderr[-3000:]
    errors = [line for line in stderr.decode().splitlines() if not line.startswith("{")]
    assert len(errors) == 1, errors
    assert errors[0].startswith("eventvault: error: S3 "), errors
    rows = read_archive(store)
    committed = asyncio.run(kafka.committed_offsets(
        KafkaSettings(bootstrap_servers=kafka_bootstrap), f"g-{topic}",
        [kafka.TopicPartition(topic, p) for p in range(partitions)]))
    for tp, (offset, metadata) in committed.items():
        progress = decode_progress(offset, metadata)
        mine = [r for r in rows if r["partition"] == tp.partition]
        archived = {r["offset"] for r in mine}
        assert set(range(offset)) <= archived, f"{tp}: offsets below {offset} not in a file"
        recorded = {(c.first, c.last, c.hour) for c in progress.cuts}
        for key in {r["file"] for r in mine}:
            ref = parse_file_key(key)
            assert ref is not None
            assert ref.last_offset < offset or (
                ref.first_offset, ref.last_offset, ref.hour) in recorded, \
                f"{key} is above the committed offset {offset} and not a recorded cut"
    assert committed, "nothing was committed"
    healthy = _env(kafka_bootstrap, url, topic, s3_endpoint)
    assert run_cli("archive", "--once", env=healthy, timeout=300).returncode == 0
    assert_archive_is(read_archive(store), produced)


def test_a_listing_resumes_page_by_page_through_faults(s3_endpoint: str, s3_bucket: str,
                                                       versioned_bucket: str) -> None:
    """Each page's LIST fails three times before it passes (botocore sends each request once):
    every page is retried from the marker of the page before, so each key comes once, none
    missing. The streak is fixed, not drawn at random, so four attempts always suffice."""
    for bucket, operation in ((s3_bucket, "list_objects_v2"),
                              (versioned_bucket, "list_object_versions")):
        direct = open_storage(StorageSettings(url=f"s3://{bucket}/p", endpoint_url=s3_endpoint))
        keys = [f"k/{i:03d}" for i in range(20)]
        for key in keys:
            direct.put(key, b"x")
        proxy = FaultyS3(s3_endpoint, rate=0.0, methods=("GET",), seed=SEED, rates={"LIST": 1.0},
                         list_streak=3, faults=("503", "500", "reset-before")).start()
        try:
            faulty = open_storage(StorageSettings(url=f"s3://{bucket}/p",
                                                  endpoint_url=proxy.endpoint_url))
            assert isinstance(faulty, S3Storage)
            pages = list(faulty._pages(operation, Prefix="p/k/", MaxKeys=5))
        finally:
            proxy.stop()
        entries = "Contents" if operation == "list_objects_v2" else "Versions"
        listed = [e["Key"].removeprefix("p/") for page in pages for e in page.get(entries, [])]
        assert listed == keys, operation
        assert len(pages) >= 4
        assert proxy.by_method["LIST"] == 3 * len(pages), proxy.by_method
        assert proxy.outlasted == len(pages), proxy.outlasted
