"""The command line: one clear error line and exit code 2 for bad input; env configuration."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from eventvault.storage.local import LocalStorage
from infra.kafka_local import free_port
from tests.cliutil import run_cli, start_cli
from tests.kafkautil import Rec, create_topic, produce, read_archive


@pytest.mark.parametrize(("env", "args", "needle"), [
    ({"EVENTVAULT_ARCHIVE__MAX_FILE_RECORDS": "-1"}, [], "archive.max_file_records"),
    ({"EVENTVAULT_ARCHIVE__TOPICS": "not-json"}, [], "archive.topics"),
    ({"EVENTVAULT_STORAGE__URL": "gs://bucket"}, [], "storage.url"),
    ({"EVENTVAULT_STORAGE__SSE": "aws:kms"}, [], "storage.sse_kms_key_id"),
    ({"EVENTVAULT_STORAGE__ENDPOINT_URL": "127.0.0.1:9000"}, [], "storage.endpoint_url"),
    ({"EVENTVAULT_KAFKA__SECURITY_PROTOCOL": "SASL_SSL"}, [], "kafka.sasl_username"),
    ({"EVENTVAULT_ARCHIVE__TOPICS_REGEX": "("}, [], "archive.topics_regex"),
    ({"EVENTVAULT_ARCHIVE__NO_SUCH": "1"}, [], "archive.no_such"),
    ({"EVENTVAULT_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}, ["--topic", "a"],
     "did you mean EVENTVAULT_KAFKA__BOOTSTRAP_SERVERS?"),
    ({}, ["--config", "/nonexistent.toml"], "--config"),
    ({}, ["--bogus"], "unrecognized arguments"),
    ({}, ["--storage-url", "gs://bucket"], "storage.url"),
    ({}, [], "no topics to archive"),
])
def test_bad_configuration_is_one_line_exit_2(tmp_path: Path, env: dict[str, str],
                                              args: list[str], needle: str) -> None:
    res = run_cli(*(args[:2] if args[:1] == ["--config"] else []), "archive", "--once",
                  *(args if args[:1] != ["--config"] else []), env=env, cwd=tmp_path)
    assert res.returncode == 2, res
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("eventvault: error: ")
    assert needle in lines[0]
    assert not list(tmp_path.iterdir()), "nothing may be written"


def test_bad_toml_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "eventvault.toml").write_text("[archive\ntopics = [")
    res = run_cli("archive", "--once", cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1
    assert "eventvault.toml is not valid TOML" in res.stderr


@pytest.mark.integration
def test_missing_topic_is_one_line(kafka_bootstrap: str, tmp_path: Path) -> None:
    res = run_cli("archive", "--once", "--topic", "does.not.exist", env={
        "EVENTVAULT_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "EVENTVAULT_STORAGE__URL": f"file://{tmp_path}/a"})
    assert res.returncode == 4, res
    assert res.stderr.strip().splitlines()[-1] == (
        f"eventvault: error: topic(s) not found on {kafka_bootstrap}: does.not.exist")


@pytest.mark.integration
def test_environment_and_toml_configure_a_run(kafka_bootstrap: str, tmp_path: Path) -> None:
    topic = f"cli.env-{uuid.uuid4().hex[:6]}"
    create_topic(kafka_bootstrap, topic, partitions=2)
    produced = produce(kafka_bootstrap, topic, [Rec(i % 2, b"k%d" % i, b"v%d" % i,
                                                    timestamp_ms=1_760_000_000_000 + i)
                                                for i in range(50)])
    (tmp_path / "eventvault.toml").write_text(
        '[archive]\ngroup_id = "from-toml"\nmax_file_records = 10\n'
        '[storage]\nurl = "file:///should/be/overridden"\n')
    res = run_cli("archive", "--once", "--output", "json", cwd=tmp_path, env={
        "EVENTVAULT_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "EVENTVAULT_STORAGE__URL": f"file://{tmp_path}/arch",
        "EVENTVAULT_ARCHIVE__TOPICS": json.dumps([topic]),
        "EVENTVAULT_ARCHIVE__GROUP_ID": f"g-{topic}"})
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["records"] == 50
    assert summary["files"] == 6  # 25 per partition, 10 per file
    assert summary["committed"] == {f"{topic}[0]": 25, f"{topic}[1]": 25}
    rows = read_archive(LocalStorage(tmp_path / "arch"))
    assert sorted((r["partition"], r["offset"]) for r in rows) == sorted(produced)
    for line in res.stderr.splitlines():
        assert isinstance(json.loads(line), dict)  # logs are JSON lines


@pytest.mark.integration
def test_metrics_are_served_and_sigterm_exits_cleanly(kafka_bootstrap: str,
                                                      tmp_path: Path) -> None:
    topic = f"cli.metrics-{uuid.uuid4().hex[:6]}"
    create_topic(kafka_bootstrap, topic)
    produce(kafka_bootstrap, topic, [Rec(0, b"k", b"v") for _ in range(10)])
    port = free_port()
    env = {"EVENTVAULT_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
           "EVENTVAULT_STORAGE__URL": f"file://{tmp_path}/a",
           "EVENTVAULT_ARCHIVE__IDLE_SECONDS": "0.5"}
    proc = start_cli("archive", "--topic", topic, "--metrics-port", str(port), env=env,
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        text = ""
        deadline = time.monotonic() + 60
        needle = f'eventvault_records_archived_total{{topic="{topic}"}} 10.0'
        while needle not in text and time.monotonic() < deadline:
            time.sleep(0.5)
            with contextlib.suppress(OSError):
                text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                              timeout=5).read().decode()
        assert needle in text
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert out.startswith("archived 10 records into 1 files")


@pytest.mark.integration
def test_progress_not_written_by_eventvault_is_exit_5(kafka_bootstrap: str,
                                                      tmp_path: Path) -> None:
    """A group whose committed metadata is someone else's: refused (archive state), not reused."""
    topic = f"cli.state-{uuid.uuid4().hex[:6]}"
    create_topic(kafka_bootstrap, topic)
    produce(kafka_bootstrap, topic, [Rec(0, b"k", b"v%d" % i) for i in range(5)])
    group = f"g-{topic}"

    async def commit_foreign() -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=group,
                                    enable_auto_commit=False)
        await consumer.start()
        try:
            tp = TopicPartition(topic, 0)
            consumer.assign([tp])
            await consumer.commit({tp: OffsetAndMetadata(2, "another tool's metadata")})
        finally:
            await consumer.stop()

    asyncio.run(commit_foreign())
    res = run_cli("archive", "--once", "--topic", topic, cwd=tmp_path, env={
        "EVENTVAULT_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "EVENTVAULT_STORAGE__URL": f"file://{tmp_path}/a", "EVENTVAULT_ARCHIVE__GROUP_ID": group})
    assert res.returncode == 5, res
    assert "Traceback" not in res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith('eventvault: error: committed offset metadata "another tool'), last
    assert not list((tmp_path / "a").rglob("*.parquet")), "nothing archived"
