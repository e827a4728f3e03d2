"""Failures met inside aiokafka's rebalance listener end the run; they are never only logged.

aiokafka runs the listener in its coordinator task and logs what it raises. An upload that
fails while a revocation waits for it must still end the run with exit 3.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from eventvault import kafka
from eventvault.settings import KafkaSettings, StorageSettings
from eventvault.storage import open_storage
from tests.cliutil import archiver_env, run_cli
from tests.crashutil import log_events, start_archiver, wait_for
from tests.faulty_s3 import FaultyS3
from tests.kafkautil import Rec, create_topic, produce, read_archive

pytestmark = pytest.mark.integration


def test_an_upload_failing_during_a_revocation_ends_the_run(
        kafka_bootstrap: str, s3_endpoint: str, s3_bucket: str, tmp_path: Path) -> None:
    """A's one upload is held by the proxy until a second member forces a revocation, whose
    listener waits for it; then it fails for good. A must exit 3 (it went on silently, its
    commit point frozen), and its commits must match the files."""
    topic = f"revoke.fails-{uuid.uuid4().hex[:6]}"
    create_topic(kafka_bootstrap, topic, partitions=2)
    produced = produce(kafka_bootstrap, topic, [Rec(0, b"k%d" % i, b"v%d" % i) for i in range(100)])
    url = f"s3://{s3_bucket}/revoke-fails"
    store = open_storage(StorageSettings(url=url, endpoint_url=s3_endpoint))
    proxy = FaultyS3(s3_endpoint, rate=1.0, methods=("PUT", "POST"), faults=("500",)).start()
    healthy = archiver_env(kafka_bootstrap, url, topic)
    env = {**healthy, "EVENTVAULT_STORAGE__ENDPOINT_URL": proxy.endpoint_url,
           "EVENTVAULT_STORAGE__MAX_ATTEMPTS": "2"}
    healthy["EVENTVAULT_STORAGE__ENDPOINT_URL"] = s3_endpoint
    proxy.hold()
    a_log, b_log = tmp_path / "a.log", tmp_path / "b.log"
    member_a = start_archiver(env, a_log)
    member_b = None
    try:
        wait_for(lambda: proxy.held >= 1, "A's upload held in the proxy", timeout=60)
        member_b = start_archiver(healthy, b_log)  # joins: A's listener waits for the upload
        time.sleep(10)
        proxy.release()
        wait_for(lambda: proxy.injected["500"] >= 2, "A's upload to fail twice", timeout=60)
        proxy.rate = 0.0  # later writes (a rebuild of the cut) would succeed
        try:
            returncode = member_a.wait(timeout=60)
        except subprocess.TimeoutExpired:
            returncode = None
        assert returncode == 3, f"A went on after its upload failed: {returncode}"
        wait_for(lambda: log_events(b_log, "partitions assigned"), "B's assignment", timeout=60)
        member_b.send_signal(signal.SIGTERM)
        assert member_b.wait(timeout=60) == 0
    finally:
        for member in (member_a, member_b):
            if member is not None and member.poll() is None:
                member.kill()
                member.wait(timeout=30)
        proxy.stop()
    committed = asyncio.run(kafka.committed_offsets(
        KafkaSettings(bootstrap_servers=kafka_bootstrap), f"g-{topic}",
        [kafka.TopicPartition(topic, 0)]))
    archived = {r["offset"] for r in read_archive(store) if r["partition"] == 0}
    for offset, _ in committed.values():
        assert set(range(offset)) <= archived, f"offsets below {offset} not in a file"
    assert run_cli("archive", "--once", env=healthy, timeout=300).returncode == 0
    rows = read_archive(store)
    assert sorted((r["partition"], r["offset"]) for r in rows) == sorted(produced)
