"""aiokafka against the broker version we ship: the features eventvault relies on.

These tests decide which Kafka version infra/ uses (see README, "Tested versions").
"""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import OffsetAndMetadata

pytestmark = pytest.mark.integration


async def _create(bootstrap: str, topic: str, partitions: int = 1) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()


def test_idempotent_produce_and_offsets_for_times(kafka_bootstrap: str, topic_name: str) -> None:
    async def run() -> None:
        await _create(kafka_bootstrap, topic_name)
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=True,
                                    acks="all")
        await producer.start()
        try:
            for i in range(10):
                await producer.send_and_wait(topic_name, b"v%d" % i, timestamp_ms=1_000_000 + i)
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap)
        await consumer.start()
        try:
            tp = TopicPartition(topic_name, 0)
            found = await consumer.offsets_for_times({tp: 1_000_005})
            assert found[tp] is not None
            assert found[tp].offset == 5
            assert found[tp].timestamp == 1_000_005
            assert (await consumer.end_offsets([tp]))[tp] == 10
        finally:
            await consumer.stop()

    asyncio.run(run())


def test_transactions_read_committed(kafka_bootstrap: str, topic_name: str) -> None:
    async def run() -> None:
        await _create(kafka_bootstrap, topic_name)
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap,
                                    transactional_id=f"tx-{topic_name}")
        await producer.start()
        try:
            async with producer.transaction():
                await producer.send_and_wait(topic_name, b"committed")
            await producer.begin_transaction()
            await producer.send_and_wait(topic_name, b"aborted")
            await producer.abort_transaction()
            async with producer.transaction():
                await producer.send_and_wait(topic_name, b"committed-2")
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(topic_name, bootstrap_servers=kafka_bootstrap,
                                    isolation_level="read_committed",
                                    auto_offset_reset="earliest")
        await consumer.start()
        try:
            seen: list[bytes] = []
            for _ in range(50):
                batch = await consumer.getmany(timeout_ms=200)
                seen += [r.value for recs in batch.values() for r in recs]
                if len(seen) >= 2:
                    break
            assert seen == [b"committed", b"committed-2"]
        finally:
            await consumer.stop()

    asyncio.run(run())


def test_consumer_group_commit_with_metadata(kafka_bootstrap: str, topic_name: str) -> None:
    """Group join, commit with metadata, and reading that metadata back through the admin."""

    async def run() -> None:
        await _create(kafka_bootstrap, topic_name, partitions=2)
        group = f"g-{topic_name}"
        consumer = AIOKafkaConsumer(topic_name, bootstrap_servers=kafka_bootstrap,
                                    group_id=group, enable_auto_commit=False)
        await consumer.start()
        try:
            for _ in range(100):
                if len(consumer.assignment()) == 2:
                    break
                await consumer.getmany(timeout_ms=100)
            assert len(consumer.assignment()) == 2
            tp = TopicPartition(topic_name, 1)
            await consumer.commit({tp: OffsetAndMetadata(0, "x" * 2000)})
            assert await consumer.committed(tp) == 0
        finally:
            await consumer.stop()
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(group)
            assert offsets[TopicPartition(topic_name, 1)].metadata == "x" * 2000
        finally:
            await admin.close()

    asyncio.run(run())
