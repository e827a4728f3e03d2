"""Item 2: the group's committed progress expired (here: the group deleted, as Kafka does after
``offsets.retention.minutes``). The archiver must refuse instead of archiving the retained log
again, and ``--resume-from-archive`` must go on without duplicating or losing a record."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from eventvault.errors import BrokerError
from eventvault.kafka import TopicPartition, commit_offsets
from eventvault.settings import KafkaSettings, StorageSettings
from eventvault.storage import open_storage
from tests.cliutil import archiver_env, run_cli, start_cli
from tests.kafkautil import Rec, create_topic, delete_group, produce, read_archive

pytestmark = pytest.mark.integration
HOUR_MS = 3_600_000
BASE_MS = 1_767_225_600_000  # 2026-01-01T00:00Z


def records(start: int, count: int) -> list[Rec]:
    """Two partitions, three hours interleaved (late events), so files' ranges overlap."""
    return [Rec(i % 2, b"k%d" % i, b"v%d" % i, timestamp_ms=BASE_MS + (i // 2 % 3) * HOUR_MS)
            for i in range(start, start + count)]


def setup(kafka_bootstrap: str, s3_endpoint: str, bucket: str) -> tuple[str, dict[str, str]]:
    topic = f"lost.progress-{uuid.uuid4().hex[:6]}"
    create_topic(kafka_bootstrap, topic, partitions=2)
    env = archiver_env(kafka_bootstrap, f"s3://{bucket}/a", topic, MAX_FILE_RECORDS="40")
    env["EVENTVAULT_STORAGE__ENDPOINT_URL"] = s3_endpoint
    produce(kafka_bootstrap, topic, records(0, 400))
    first = run_cli("archive", "--once", env=env)
    assert first.returncode == 0, first.stderr
    return topic, env


def archived(env: dict[str, str], topic: str) -> Counter[tuple[int, int]]:
    store = open_storage(StorageSettings(url=env["EVENTVAULT_STORAGE__URL"],
                                         endpoint_url=env["EVENTVAULT_STORAGE__ENDPOINT_URL"]))
    return Counter((r["partition"], r["offset"]) for r in read_archive(store, topic))


def test_expired_group_offsets_refuse_then_resume_from_archive(
        kafka_bootstrap: str, s3_endpoint: str, s3_bucket: str) -> None:
    topic, env = setup(kafka_bootstrap, s3_endpoint, s3_bucket)
    before = archived(env, topic)
    assert len(before) == 400
    delete_group(kafka_bootstrap, env["EVENTVAULT_ARCHIVE__GROUP_ID"])

    again = run_cli("archive", "--once", env=env)
    assert again.returncode == 5, again.stderr
    errors = [line for line in again.stderr.splitlines() if line.startswith("eventvault:")]
    assert len(errors) == 1
    assert "no committed offset for" in errors[0]
    assert "--resume-from-archive" in errors[0]
    assert "Traceback" not in again.stderr
    assert archived(env, topic) == before, "the refused run wrote files"

    produce(kafka_bootstrap, topic, records(400, 200))
    resumed = run_cli("archive", "--once", "--resume-from-archive", "--output", "json", env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["records"] == 200  # only the new records were read
    after = archived(env, topic)
    assert set(after.values()) == {1}, "records archived twice"
    assert sorted(after) == sorted((p, o) for p in (0, 1) for o in range(300))
    code = run_cli("verify", "--topic", topic, env=env)
    assert code.returncode == 0, code.stdout + code.stderr


def test_resume_from_archive_refuses_an_archive_with_gaps(
        kafka_bootstrap: str, s3_endpoint: str, s3_bucket: str) -> None:
    topic, env = setup(kafka_bootstrap, s3_endpoint, s3_bucket)
    store = open_storage(StorageSettings(url=env["EVENTVAULT_STORAGE__URL"],
                                         endpoint_url=env["EVENTVAULT_STORAGE__ENDPOINT_URL"]))
    keys = [k for k in store.list(f"topic={topic}/") if "/00000-" in k]
    store.delete_version(keys[1], None)  # records of partition 0 below its highest offset
    delete_group(kafka_bootstrap, env["EVENTVAULT_ARCHIVE__GROUP_ID"])
    before = archived(env, topic)
    refused = run_cli("archive", "--once", "--resume-from-archive", env=env)
    assert refused.returncode == 5, refused.stderr
    assert f"cannot resume {topic}[0] from the archive" in refused.stderr
    assert "missing" in refused.stderr
    assert archived(env, topic) == before


def test_progress_is_not_committed_from_outside_while_an_archiver_is_a_member(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    """--resume-from-archive commits from outside the group: the broker must refuse that while
    an archiver is a member, so the recovery can never race a running archiver."""
    topic = f"lost.member-{uuid.uuid4().hex[:6]}"
    create_topic(kafka_bootstrap, topic)
    env = archiver_env(kafka_bootstrap, f"file://{tmp_path}/a", topic)
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    member = start_cli("archive", env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    try:
        time.sleep(6)  # joined, partitions assigned
        with pytest.raises(BrokerError):
            asyncio.run(commit_offsets(kafka, env["EVENTVAULT_ARCHIVE__GROUP_ID"],
                                       {TopicPartition(topic, 0): (5, "")}))
    finally:
        member.send_signal(signal.SIGTERM)
        assert member.wait(timeout=60) == 0
    asyncio.run(commit_offsets(kafka, env["EVENTVAULT_ARCHIVE__GROUP_ID"],
                               {TopicPartition(topic, 0): (0, "")}))  # empty group: accepted
