"""The target cluster through aiokafka: what the topic allows, committed progress, a producer.

Clients are built from settings with :func:`archiver.kafka.client_options`, so TLS and SASL
work for a target on another cluster exactly as for the archiver.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError as AIOKafkaError

from archiver.errors import KafkaError
from archiver.kafka import client_options
from archiver.settings import KafkaSettings

_LONG_MAX = 2**63 - 1


@dataclass(frozen=True)
class TargetInfo:
    """What the target topic allows."""

    topic: str
    partitions: int
    max_message_bytes: int
    timestamp_type: str
    retention_ms: int
    before_max_ms: int
    after_max_ms: int


def _int(configs: dict[str, str], name: str, default: int) -> int:
    value = configs.get(name)
    return int(value) if value not in (None, "") else default


async def describe(kafka: KafkaSettings, topic: str) -> TargetInfo | None:
    """The target topic's partition count and configuration (None: no such topic)."""
    admin = AIOKafkaAdminClient(**client_options(kafka))
    try:
        await admin.start()
        described = await admin.describe_topics([topic])
        if not described or described[0].get("error_code"):
            return None
        partitions = described[0]["partitions"]
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic)])
    except AIOKafkaError as exc:
        raise KafkaError(f"cannot describe target topic {topic}: {exc}", topic=topic,
                         retriable=exc.retriable) from exc
    finally:
        await admin.close()
    configs = {entry[0]: entry[1] for resp in responses for res in resp.resources
               for entry in res[4]}
    return TargetInfo(topic, len(partitions), _int(configs, "max.message.bytes", 1_048_588),
                      configs.get("message.timestamp.type", "CreateTime"),
                      _int(configs, "retention.ms", 604_800_000),
                      _int(configs, "message.timestamp.before.max.ms", _LONG_MAX),
                      _int(configs, "message.timestamp.after.max.ms", _LONG_MAX))


async def committed(kafka: KafkaSettings, group_id: str, topic: str, partitions: int) -> list[str]:
    """The commit metadata of ``group_id`` on every partition of ``topic``.

    Retriable errors (a coordinator still being elected, as on a fresh cluster) are retried
    for up to the request timeout.
    """
    admin = AIOKafkaAdminClient(**client_options(kafka))
    deadline = time.monotonic() + kafka.request_timeout_ms / 1000
    try:
        await admin.start()
        while True:
            try:
                offsets = await admin.list_consumer_group_offsets(
                    group_id, partitions=[TopicPartition(topic, p) for p in range(partitions)])
                break
            except AIOKafkaError as exc:
                if not exc.retriable or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
    except AIOKafkaError as exc:
        raise KafkaError(f"cannot read the progress of {group_id}: {exc}", group_id=group_id,
                         retriable=exc.retriable) from exc
    finally:
        await admin.close()
    return [o.metadata for o in offsets.values() if o.offset >= 0 and o.metadata]


def producer(kafka: KafkaSettings, transactional_id: str, batch_bytes: int) -> AIOKafkaProducer:
    """A transactional, idempotent producer (acks=all) for one replay."""
    return AIOKafkaProducer(**client_options(kafka), transactional_id=transactional_id,
                            enable_idempotence=True, acks="all", linger_ms=5,
                            max_batch_size=batch_bytes, max_request_size=max(batch_bytes, 1 << 20),
                            transaction_timeout_ms=120_000)
