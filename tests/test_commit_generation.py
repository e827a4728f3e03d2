"""A commit decided in one generation is never sent in the next (eventvault.kafka_commit).

The sequence of docs/EXACTLY_ONCE.md: member A's commit meets a retriable error (a request
timeout), a rebalance meanwhile gives one of its partitions to member B, B commits newer
progress, and A's retry is sent in the new generation. aiokafka's own ``commit`` sends it and
the broker takes it: the group's progress goes back. ``commit_in_generation`` refuses it.

The timeout is injected where the request would time out (aiokafka's ``_do_commit_offsets``,
the one call both commits make); the broker, the group and the rebalance are real.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import CommitFailedError, RequestTimedOutError

from eventvault import kafka, kafka_commit
from eventvault.kafka import OffsetAndMetadata, TopicPartition
from eventvault.settings import KafkaSettings
from tests.kafkautil import create_topic

pytestmark = pytest.mark.integration
Commit = Callable[[AIOKafkaConsumer, dict[TopicPartition, OffsetAndMetadata],
                   kafka_commit.Generation], Awaitable[None]]


def _member(bootstrap: str, group: str, topic: str) -> AIOKafkaConsumer:
    member = kafka.consumer(KafkaSettings(bootstrap_servers=bootstrap), group, "read_committed",
                            1 << 20, session_timeout_ms=6000)
    member.subscribe([topic])
    return member


async def _until(condition: Callable[[], bool], what: str, seconds: float = 60.0) -> None:
    for _ in range(int(seconds / 0.1)):
        if condition():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def _polling(member: AIOKafkaConsumer) -> None:
    while True:
        await member.getmany(timeout_ms=100)


def _topic(bootstrap: str, partitions: int) -> str:
    topic = f"gen.{uuid.uuid4().hex[:6]}"
    create_topic(bootstrap, topic, partitions=partitions)
    return topic


async def _scenario(bootstrap: str, topic: str,
                    commit: Commit) -> tuple[dict[int, int], BaseException | None]:
    """Run the sequence with ``commit`` as A's commit; the committed offsets and its error."""
    group = f"g-{topic}"
    everything = {TopicPartition(topic, 0), TopicPartition(topic, 1)}
    first, second = _member(bootstrap, group, topic), _member(bootstrap, group, topic)
    await first.start()
    tasks = [asyncio.create_task(_polling(first))]
    try:
        await _until(lambda: first.assignment() == everything, "A to own both partitions")
        decided = kafka_commit.generation_of(first)
        coordinator: Any = first._coordinator
        send = coordinator._do_commit_offsets
        attempts = 0

        async def times_out_during_a_rebalance(assignment: Any, offsets: Any) -> None:
            nonlocal attempts
            attempts += 1
            if attempts > 1:
                return await send(assignment, offsets)  # type: ignore[no-any-return]
            await second.start()  # B joins while A's first request is out
            tasks.append(asyncio.create_task(_polling(second)))
            await _until(lambda: len(second.assignment()) == 1
                         and kafka_commit.generation_of(first).number > decided.number
                         and len(first.assignment()) == 1, "the rebalance")
            (moved,) = second.assignment()
            await second.commit({moved: OffsetAndMetadata(20, "B's newer progress")})
            raise RequestTimedOutError()

        coordinator._do_commit_offsets = times_out_during_a_rebalance
        error: BaseException | None = None
        try:
            await commit(first, {tp: OffsetAndMetadata(10, "A's progress") for tp in everything},
                         decided)
        except CommitFailedError as exc:
            error = exc
        coordinator._do_commit_offsets = send
        found = await kafka.committed_offsets(KafkaSettings(bootstrap_servers=bootstrap), group,
                                              everything)
        (moved,) = second.assignment()
        return {int(tp == moved): offset for tp, (offset, _) in found.items()}, error
    finally:
        for task in tasks:
            task.cancel()
        await kafka.stop_quietly(first)
        await kafka.stop_quietly(second)


async def _aiokafka_commit(member: AIOKafkaConsumer,
                           offsets: dict[TopicPartition, OffsetAndMetadata],
                           _: kafka_commit.Generation) -> None:
    await member.commit(offsets)


def test_aiokafka_sends_the_stale_commit_in_the_new_generation(kafka_bootstrap: str) -> None:
    """The hole itself: the partition B moved to 20 goes back to A's 10 (1: the moved one)."""
    committed, error = asyncio.run(_scenario(kafka_bootstrap, _topic(kafka_bootstrap, 2),
                                              _aiokafka_commit))
    assert error is None
    assert committed == {0: 10, 1: 10}


def test_a_commit_decided_in_one_generation_is_refused_in_the_next(kafka_bootstrap: str) -> None:
    committed, error = asyncio.run(_scenario(kafka_bootstrap, _topic(kafka_bootstrap, 2),
                                              kafka_commit.commit_in_generation))
    assert isinstance(error, CommitFailedError), error
    assert "generation" in str(error)
    assert committed == {1: 20}, "B's progress must stand, and A's stale commit send nothing"


def test_a_commit_in_the_same_generation_retries_past_a_timeout(kafka_bootstrap: str) -> None:
    """The retry itself still works: a timeout with no rebalance is retried and commits."""
    topic = _topic(kafka_bootstrap, 1)

    async def scenario() -> dict[TopicPartition, tuple[int, str]]:
        member = _member(kafka_bootstrap, f"g-{topic}", topic)
        await member.start()
        polling = asyncio.create_task(_polling(member))
        try:
            await _until(lambda: len(member.assignment()) == 1, "the assignment")
            coordinator: Any = member._coordinator
            send, failures = coordinator._do_commit_offsets, [RequestTimedOutError()]

            async def once_timed_out(assignment: Any, offsets: Any) -> None:
                if failures:
                    raise failures.pop()
                await send(assignment, offsets)

            coordinator._do_commit_offsets = once_timed_out
            (tp,) = member.assignment()
            await kafka_commit.commit_in_generation(
                member, {tp: OffsetAndMetadata(7, "p")}, kafka_commit.generation_of(member))
            assert not failures
            return await kafka.committed_offsets(KafkaSettings(bootstrap_servers=kafka_bootstrap),
                                                 f"g-{topic}", [tp])
        finally:
            polling.cancel()
            await kafka.stop_quietly(member)

    assert [offset for offset, _ in asyncio.run(scenario()).values()] == [7]

