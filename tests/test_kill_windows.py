"""kill -9 aimed at the windows of the exactly-once argument, with a live producer.

Fault points make the archiver SIGKILL itself at the N-th time it reaches a window; each test
then proves from Kafka and storage that the window was really hit before it restarts the
archiver, and ends with every record once, with its produced key and value.

- ``file-durable``: a file is written and its commit has not moved past it: the file exists,
  its cut is recorded, the committed resume offset is at or below its first offset.
- ``idle-intent``: an idle-timer roll's cuts are committed and their uploads not started: the
  cuts are recorded, their files missing; the restarts must write exactly those names.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import uuid
from pathlib import Path

import pytest

from eventvault import kafka
from eventvault.kafka import TopicPartition
from eventvault.layout import FileRef
from eventvault.progress import Cut, Progress, decode_progress
from eventvault.settings import KafkaSettings
from eventvault.storage.local import LocalStorage
from tests.cliutil import archiver_env
from tests.crashutil import Producer, assert_exactly_once, log_events, start_archiver
from tests.kafkautil import archive_once, create_topic, read_archive, settings

pytestmark = pytest.mark.integration
SEED = int(os.environ.get("EVENTVAULT_TEST_SEED", random.randrange(1 << 30)))


def _progress(bootstrap: str, topic: str, partitions: int) -> dict[int, Progress]:
    found = asyncio.run(kafka.committed_offsets(
        KafkaSettings(bootstrap_servers=bootstrap), f"g-{topic}",
        [TopicPartition(topic, p) for p in range(partitions)]))
    return {tp.partition: decode_progress(*value) for tp, value in found.items()}


@pytest.mark.parametrize("point", ["file-durable", "idle-intent"])
def test_kill_in_a_window_then_restart(kafka_bootstrap: str, tmp_path: Path, point: str) -> None:
    print(f"seed {SEED} (EVENTVAULT_TEST_SEED={SEED} replays it)")
    rng = random.Random(SEED)
    topic = f"crash.window-{uuid.uuid4().hex[:6]}"
    partitions, total = 3, 45_000  # produced for about a minute: each round has a live producer
    create_topic(kafka_bootstrap, topic, partitions=partitions)
    url = f"file://{tmp_path}/arch"
    store = LocalStorage(tmp_path / "arch")
    producer = Producer(kafka_bootstrap, topic, total, partitions, seed=SEED)
    producer.start()
    unwritten: set[str] = set()  # recorded cuts whose files a restart must write
    for round_number in range(3):
        nth = rng.randint(1, 2)
        env = archiver_env(kafka_bootstrap, url, topic, MAX_FILE_RECORDS="150",
                           FAULT_POINTS=json.dumps({point: f"kill:{nth}"}))
        log = tmp_path / f"round-{round_number}.log"
        proc = start_archiver(env, log)
        try:
            code = proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            proc.kill()
            proc.wait()
        assert code == -signal.SIGKILL, f"round {round_number}: exit {code}, {log}"
        assert producer.is_alive(), "the producer had finished: the round proved less"
        hit = log_events(log, "fault point")
        assert [e["point"] for e in hit] == [point], "the window was not hit"
        progress = _progress(kafka_bootstrap, topic, partitions)
        if point == "file-durable":
            ref = FileRef(topic, hit[0]["hour"], hit[0]["partition"], hit[0]["first"],
                          hit[0]["last"])
            assert store.exists(ref.key), "the file was not written"
            committed = progress[ref.partition]
            assert committed.offset <= ref.first_offset, "the commit had moved past the file"
            assert Cut(ref.first_offset, ref.last_offset, ref.hour) in committed.cuts
        else:
            for name, partition, first, last, hour in hit[0]["cuts"]:
                assert Cut(first, last, hour) in progress[partition].cuts, "intent not recorded"
                key = FileRef(name, hour, partition, first, last).key
                if not store.exists(key):
                    unwritten.add(key)
    if point == "idle-intent":
        assert unwritten, "every killed intent's file was written: the window was not hit"
    producer.join(timeout=150)
    assert producer.sent == total
    archive_once(settings(kafka_bootstrap, url, [topic], f"g-{topic}", max_file_records=150))
    assert_exactly_once(read_archive(store), partitions, total)
    assert all(store.exists(key) for key in unwritten), "a recorded cut was written elsewhere"
