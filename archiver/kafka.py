"""The aiokafka adapter: clients built from settings, committed progress in and out.

With storage.py, the only module that touches aiokafka's API; replay builds its clients here too.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError as AIOKafkaError
from aiokafka.structs import OffsetAndMetadata

from archiver import progress as prog
from archiver.errors import ArchiveStateError, KafkaError
from archiver.settings import KafkaSettings

__all__ = ["AIOKafkaError", "OffsetAndMetadata", "TopicPartition", "client_options",
           "committed_progress", "consumer", "log_offsets"]


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
        raise KafkaError(f"cannot read offsets of {len(partitions)} partitions: {exc}",
                         retriable=exc.retriable) from exc
    finally:
        await probe.stop()


async def committed_progress(settings: KafkaSettings, group_id: str,
                             partitions: Iterable[TopicPartition]) -> dict[TopicPartition,
                                                                           prog.Progress]:
    """The committed progress of ``partitions`` (partitions never committed are left out)."""
    admin = AIOKafkaAdminClient(**client_options(settings))
    try:
        await admin.start()
        offsets = await admin.list_consumer_group_offsets(group_id, partitions=list(partitions))
    except AIOKafkaError as exc:
        raise KafkaError(f"cannot read committed offsets of group {group_id}: {exc}",
                         group_id=group_id, retriable=exc.retriable) from exc
    finally:
        await admin.close()
    found = {}
    for tp, om in offsets.items():
        if om is None or om.offset < 0:
            continue
        try:
            found[tp] = prog.decode(om.offset, om.metadata)
        except ValueError as exc:
            raise ArchiveStateError(f"unreadable progress of {tp.topic}[{tp.partition}]: {exc}",
                                    topic=tp.topic, partition=tp.partition) from exc
    return found
