"""Rebalances timed into the archiver's waits: members join, leave and turn into zombies.

aiokafka runs the rebalance listener while the archiver's loop waits in an ``await`` (an
intent's commit, an upload). Fault points widen those waits (``sleep``), so that revocations
land in them again and again. No member may die; the archive must hold every record once.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from eventvault import kafka
from eventvault.settings import StorageSettings
from eventvault.storage import open_storage
from tests.cliutil import archiver_env
from tests.crashutil import Producer, assert_exactly_once, log_events, start_archiver, wait_for
from tests.kafkautil import archive_once, create_topic, read_archive, settings

pytestmark = pytest.mark.integration
SEED = random.randrange(1 << 30)


def _stop(proc: subprocess.Popen[bytes], log: Path) -> None:
    """SIGTERM a member that must still be alive; it must exit 0 within 60 s."""
    assert proc.poll() is None, f"the archiver died (exit {proc.returncode}): {log}"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0, log.read_text()[-3000:]


def test_rebalance_storm_with_a_zombie(kafka_bootstrap: str, tmp_path: Path) -> None:
    """Members join and leave every few seconds and one sleeps through its session (SIGSTOP,
    then SIGCONT: a zombie) while a producer runs; waits after intents and uploads are
    widened. Seed: EVENTVAULT_TEST_SEED replays a run."""
    seed = int(os.environ.get("EVENTVAULT_TEST_SEED", SEED))
    print(f"seed {seed} (EVENTVAULT_TEST_SEED={seed} replays it)")
    rng = random.Random(seed)
    topic = f"crash.storm-{uuid.uuid4().hex[:6]}"
    partitions, total = 6, 30_000
    create_topic(kafka_bootstrap, topic, partitions=partitions)
    url = f"file://{tmp_path}/arch"
    env = archiver_env(kafka_bootstrap, url, topic, MAX_FILE_RECORDS="150",
                       FAULT_POINTS=json.dumps({"intent-committed": "sleep:0.6",
                                                "reap-waited": "sleep:0.3"}))
    producer = Producer(kafka_bootstrap, topic, total, partitions, seed=seed)
    producer.start()
    logs: list[Path] = []
    started: list[subprocess.Popen[bytes]] = []

    def member() -> tuple[subprocess.Popen[bytes], Path]:
        """A new member, once it holds partitions (the rebalance its joining caused is over)."""
        log = tmp_path / f"member-{len(logs)}.log"
        logs.append(log)
        proc = start_archiver(env, log)
        started.append(proc)
        wait_for(lambda: log_events(log, "partitions assigned"), f"partitions of {log.name}")
        return proc, log

    try:
        _storm(member, rng, partitions)
    finally:
        for proc in started:
            proc.kill()
            proc.wait()
    producer.join(timeout=150)
    assert producer.sent == total
    text = "".join(log.read_text() for log in logs)
    assert "Traceback" not in text
    revoked = sum(len(log_events(log, "partitions revoked")) for log in logs)
    assert revoked >= 8, f"only {revoked} revocations: the storm was too calm"
    hit = sum(len(log_events(log, "partition left while the loop waited")) for log in logs)
    assert hit >= 1, "no revocation landed in a wait of the loop"
    store = open_storage(StorageSettings(url=url))
    archive_once(settings(kafka_bootstrap, url, [topic], f"g-{topic}"))
    assert_exactly_once(read_archive(store), partitions, total)


Member = tuple[subprocess.Popen[bytes], Path]


def _storm(member: Callable[[], Member], rng: random.Random, partitions: int) -> None:
    """Leaves and joins, a zombie, then every member stopped gracefully (exit 0)."""
    first = member()
    held = log_events(first[1], "partitions assigned")[0]["partitions"]
    assert len(held) == partitions, "the first member did not hold every partition alone"
    members = [first, member(), member()]
    for _ in range(4):  # a graceful leave and a join: two rebalances each
        time.sleep(rng.uniform(1.0, 3.0))
        _stop(*members.pop(rng.randrange(len(members))))
        members.append(member())
    zombie, zombie_log = members[0]
    zombie.send_signal(signal.SIGSTOP)
    time.sleep(9)  # past its 6 s session: the group fences it and moves its partitions
    zombie.send_signal(signal.SIGCONT)
    time.sleep(6)
    for proc, log in members:
        _stop(proc, log)
    assert log_events(zombie_log, "commit refused"), "the zombie was never fenced"


def test_a_consumer_stops_without_leaking_cancellation(kafka_bootstrap: str) -> None:
    """A consumer without a group starts a task that its stop() cancels and awaits; stopped
    before that task first ran, stop() raises the task's CancelledError in the caller. This
    killed an archiver whose rebalance listener was reading log offsets with such a probe."""
    async def stopped(stop: Callable[[AIOKafkaConsumer], Awaitable[None]]) -> str:
        consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap)
        await consumer.start()  # returns without yielding once its task is created
        try:
            await stop(consumer)
        except asyncio.CancelledError:
            return "leaked"
        return "kept"

    assert asyncio.run(stopped(AIOKafkaConsumer.stop)) == "leaked", \
        "aiokafka no longer leaks: the test proves nothing"
    assert asyncio.run(stopped(kafka.stop_quietly)) == "kept"
