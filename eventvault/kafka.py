"""The aiokafka adapter: clients built from settings, log offsets, group offsets, topics.

The aiokafka adapter, with its companions :mod:`eventvault.kafka_probes` (long-lived and
range-reading probe clients), :mod:`eventvault.kafka_protocol` (a request aiokafka lacks) and
:mod:`eventvault.kafka_commit` (group commits bound to a generation): no other module imports
aiokafka. The archiver and replay get their consumer, producer
and admin lookups here, and the aiokafka names they handle (``TopicPartition``, the rebalance
listener base, the errors a commit may meet) through the re-exports below. Failures become
:class:`~eventvault.errors.BrokerError`.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import (
    CommitFailedError,
    IllegalOperation,
    IllegalStateError,
    ProducerFenced,
    RebalanceInProgressError,
    for_code,
)
from aiokafka.errors import KafkaError as AIOKafkaError
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.structs import OffsetAndMetadata

from eventvault.errors import BrokerError
from eventvault.kafka_protocol import UNSTABLE_OFFSET_COMMIT, StableOffsetFetch
from eventvault.settings import KafkaSettings

__all__ = ["COMMIT_REFUSED", "TRANSACTION_LOST", "AIOKafkaError", "BatchBuilder",
           "IllegalStateError", "OffsetAndMetadata", "ProducerFenced",
           "RebalanceListener", "TopicInfo", "TopicPartition", "client_options", "commit_offsets",
           "committed_offsets", "consumer", "delete_records", "describe_topic", "group_members",
           "log_offsets", "producer_epoch", "quiet_internal_failures",
           "stable_committed_offsets", "stop_quietly", "transactional_producer"]

RebalanceListener = ConsumerRebalanceListener
COMMIT_REFUSED = (CommitFailedError, RebalanceInProgressError, IllegalStateError)
"""What a group commit raises when the group has moved on (a rebalance fenced it)."""
TRANSACTION_LOST = (ProducerFenced, IllegalOperation)
"""What a transactional producer raises once its transaction is gone: fenced by a newer
producer of its transactional id, or aborted by the broker past the transaction timeout
(aiokafka then refuses to send outside a transaction)."""
_LONG_MAX = 2**63 - 1
T = TypeVar("T")


def client_options(settings: KafkaSettings) -> dict[str, Any]:
    """Connection keyword arguments shared by aiokafka's consumer, producer and admin."""
    opts: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": settings.client_id,
        "security_protocol": settings.security_protocol,
        "request_timeout_ms": settings.request_timeout_ms,
    }
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        opts["ssl_context"] = _ssl_context(settings)
    if settings.security_protocol.startswith("SASL"):
        opts["sasl_mechanism"] = settings.sasl_mechanism
        opts["sasl_plain_username"] = settings.sasl_username
        opts["sasl_plain_password"] = (settings.sasl_password.get_secret_value()
                                       if settings.sasl_password else None)
    return opts


def _ssl_context(settings: KafkaSettings) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(settings.ssl_cafile) if settings.ssl_cafile
                                     else None)
    ctx.check_hostname = settings.ssl_check_hostname
    if settings.ssl_certfile:
        password = (settings.ssl_key_password.get_secret_value() if settings.ssl_key_password
                    else None)
        ctx.load_cert_chain(str(settings.ssl_certfile),
                            str(settings.ssl_keyfile) if settings.ssl_keyfile else None,
                            password)
    return ctx


def consumer(settings: KafkaSettings, group_id: str, isolation_level: str,
             fetch_max_bytes: int, session_timeout_ms: int = 10_000) -> AIOKafkaConsumer:
    """A group consumer that never auto-commits and reads from the earliest offset."""
    return AIOKafkaConsumer(
        **client_options(settings),
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level=isolation_level,
        fetch_max_bytes=fetch_max_bytes,
        max_partition_fetch_bytes=min(fetch_max_bytes, 8 << 20),
        fetch_max_wait_ms=200,
        max_poll_interval_ms=600_000,
        session_timeout_ms=session_timeout_ms,
        heartbeat_interval_ms=max(300, session_timeout_ms // 3),
    )


def transactional_producer(settings: KafkaSettings, transactional_id: str, batch_bytes: int,
                           transaction_timeout_ms: int = 120_000) -> AIOKafkaProducer:
    """A transactional, idempotent producer (acks=all).

    The broker aborts a transaction left open longer than ``transaction_timeout_ms``.
    """
    return AIOKafkaProducer(**client_options(settings), transactional_id=transactional_id,
                            enable_idempotence=True, acks="all", linger_ms=5,
                            max_batch_size=batch_bytes, max_request_size=max(batch_bytes, 1 << 20),
                            transaction_timeout_ms=transaction_timeout_ms)


def quiet_internal_failures(loop: asyncio.AbstractEventLoop) -> None:
    """Drop "Future exception was never retrieved" for aiokafka's own copies of an error.

    A failed transactional producer (fenced, say) leaves the error in internal futures that
    nobody awaits (the transaction waiter, each batch's drain waiter); the caller already has
    the error and reports it as one line. Any other unhandled error still goes to the default
    handler.
    """
    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if isinstance(context.get("exception"), AIOKafkaError) and "never retrieved" in str(
                context.get("message", "")):
            return
        loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


def producer_epoch(producer: AIOKafkaProducer) -> int:
    """The epoch ``init_transactions`` gave a started transactional producer.

    Each producer started with a transactional id gets a higher epoch than the ones it
    fenced, so it orders the runs that used the id.
    """
    epoch: int = producer._txn_manager.producer_epoch
    return epoch


async def log_offsets(settings: KafkaSettings, partitions: list[TopicPartition],
                      isolation_level: str) -> tuple[dict[TopicPartition, int],
                                                     dict[TopicPartition, int]]:
    """Beginning and end offsets of ``partitions``, read by a client of their own.

    The end is the last stable offset when ``read_committed``. The group consumer's fetcher is
    not asked, so that these lookups never interleave with its own position resets.
    """
    probe = AIOKafkaConsumer(**client_options(settings), isolation_level=isolation_level)
    try:
        await probe.start()
        return (await probe.beginning_offsets(partitions), await probe.end_offsets(partitions))
    except AIOKafkaError as exc:
        raise BrokerError(f"cannot read offsets of {len(partitions)} partitions: {exc}",
                          retriable=exc.retriable) from exc
    finally:
        await stop_quietly(probe)


async def delete_records(settings: KafkaSettings, before: dict[TopicPartition, int]) -> None:
    """Delete each partition's records below the given offset (moves its log start there)."""
    deletions = {tp: RecordsToDelete(offset) for tp, offset in before.items()}
    await _admin(settings, f"delete records of {len(before)} partitions",
                 lambda admin: admin.delete_records(deletions))


async def group_members(settings: KafkaSettings, group_id: str) -> int:
    """How many members ``group_id`` has now (0: no consumer of it, such as an archiver, runs)."""
    responses = await _admin(settings, f"describe group {group_id}",
                             lambda admin: admin.describe_consumer_groups([group_id]),
                             group_id=group_id)
    return sum(len(group[5]) for response in responses for group in response.groups
               if group[1] == group_id)


async def stop_quietly(client: AIOKafkaConsumer) -> None:
    """Stop a consumer; errors of its stopping are not the caller's.

    aiokafka's ``stop()`` cancels the consumer's pending fetch tasks and awaits them without
    catching their ``CancelledError``, which then escapes into the caller as if the caller had
    been cancelled (it killed an archiver from its rebalance listener). That one is swallowed;
    a cancellation of the calling task itself (a time limit around the stop, say) still
    propagates. A stop cut short by one leaves the client's remaining tasks to the end of the
    event loop; the group drops the member at its session timeout.
    """
    try:
        await client.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
    except AIOKafkaError:
        pass


async def _admin(settings: KafkaSettings, what: str,
                 call: Callable[[AIOKafkaAdminClient], Awaitable[T]], **attrs: Any) -> T:
    """Run ``call`` on an admin client, as one BrokerError line if it fails.

    Retriable errors (a coordinator still being elected, as on a fresh cluster) are retried
    for up to the request timeout.
    """
    admin = AIOKafkaAdminClient(**client_options(settings))
    deadline = time.monotonic() + settings.request_timeout_ms / 1000
    try:
        await admin.start()
        while True:
            try:
                return await call(admin)
            except AIOKafkaError as exc:
                if not exc.retriable or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
    except AIOKafkaError as exc:
        raise BrokerError(f"cannot {what}: {exc}", retriable=exc.retriable, **attrs) from exc
    finally:
        await admin.close()


async def committed_offsets(settings: KafkaSettings, group_id: str,
                            partitions: Iterable[TopicPartition], *,
                            what: str = "committed offsets of group") -> dict[TopicPartition,
                                                                              tuple[int, str]]:
    """(offset, metadata) committed by ``group_id``; partitions never committed are left out.

    ``what`` names the offsets in the error line (``cannot read <what> <group>: ...``).
    """
    wanted = list(partitions)
    offsets = await _admin(
        settings, f"read {what} {group_id}",
        lambda admin: admin.list_consumer_group_offsets(group_id, partitions=wanted),
        group_id=group_id)
    return {tp: (om.offset, om.metadata or "") for tp, om in offsets.items()
            if om is not None and om.offset >= 0}


async def commit_offsets(settings: KafkaSettings, group_id: str,
                         offsets: dict[TopicPartition, tuple[int, str]]) -> None:
    """Commit (offset, metadata) for ``group_id`` from outside the group.

    The broker accepts such a commit only while the group has no members, so this never
    races a running archiver.
    """
    client = AIOKafkaConsumer(**client_options(settings), group_id=group_id,
                              enable_auto_commit=False)
    try:
        await client.start()
        client.assign(list(offsets))
        await client.commit({tp: OffsetAndMetadata(offset, metadata)
                             for tp, (offset, metadata) in offsets.items()})
    except AIOKafkaError as exc:
        raise BrokerError(f"cannot commit offsets of group {group_id}: {exc}",
                          retriable=exc.retriable, group_id=group_id) from exc
    finally:
        await client.stop()


async def stable_committed_offsets(settings: KafkaSettings, group_id: str,
                                   partitions: Iterable[TopicPartition], *,
                                   what: str = "committed offsets of group",
                                   ) -> dict[TopicPartition, tuple[int, str]]:
    """As :func:`committed_offsets`, but only offsets no open transaction may still change.

    The broker answers ``UNSTABLE_OFFSET_COMMIT`` while a transaction that sent offsets for
    the group is open; this waits (up to the request timeout) until it is committed or
    aborted. After ``init_transactions`` fenced a transactional id, the offsets it committed
    are therefore final.
    """
    request = StableOffsetFetch(group_id, list(partitions))
    deadline = time.monotonic() + settings.request_timeout_ms / 1000

    async def fetch(admin: AIOKafkaAdminClient) -> dict[TopicPartition, tuple[int, str]] | None:
        while True:
            coordinator = await admin.find_coordinator(group_id)
            response = await admin._client.send(coordinator, request)
            if response.error_code:
                raise for_code(response.error_code)()
            found, unstable = {}, False
            for topic, entries, _ in response.topics:
                for partition, offset, _epoch, metadata, error_code, _ in entries:
                    if error_code == UNSTABLE_OFFSET_COMMIT:
                        unstable = True
                    elif error_code:
                        raise for_code(error_code)()
                    elif offset >= 0:
                        found[TopicPartition(topic, partition)] = (offset, metadata or "")
            if not unstable:
                return found
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.2)

    offsets = await _admin(settings, f"read {what} {group_id}", fetch, group_id=group_id)
    if offsets is None:
        raise BrokerError(f"cannot read {what} {group_id}: a transaction that commits it is "
                          f"still open after {settings.request_timeout_ms} ms",
                          retriable=True, group_id=group_id)
    return offsets


@dataclass(frozen=True)
class TopicInfo:
    """A topic's partition count and the configuration a producer must respect."""

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


async def describe_topic(settings: KafkaSettings, topic: str,
                         role: str = "topic") -> TopicInfo | None:
    """The topic's partition count and configuration (None: no such topic).

    ``role`` names the topic in the error line (``cannot describe <role> <topic>: ...``).
    """
    async def describe(admin: AIOKafkaAdminClient) -> tuple[int, dict[str, str]] | None:
        described = await admin.describe_topics([topic])
        if not described or described[0].get("error_code"):
            return None
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic)])
        configs = {entry[0]: entry[1] for resp in responses for res in resp.resources
                   for entry in res[4]}
        return len(described[0]["partitions"]), configs

    found = await _admin(settings, f"describe {role} {topic}", describe, topic=topic)
    if found is None:
        return None
    partitions, configs = found
    return TopicInfo(topic, partitions, _int(configs, "max.message.bytes", 1_048_588),
                     configs.get("message.timestamp.type", "CreateTime"),
                     _int(configs, "retention.ms", 604_800_000),
                     _int(configs, "message.timestamp.before.max.ms", _LONG_MAX),
                     _int(configs, "message.timestamp.after.max.ms", _LONG_MAX))
