"""Restarts that rebuild recorded cuts, with real archiver processes killed in that window.

A recorded cut is a file decided (committed to Kafka as an intent) whose upload may not have
happened. S3 requests are held in tests/faulty_s3.py's proxy, so a process is killed exactly
between intent and upload, or while its restart is rebuilding that very file.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import uuid
from pathlib import Path

import pytest

from eventvault import kafka
from eventvault.layout import FileRef, parse_file_key
from eventvault.progress import decode_progress
from eventvault.settings import KafkaSettings, StorageSettings
from eventvault.storage import open_storage
from tests.cliutil import archiver_env, run_cli, start_cli
from tests.crashutil import (
    BASE_MS,
    HOUR_MS,
    LiveProducer,
    assert_archive_is,
    log_events,
    wait_for,
)
from tests.faulty_s3 import FaultyS3
from tests.kafkautil import Rec, archive_once, create_topic, produce, read_archive, settings

pytestmark = pytest.mark.integration


def _start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return start_cli("archive", env=env, stdout=out, stderr=out)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def _s3_env(bootstrap: str, url: str, topic: str, endpoint: str, **archive: str) -> dict[str, str]:
    return {**archiver_env(bootstrap, url, topic, **archive),
            "EVENTVAULT_STORAGE__ENDPOINT_URL": endpoint}


def test_restart_rebuilding_a_long_cut_with_smaller_files_converges(
        kafka_bootstrap: str, s3_endpoint: str, s3_bucket: str, tmp_path: Path) -> None:
    """Issue 10 item 4 with real processes. A decides one file of 700 records of hour H
    (offsets 0..1048, hour H+1 interleaved) and is killed before it is uploaded. B restarts
    with one record per file: while it rebuilds that cut, each H+1 record became a cut of its
    own that the rebuild pinned in the progress; past 3800 characters the commit raised (exit
    5), and every restart raised again. Now B rebuilds the cut, then reads H+1 again."""
    topic, url, produced, cut = _decided_then_killed(kafka_bootstrap, s3_endpoint, s3_bucket,
                                                     tmp_path)
    b = run_cli("archive", "--once", env=_s3_env(kafka_bootstrap, url, topic, s3_endpoint,
                                                  MAX_FILE_RECORDS="1"), timeout=300)
    assert b.returncode == 0, b.stderr[-2000:]
    _assert_rebuilt(s3_endpoint, url, produced, cut, b.stderr)


def test_restart_without_list_permission_gets_past_403_on_head(
        kafka_bootstrap: str, s3_endpoint: str, s3_bucket: str, tmp_path: Path) -> None:
    """Issue 10 item 7: a role without s3:ListBucket gets 403 for a HEAD of a missing key. The
    restart asked whether the recorded cut's file exists, took the 403 as fatal (exit 3), and so
    did every restart after it. Now it is "not known", and the conditional create settles it."""
    topic, url, produced, cut = _decided_then_killed(kafka_bootstrap, s3_endpoint, s3_bucket,
                                                     tmp_path)
    b, proxy = _archive_once_through(FaultyS3(s3_endpoint, rate=0.0, deny_missing_heads=True),
                                     kafka_bootstrap, url, topic)
    assert b.returncode == 0, b.stderr[-2000:]
    assert proxy.injected["403-head"] >= 1, "the restart never asked for the missing file"
    _assert_rebuilt(s3_endpoint, url, produced, cut, b.stderr)


def test_a_real_denial_still_fails_at_the_next_write(
        kafka_bootstrap: str, s3_endpoint: str, s3_bucket: str, tmp_path: Path) -> None:
    """The same 403 on HEAD, from a role that may not write either: one line, exit 3, and
    nothing committed past the recorded cut."""
    topic, url, _, cut = _decided_then_killed(kafka_bootstrap, s3_endpoint, s3_bucket, tmp_path)
    b, _ = _archive_once_through(FaultyS3(s3_endpoint, rate=0.0, deny_missing_heads=True,
                                          deny=("PUT", "POST")), kafka_bootstrap, url, topic)
    assert b.returncode == 3, b.stderr[-2000:]
    errors = [line for line in b.stderr.splitlines() if not line.startswith("{")]
    assert len(errors) == 1, errors
    assert errors[0].startswith("eventvault: error: S3 "), errors
    assert "AccessDenied" in errors[0], errors
    assert "Traceback" not in b.stderr
    assert _recorded_cuts(kafka_bootstrap, f"g-{topic}", topic)[0] == (
        cut.first_offset, cut.last_offset, cut.hour)


def _archive_once_through(proxy: FaultyS3, bootstrap: str, url: str, topic: str
                          ) -> tuple[subprocess.CompletedProcess[str], FaultyS3]:
    """``eventvault archive --once`` with S3 behind ``proxy``."""
    proxy.start()
    try:
        return run_cli("archive", "--once", env=_s3_env(bootstrap, url, topic,
                                                         proxy.endpoint_url), timeout=300), proxy
    finally:
        proxy.stop()


def _decided_then_killed(bootstrap: str, s3_endpoint: str, bucket: str, tmp_path: Path
                         ) -> tuple[str, str, dict[tuple[int, int], tuple[bytes, bytes]], FileRef]:
    """A topic of 1050 records (hours H, H, H+1, ...); archiver A decides its first file, 700
    records of hour H (offsets 0..1048), and is killed before the upload reaches S3."""
    topic = f"rebuild.cut-{uuid.uuid4().hex[:6]}"
    create_topic(bootstrap, topic)
    produced = produce(bootstrap, topic, [
        Rec(0, b"k%d" % i, b"v%d" % i, timestamp_ms=BASE_MS + (i % 3 == 2) * HOUR_MS)
        for i in range(1050)])
    url = f"s3://{bucket}/{topic}"
    proxy = FaultyS3(s3_endpoint, rate=0.0).start()
    proxy.hold()  # uploads wait in the proxy: the intent is committed, the file not written
    a = _start(_s3_env(bootstrap, url, topic, proxy.endpoint_url, MAX_FILE_RECORDS="700",
                       IDLE_SECONDS="600", MAX_FILE_AGE_SECONDS="600"), tmp_path / "a.log")
    try:
        wait_for(lambda: proxy.held >= 1, "A's first upload")
    finally:
        _kill(a)
        proxy.stop()  # A's held upload is never forwarded: the file was not written
    cut = FileRef(topic, BASE_MS // HOUR_MS, 0, 0, 1048)  # the 700th record of hour H: 1048
    recorded = _recorded_cuts(bootstrap, f"g-{topic}", topic)
    assert recorded == [(cut.first_offset, cut.last_offset, cut.hour)], recorded
    return topic, url, {k: (r.key or b"", r.value or b"") for k, r in produced.items()}, cut


def _assert_rebuilt(s3_endpoint: str, url: str,
                    produced: dict[tuple[int, int], tuple[bytes, bytes]], cut: FileRef,
                    log: str) -> None:
    """Every record once with its value; the recorded cut's file, rebuilt by this restart,
    under its recorded name with its 700 records."""
    rows = read_archive(open_storage(StorageSettings(url=url, endpoint_url=s3_endpoint)))
    assert_archive_is(rows, produced)
    in_cut = [r for r in rows if r["file"] == cut.key]
    assert len(in_cut) == 700, "the rebuilt file is not the recorded one (name or records)"
    rebuilt = log_events(log, "recorded cut rebuilt")
    assert [(e["file"], e["already_written"]) for e in rebuilt] == [(cut.key, False)]


def _recorded_cuts(bootstrap: str, group: str, topic: str) -> list[tuple[int, int, int | None]]:
    committed = asyncio.run(kafka.committed_offsets(
        KafkaSettings(bootstrap_servers=bootstrap), group, [kafka.TopicPartition(topic, 0)]))
    (offset, metadata), = committed.values()
    return [(c.first, c.last, c.hour) for c in decode_progress(offset, metadata).cuts]


def test_kill_while_a_recorded_cut_is_rebuilt(kafka_bootstrap: str, s3_endpoint: str,
                                              s3_bucket: str, tmp_path: Path) -> None:
    """A is killed with uploads held (recorded cuts, no files); B is killed while it rebuilds
    them (its rebuilt uploads held too); then every held upload lands late, as a zombie's
    would; C finds the rebuilt files already written. A live producer runs throughout; the
    archive must hold every acknowledged record once, with its key and value."""
    topic = f"rebuild.kill-{uuid.uuid4().hex[:6]}"
    partitions = 2
    create_topic(kafka_bootstrap, topic, partitions=partitions)
    url = f"s3://{s3_bucket}/kill"
    store = open_storage(StorageSettings(url=url, endpoint_url=s3_endpoint))
    proxy = FaultyS3(s3_endpoint, rate=0.0).start()
    env = _s3_env(kafka_bootstrap, url, topic, proxy.endpoint_url, MAX_FILE_RECORDS="150")
    producer = LiveProducer(kafka_bootstrap, topic, partitions)
    producer.start()
    logs = {name: tmp_path / f"{name}.log" for name in "abc"}
    try:
        a = _start(env, logs["a"])
        wait_for(lambda: len(list(store.list())) >= 4, "A's first files", timeout=90)
        proxy.hold()
        wait_for(lambda: proxy.held >= 2, "A's held uploads")
        _kill(a)
        held_by_a = set(proxy.held_paths)
        b = _start(env, logs["b"])
        wait_for(lambda: bool(set(proxy.held_paths[len(held_by_a):]) & held_by_a),
                 "B uploading a file that A decided (a rebuild)", timeout=90)
        _kill(b)  # killed while rebuilding: its upload of A's recorded cut is held
        rebuilt_by_b = set(proxy.held_paths[len(held_by_a):]) & held_by_a
        proxy.release()  # A's and B's uploads reach S3 late, as a zombie's would
        c = _start(env, logs["c"])
        wait_for(lambda: bool(log_events(logs["c"], "recorded cut rebuilt")),
                 "C rebuilding recorded cuts", timeout=90)
        produced = producer.stop()
        c.send_signal(signal.SIGTERM)
        assert c.wait(timeout=120) == 0
    finally:
        producer.stopping.set()
        proxy.stop()
    adopted = [p for e in log_events(logs["b"], "partitions adopted")
               for p in e["partitions"].values()]
    assert any(p["cuts"] > 0 for p in adopted), "B resumed with no recorded cut"
    found = {e["file"] for e in log_events(logs["c"], "recorded cut rebuilt")
             if e["already_written"]}
    prefix = f"/{s3_bucket}/kill/"
    assert {path.removeprefix(prefix) for path in rebuilt_by_b} & found, \
        "C did not find the file B was rebuilding already written"
    assert proxy.answers[412] >= 1, "no second write of one name was refused (If-None-Match)"
    archive_once(settings(kafka_bootstrap, url, [topic], f"g-{topic}", endpoint=s3_endpoint))
    rows = read_archive(store)
    assert_archive_is(rows, produced)
    assert all(parse_file_key(r["file"]) is not None for r in rows)
