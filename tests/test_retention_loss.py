"""Records that retention deletes before the archiver reads them: an ERROR line and the
``eventvault_records_lost_to_retention_total`` metric, counted exactly, at start-up (minus
what files of recorded cuts already hold) and while running (the fetch jumps to the log start)."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from eventvault import kafka
from eventvault.kafka import TopicPartition
from eventvault.settings import KafkaSettings, StorageSettings
from eventvault.storage import open_storage
from eventvault.storage.local import LocalStorage
from tests.cliutil import archiver_env, run_cli, start_cli
from tests.crashutil import BASE_MS, log_events, wait_for
from tests.faulty_s3 import FaultyS3
from tests.kafkautil import Rec, archive_once, create_topic, produce, read_archive, settings

pytestmark = pytest.mark.integration
LOST = "eventvault_records_lost_to_retention_total"


def _committed(bootstrap: str, group: str, tp: TopicPartition) -> int:
    found = asyncio.run(kafka.committed_offsets(KafkaSettings(bootstrap_servers=bootstrap),
                                                group, [tp]))
    return found[tp][0] if tp in found else -1


def _records(bootstrap: str, topic: str, first: int, count: int) -> None:
    produce(bootstrap, topic, [Rec(0, b"k%d" % i, b"v%d" % i, timestamp_ms=BASE_MS)
                               for i in range(first, first + count)])


def _delete_below(bootstrap: str, tp: TopicPartition, offset: int) -> None:
    asyncio.run(kafka.delete_records(KafkaSettings(bootstrap_servers=bootstrap), {tp: offset}))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _scraped(port: int, topic: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    found = re.search(rf'^{LOST}{{partition="0",topic="{re.escape(topic)}"}} (\S+)$', text,
                      re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_loss_while_running_is_an_error_and_counted(kafka_bootstrap: str,
                                                    tmp_path: Path) -> None:
    """The archiver is paused (SIGSTOP) with 1000 records archived; 1000 more are produced
    and the log start moves to 1500: once resumed, exactly 500 records are reported lost."""
    topic = f"loss.running-{uuid.uuid4().hex[:6]}"
    tp = TopicPartition(topic, 0)
    create_topic(kafka_bootstrap, topic)
    _records(kafka_bootstrap, topic, 0, 1000)
    port = _free_port()
    env = archiver_env(kafka_bootstrap, f"file://{tmp_path}/arch", topic, MAX_FILE_RECORDS="100",
                       SESSION_TIMEOUT_MS="30000")
    env["EVENTVAULT_METRICS__PORT"] = str(port)
    log = tmp_path / "archiver.log"
    with log.open("wb") as out:
        proc = start_cli("archive", env=env, stdout=out, stderr=out)
    try:
        wait_for(lambda: _committed(kafka_bootstrap, f"g-{topic}", tp) == 1000, "the first 1000")
        proc.send_signal(signal.SIGSTOP)
        time.sleep(1)  # its last fetch is answered (empty) while it cannot send another
        _records(kafka_bootstrap, topic, 1000, 1000)
        _delete_below(kafka_bootstrap, tp, 1500)
        proc.send_signal(signal.SIGCONT)
        wait_for(lambda: _committed(kafka_bootstrap, f"g-{topic}", tp) == 2000, "the rest")
        assert _scraped(port, topic) == 500
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
        proc.wait()
    lost = [e for e in log_events(log, "records deleted by retention before they were archived")]
    assert [(e["level"], e["found"], e["lost_from"], e["lost_to"], e["records"]) for e in lost] \
        == [("error", "while running", 1000, 1499, 500)]
    rows = read_archive(LocalStorage(tmp_path / "arch"))
    counts = Counter(r["offset"] for r in rows)
    assert set(counts.values()) == {1}
    assert set(counts) == set(range(1000)) | set(range(1500, 2000))
    assert all(r["value"] == b"v%d" % r["offset"] for r in rows)


def test_loss_at_start_up_leaves_out_files_of_recorded_cuts(kafka_bootstrap: str,
                                                           tmp_path: Path) -> None:
    """An archiver kills itself once a file is written, before its commit moves past it
    (fault point ``file-durable``); retention then deletes below 700. The restart reports as
    lost the offsets below 700 that no written file of a recorded cut holds, exactly."""
    topic = f"loss.start-{uuid.uuid4().hex[:6]}"
    tp = TopicPartition(topic, 0)
    create_topic(kafka_bootstrap, topic)
    _records(kafka_bootstrap, topic, 0, 1000)
    url = f"file://{tmp_path}/arch"
    env = archiver_env(kafka_bootstrap, url, topic, MAX_FILE_RECORDS="100",
                       FAULT_POINTS='{"file-durable": "kill"}')
    log = tmp_path / "archiver.log"
    with log.open("wb") as out:
        proc = start_cli("archive", env=env, stdout=out, stderr=out)
    assert proc.wait(timeout=120) == -signal.SIGKILL
    assert log_events(log, "fault point"), "the window was not hit"
    resume = _committed(kafka_bootstrap, f"g-{topic}", tp)
    store = LocalStorage(tmp_path / "arch")
    in_files = {r["offset"] for r in read_archive(store)}
    assert {o for o in in_files if o >= resume}, "no written file above the committed offset"
    _delete_below(kafka_bootstrap, tp, 700)
    expected = len(set(range(max(resume, 0), 700)) - in_files)
    assert expected < 700 - max(resume, 0), "nothing to leave out: the test proves little"
    labels = {"topic": topic, "partition": "0"}
    before = REGISTRY.get_sample_value(LOST, labels) or 0.0
    archive_once(settings(kafka_bootstrap, url, [topic], f"g-{topic}", max_file_records=100))
    assert (REGISTRY.get_sample_value(LOST, labels) or 0.0) - before == expected
    rows = read_archive(store)
    counts = Counter(r["offset"] for r in rows)
    assert set(counts.values()) == {1}
    assert set(counts) == set(range(1000)) - (set(range(700)) - in_files)


def test_a_loss_report_that_cannot_read_the_files_does_not_end_the_run(
        kafka_bootstrap: str, s3_endpoint: str, s3_bucket: str, tmp_path: Path) -> None:
    """As above, but the restart's role may only write (S3 answers 403 to GET and HEAD): the
    files of recorded cuts cannot be counted out. The run goes on (it exited 3 at every start)
    and reports the whole range as an upper bound."""
    topic = f"loss.denied-{uuid.uuid4().hex[:6]}"
    tp = TopicPartition(topic, 0)
    create_topic(kafka_bootstrap, topic)
    _records(kafka_bootstrap, topic, 0, 1000)
    url = f"s3://{s3_bucket}/loss-denied"
    env = {**archiver_env(kafka_bootstrap, url, topic, MAX_FILE_RECORDS="100"),
           "EVENTVAULT_STORAGE__ENDPOINT_URL": s3_endpoint}
    log = tmp_path / "archiver.log"
    with log.open("wb") as out:
        killed = {**env, "EVENTVAULT_ARCHIVE__FAULT_POINTS": '{"file-durable": "kill"}'}
        proc = start_cli("archive", env=killed, stdout=out, stderr=out)
    assert proc.wait(timeout=120) == -signal.SIGKILL
    resume = _committed(kafka_bootstrap, f"g-{topic}", tp)
    store = open_storage(StorageSettings(url=url, endpoint_url=s3_endpoint))
    in_files = {r["offset"] for r in read_archive(store)}
    assert {o for o in in_files if 0 <= resume <= o < 700}, "no written file to count out"
    _delete_below(kafka_bootstrap, tp, 700)
    proxy = FaultyS3(s3_endpoint, rate=0.0, deny=("GET", "HEAD")).start()
    try:
        done = run_cli("archive", "--once", timeout=180,
                       env={**env, "EVENTVAULT_STORAGE__ENDPOINT_URL": proxy.endpoint_url})
    finally:
        proxy.stop()
    assert done.returncode == 0, done.stderr[-3000:]
    [report] = log_events(done.stderr, "records deleted by retention before they were archived")
    assert report["records"] == 700 - resume
    assert report["archived_in_recorded_cuts"] == "unknown"
    assert report["records_is_upper_bound"] is True
    counts = Counter(r["offset"] for r in read_archive(store))
    assert set(counts.values()) == {1}
    assert set(counts) == set(range(1000)) - (set(range(700)) - in_files)
