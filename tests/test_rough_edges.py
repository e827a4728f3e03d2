"""Small things a user sees: the offset-map URL, the cause of a Kafka timeout, setup's output."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import pytest

from eventvault.observe import JsonFormatter
from tests.cliutil import run_cli
from tests.kafkautil import REPO, Rec, archive_once, create_topic, produce, settings
from tests.replayutil import replay


@pytest.mark.integration
@pytest.mark.parametrize("prefix", ["", "/archive/"])
def test_offset_map_url_is_the_objects_url(kafka_bootstrap: str, s3_endpoint: str,
                                           s3_bucket: str, prefix: str, tmp_path: Path) -> None:
    url = f"s3://{s3_bucket}{prefix}"
    topic = f"edges.src-{uuid.uuid4().hex[:6]}"
    create_topic(kafka_bootstrap, topic)
    produce(kafka_bootstrap, topic, [Rec(0, b"k", b"v%d" % i) for i in range(5)])
    archive_once(settings(kafka_bootstrap, url, [topic], f"g-{topic}", endpoint=s3_endpoint))
    target = f"{topic}.replayed"
    create_topic(kafka_bootstrap, target)
    code, report, err = replay(kafka_bootstrap, url, "--topic", topic, "--target", target,
                               "--timestamp", "now", cwd=tmp_path,
                               env={"EVENTVAULT_STORAGE__ENDPOINT_URL": s3_endpoint})
    assert code == 0, err
    assert report is not None
    key = f"{prefix.strip('/') + '/' if prefix.strip('/') else ''}_replays/{report['replay_id']}"
    assert report["offset_map"] == f"s3://{s3_bucket}/{key}/offsets/"
    listed = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1") \
        .list_objects_v2(Bucket=s3_bucket, Prefix=f"{key}/offsets/")
    assert listed.get("KeyCount", 0) == report["transactions"] >= 1


def test_an_exception_without_text_is_logged_by_its_class() -> None:
    record = logging.LogRecord("aiokafka", logging.ERROR, __file__, 1,
                               'Unable connect to "%s:%s": %s',
                               ("127.0.0.1", 9092, TimeoutError()), None)
    line = json.loads(JsonFormatter().format(record))
    assert line["event"] == 'Unable connect to "127.0.0.1:9092": TimeoutError'
    record.args = ("h", 1, ConnectionRefusedError(111, "refused"))
    assert json.loads(JsonFormatter().format(record))["event"] == (
        'Unable connect to "h:1": [Errno 111] refused')


def test_a_kafka_connection_timeout_names_its_cause(tmp_path: Path) -> None:
    with socket.socket() as silent:  # accepts connections (the kernel does), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        res = run_cli("archive", "--once", "--topic", "t", cwd=tmp_path, timeout=60, env={
            "EVENTVAULT_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{silent.getsockname()[1]}",
            "EVENTVAULT_KAFKA__REQUEST_TIMEOUT_MS": "1000",
            "EVENTVAULT_STORAGE__URL": f"file://{tmp_path}/archive"})
    assert res.returncode == 4, res
    logged = [json.loads(line)["event"] for line in res.stderr.splitlines()[:-1]]
    timeouts = [event for event in logged if event.startswith("Unable connect to")]
    assert timeouts, res.stderr
    for event in timeouts:
        assert event.endswith(": TimeoutError"), event


def test_setup_prints_no_escape_codes_or_warnings(tmp_path: Path) -> None:
    done = subprocess.run(["bash", "infra/setup.sh"], cwd=REPO, capture_output=True, text=True,
                          timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout + done.stderr
    assert done.stdout.startswith("setup complete: .venv, Kafka ")
    assert done.stderr == ""
    # Maven runs only on the first setup: fetch into an empty cache, as a fresh clone does.
    fetch = ("import sys\nfrom pathlib import Path\nimport infra.kafka_local as k\n"
             "k.CACHE = Path(sys.argv[1])\nprint(k.fetch_jars())")
    done = subprocess.run([sys.executable, "-c", fetch, str(tmp_path / "cache")], cwd=REPO,
                          capture_output=True, text=True, timeout=600, check=False,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout + done.stderr
    assert done.stderr == ""
    assert list(Path(done.stdout.strip()).glob("kafka_2.13-*.jar"))
