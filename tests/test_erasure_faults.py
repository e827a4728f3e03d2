"""Erasure through failures: S3 refusing deletes, kill -9 at random moments, and an archiver
killed between intent and upload whose uploads arrive late, as a zombie's would.

Each test ends by reading every version of every archive object: the subject is nowhere, and
every other record is there exactly once, with its value.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from eventvault.settings import StorageSettings
from eventvault.storage import open_storage
from tests.cliutil import archiver_env, run_cli, start_cli
from tests.erasureutil import customer, customer_records, erasure_env, every_version, mentions
from tests.faulty_s3 import FaultyS3
from tests.kafkautil import archive_once, create_topic, produce, settings

pytestmark = pytest.mark.integration


def _setup(bootstrap: str, endpoint: str, bucket: str,
           count: int = 600) -> tuple[str, str, dict[tuple[int, int], bytes | None]]:
    topic = f"pii.faults-{uuid.uuid4().hex[:6]}"
    create_topic(bootstrap, topic, partitions=2)
    produced = produce(bootstrap, topic, customer_records(count, 30, 2))
    url = f"s3://{bucket}/arch"
    archive_once(settings(bootstrap, url, [topic], f"g-{topic}", endpoint=endpoint,
                          max_file_records=40))
    return topic, url, {at: r.value for at, r in produced.items()}


def _env(bootstrap: str, url: str, endpoint: str, topic: str, **extra: str) -> dict[str, str]:
    return {"EVENTVAULT_KAFKA__BOOTSTRAP_SERVERS": bootstrap, "EVENTVAULT_STORAGE__URL": url,
            "EVENTVAULT_STORAGE__ENDPOINT_URL": endpoint,
            "EVENTVAULT_ARCHIVE__GROUP_ID": f"g-{topic}", **erasure_env(topic), **extra}


def _assert_erased(endpoint: str, bucket: str, subject: str,
                   produced: dict[tuple[int, int], bytes | None]) -> list[dict[str, Any]]:
    versions = every_version(endpoint, bucket, "arch/")
    assert all(v["latest"] for v in versions), "a noncurrent version is left"
    for version in versions:
        assert mentions(version["rows"], subject) == [], version["key"]
    rows = [r for v in versions for r in v["rows"]]
    theirs = {at for at, value in produced.items() if value and subject.encode() in value}
    placed = sorted((r["partition"], r["offset"]) for r in rows)
    assert placed == sorted(set(produced) - theirs), "records lost or duplicated"
    assert all(r["value"] == produced[(r["partition"], r["offset"])] for r in rows)
    return versions


def test_version_deletes_refused_then_a_rerun_finishes(kafka_bootstrap: str, s3_endpoint: str,
                                                       versioned_bucket: str,
                                                       tmp_path: Path) -> None:
    topic, url, produced = _setup(kafka_bootstrap, s3_endpoint, versioned_bucket)
    subject = customer(4)
    proxy = FaultyS3(s3_endpoint, rate=1.0, methods=("DELETE",),
                     faults=("503", "500", "reset-before")).start()  # none reaches S3
    try:
        res = run_cli("erase", "--request-id", "R", "--subject", subject, cwd=tmp_path,
                      env=_env(kafka_bootstrap, url, proxy.endpoint_url, topic,
                               EVENTVAULT_STORAGE__MAX_ATTEMPTS="1"))
    finally:
        proxy.stop()
    assert res.returncode == 3, res
    assert res.stderr.strip().count("\n") == 0, res.stderr
    left = [v for v in every_version(s3_endpoint, versioned_bucket, "arch/") if not v["latest"]]
    assert left, "the window was not hit: no old version was left behind"
    assert any(mentions(v["rows"], subject) for v in left)
    res = run_cli("erase", "--output", "json", env=_env(kafka_bootstrap, url, s3_endpoint, topic),
                  cwd=tmp_path)  # the request is stored: a plain rerun finishes it
    assert res.returncode == 0, res.stderr
    assert sum(f["noncurrent_deleted"] for f in json.loads(res.stdout)["files"]) >= len(left)
    _assert_erased(s3_endpoint, versioned_bucket, subject, produced)


def test_kill_9_at_random_moments_then_a_rerun_finishes(kafka_bootstrap: str, s3_endpoint: str,
                                                        versioned_bucket: str,
                                                        tmp_path: Path) -> None:
    seed = int(os.environ.get("EVENTVAULT_TEST_SEED", random.randrange(10**6)))
    print(f"seed {seed} (replay with EVENTVAULT_TEST_SEED={seed})")
    rng = random.Random(seed)
    topic, url, produced = _setup(kafka_bootstrap, s3_endpoint, versioned_bucket, count=1200)
    subjects = [customer(n) for n in rng.sample(range(30), 3)]
    env = _env(kafka_bootstrap, url, s3_endpoint, topic)
    requests = tmp_path / "requests.json"
    requests.write_text(json.dumps([{"request_id": f"R{i}", "subject": s}
                                    for i, s in enumerate(subjects)]))
    killed = 0
    for _ in range(5):
        proc = start_cli("erase", "--requests", str(requests), env=env, cwd=tmp_path,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.5, 4.0))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.wait(timeout=60)
    assert killed >= 2, "the runs ended before the kills: the test proved little"
    res = run_cli("erase", "--requests", str(requests), env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    for subject in subjects:
        _assert_erased(s3_endpoint, versioned_bucket, subject, {
            at: v for at, v in produced.items()
            if not any(s.encode() in (v or b"") for s in subjects if s != subject)})


def test_a_zombie_upload_never_brings_erased_records_back(kafka_bootstrap: str,
                                                          s3_endpoint: str,
                                                          versioned_bucket: str,
                                                          tmp_path: Path) -> None:
    """The archiver is killed between the intent (committed) and its uploads (held in the
    proxy). Its successor rebuilds the recorded cuts, erasure rewrites them, and only then do
    the dead archiver's uploads reach S3: they must not replace the erased files."""
    topic, url, produced = _setup(kafka_bootstrap, s3_endpoint, versioned_bucket, count=200)
    more = produce(kafka_bootstrap, topic, customer_records(300, 30, 2, hours=2, first=200))
    produced |= {at: r.value for at, r in more.items()}
    subject = customer(9)
    proxy = FaultyS3(s3_endpoint, rate=0.0, methods=("PUT", "POST")).start()
    proxy.hold()
    try:
        env = archiver_env(kafka_bootstrap, url, topic, MAX_FILE_RECORDS="40")
        env["EVENTVAULT_STORAGE__ENDPOINT_URL"] = proxy.endpoint_url
        zombie = start_cli("archive", env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while proxy.held < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proxy.held >= 2, "the archiver never got to an upload"
        zombie.send_signal(signal.SIGKILL)
        zombie.wait(timeout=30)
        store = open_storage(StorageSettings(url=url, endpoint_url=s3_endpoint))
        files_before = len(list(store.list("topic=")))
        summary = archive_once(settings(kafka_bootstrap, url, [topic], f"g-{topic}",
                                        endpoint=s3_endpoint, max_file_records=40))
        assert summary.files > 0
        assert len(list(store.list("topic="))) > files_before, "no recorded cut was rebuilt"
        res = run_cli("erase", "--request-id", "Z", "--subject", subject,
                      env=_env(kafka_bootstrap, url, s3_endpoint, topic), cwd=tmp_path)
        assert res.returncode == 0, res.stderr
    finally:
        proxy.release()
        deadline = time.monotonic() + 60
        while sum(proxy.answers.values()) < proxy.held and time.monotonic() < deadline:
            time.sleep(0.2)
        proxy.stop()
    assert proxy.answers, "no held upload reached S3"
    assert set(proxy.answers) == {412}, proxy.answers
    _assert_erased(s3_endpoint, versioned_bucket, subject, produced)
