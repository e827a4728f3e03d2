"""Helpers for integration tests: topics, producing records, running and reading the archive."""

from __future__ import annotations

import asyncio
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from eventvault import format as fmt
from eventvault.archiver.runner import Archiver, Summary
from eventvault.layout import parse_file_key
from eventvault.settings import Settings, load_settings
from eventvault.storage import Storage, open_storage

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Rec:
    """A record as produced: what the archive must give back."""

    partition: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()
    timestamp_ms: int | None = None


def create_topic(bootstrap: str, topic: str, partitions: int = 1,
                 config: dict[str, str] | None = None) -> None:
    """Create a topic that keeps everything: tests use old timestamps (2026-01-01, 1970), and
    the default 7-day time retention would delete those records under the archiver."""
    config = {"retention.ms": "-1", **(config or {})}

    async def run() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, partitions, 1, topic_configs=config or {})])
        finally:
            await admin.close()
    asyncio.run(run())


async def produce_async(bootstrap: str, topic: str,
                        records: list[Rec]) -> dict[tuple[int, int], Rec]:
    """Produce records; return them by (partition, offset)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True,
                                max_request_size=8 << 20, linger_ms=5)
    await producer.start()
    try:
        futs = [await producer.send(topic, r.value, key=r.key, partition=r.partition,
                                    headers=list(r.headers), timestamp_ms=r.timestamp_ms)
                for r in records]
        metas = await asyncio.gather(*futs)
    finally:
        await producer.stop()
    return {(m.partition, m.offset): r for m, r in zip(metas, records, strict=True)}


def produce(bootstrap: str, topic: str, records: list[Rec]) -> dict[tuple[int, int], Rec]:
    return asyncio.run(produce_async(bootstrap, topic, records))


def kcat_produce_null_record(bootstrap: str, topic: str, partition: int = 0) -> None:
    """A record with a null key and a null value (aiokafka cannot send one; kcat can)."""
    # -Z: empty key and value are sent as NULL; -K: a key delimiter (an empty line is skipped).
    subprocess.run(["kcat", "-b", bootstrap, "-P", "-t", topic, "-p", str(partition), "-Z",
                    "-K", "\t"], input=b"\t\n", check=True, timeout=30)


def settings(bootstrap: str, url: str, topics: list[str], group: str,
             endpoint: str | None = None, **archive: Any) -> Settings:
    storage: dict[str, Any] = {"url": url}
    if endpoint:
        storage["endpoint_url"] = endpoint
    return load_settings(None, kafka={"bootstrap_servers": bootstrap}, storage=storage,
                         archive={"topics": topics, "group_id": group, **archive})


def archive_once(s: Settings) -> Summary:
    return asyncio.run(Archiver(s, open_storage(s.storage), once=True).run())


def read_archive(store: Storage, topic: str | None = None) -> list[dict[str, Any]]:
    """Every row of the archive, with topic, hour and file key."""
    rows = []
    for key in store.list(f"topic={topic}/" if topic else "topic="):
        ref = parse_file_key(key)
        assert ref is not None, f"unexpected object {key}"
        for row in fmt.decode(store.get(key)).to_pylist():
            rows.append({**row, "topic": ref.topic, "hour": ref.hour, "file": key})
    return rows


def delete_group(bootstrap: str, group: str) -> None:
    """Delete an empty consumer group and its committed offsets, as Kafka does when they
    expire (``offsets.retention.minutes`` after the group became empty)."""
    from aiokafka.errors import for_code  # noqa: PLC0415
    from aiokafka.protocol.admin import DeleteGroupsRequest  # noqa: PLC0415

    async def run() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            coordinator = await admin.find_coordinator(group)
            response = await admin._send_request(DeleteGroupsRequest([group]), coordinator)
            for _, error_code in response.results:
                if error_code:
                    raise for_code(error_code)(f"cannot delete group {group}")
        finally:
            await admin.close()
    asyncio.run(run())
