"""Helpers for replay tests: archive a topic, run `eventvault replay`, read a topic with kcat."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from eventvault.replay.prepare import read_checkpoint
from eventvault.settings import KafkaSettings
from tests.cliutil import run_cli, start_cli
from tests.kafkautil import Rec, archive_once, create_topic, kcat_produce_null_record, produce
from tests.kafkautil import settings as archive_settings


@dataclass(frozen=True)
class Read:
    """A record as kcat reads it (read_committed)."""

    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: str  # kcat's %h: name=value,... (provenance values are ASCII)

    def header(self, name: str) -> str | None:
        """The last value of header ``name`` in kcat's rendering."""
        found = [h.split("=", 1)[1] for h in self.headers.split(",") if h.startswith(name + "=")]
        return found[-1] if found else None

    @property
    def source(self) -> tuple[int, int]:
        """(source partition, source offset) from the provenance headers."""
        p, o = self.header("eventvault.source.partition"), self.header("eventvault.source.offset")
        assert p is not None, self.headers
        assert o is not None, self.headers
        return int(p), int(o)


def kcat_read(bootstrap: str, topic: str) -> list[Read]:
    """Every committed record of ``topic``, byte for byte (lengths first, then the bytes)."""
    out = subprocess.run(
        ["kcat", "-C", "-b", bootstrap, "-t", topic, "-o", "beginning", "-e", "-q",
         "-X", "isolation.level=read_committed", "-f", "%p %o %T %K %S %h\n%k%s\n"],
        check=True, capture_output=True, timeout=120).stdout
    records, pos = [], 0
    while pos < len(out):
        end = out.index(b"\n", pos)
        p, o, ts, klen, vlen, *rest = out[pos:end].decode().split(" ", 5)
        pos = end + 1
        key = value = None
        if int(klen) >= 0:
            key, pos = out[pos:pos + int(klen)], pos + int(klen)
        if int(vlen) >= 0:
            value, pos = out[pos:pos + int(vlen)], pos + int(vlen)
        assert out[pos:pos + 1] == b"\n"
        pos += 1
        records.append(Read(int(p), int(o), int(ts), key, value, rest[0] if rest else ""))
    return sorted(records, key=lambda r: (r.partition, r.offset))


async def _headers(bootstrap: str, topic: str, count: int) -> dict[tuple[int, int], Any]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                isolation_level="read_committed", enable_auto_commit=False)
    await consumer.start()
    found: dict[tuple[int, int], Any] = {}
    try:
        while len(found) < count:
            for msgs in (await consumer.getmany(timeout_ms=2000)).values():
                for m in msgs:
                    found[(m.partition, m.offset)] = list(m.headers)
    finally:
        await consumer.stop()
    return found


def read_headers(bootstrap: str, topic: str, count: int) -> dict[tuple[int, int], Any]:
    """Headers exactly (binary, null values) of the first ``count`` records, by (p, offset)."""
    return asyncio.run(asyncio.wait_for(_headers(bootstrap, topic, count), 60))


def archived_topic(bootstrap: str, url: str, records: list[Rec], partitions: int,
                   null_record_partition: int | None = None, topic: str | None = None,
                   **archive: Any) -> str:
    """A fresh source topic holding ``records`` (and a null/null record), archived to ``url``."""
    topic = topic or f"src.{uuid.uuid4().hex[:6]}-orders"
    create_topic(bootstrap, topic, partitions)
    produce(bootstrap, topic, records)
    if null_record_partition is not None:
        kcat_produce_null_record(bootstrap, topic, null_record_partition)
    archive_once(archive_settings(bootstrap, url, [topic], f"g-{topic}", **archive))
    return topic


def replay(bootstrap: str, url: str, *args: str, cwd: Path,
           env: dict[str, str] | None = None) -> tuple[int, dict[str, Any] | None, str]:
    """Run `eventvault replay ... --output json`: exit code, report (as printed, also by a
    refused dry run), stderr."""
    res = run_cli("replay", *args, "--output", "json", cwd=cwd, timeout=300, env={
        "EVENTVAULT_KAFKA__BOOTSTRAP_SERVERS": bootstrap, "EVENTVAULT_STORAGE__URL": url,
        **(env or {})})
    report = json.loads(res.stdout) if res.stdout.strip() else None
    return res.returncode, report, res.stderr


def offset_map(archive: Path, report: dict[str, Any]) -> dict[tuple[int, int],
                                                              tuple[int, int]]:
    """(target partition, target offset) -> (source partition, source offset) from the map
    files a replay's report lists (those of its committed transactions), under ``archive``."""
    files = report["offset_map_files"]
    assert len(files) == report["transactions"], files
    found: dict[tuple[int, int], tuple[int, int]] = {}
    for name in files:
        rows = pq.read_table(archive / "_replays" / report["replay_id"] / name).to_pylist()
        for row in rows:
            where = (row["target_partition"], row["target_offset"])
            assert where not in found, f"target offset {where} mapped twice"
            found[where] = (row["source_partition"], row["source_offset"])
    return found


def assert_offset_map_matches(archive: Path, report: dict[str, Any], target: list[Read],
                              source: list[Read] | None = None) -> None:
    """The replay's offset map is the target as kcat reads it: every committed target record
    at its mapped (partition, offset), from the mapped source record (its provenance, and with
    ``source`` its key, value and timestamp), and nothing else."""
    mapping = offset_map(archive, report)
    at = {(r.partition, r.offset): r for r in target}
    assert sorted(mapping) == sorted(at), (
        f"map-only {sorted(set(mapping) - set(at))[:5]}, "
        f"target-only {sorted(set(at) - set(mapping))[:5]}")
    origins = {(r.partition, r.offset): r for r in source or []}
    for where, origin in mapping.items():
        assert at[where].source == origin, (where, origin, at[where].headers)
        if source is not None:
            s, t = origins[origin], at[where]
            assert (t.key, t.value, t.timestamp_ms) == (s.key, s.value, s.timestamp_ms), where


def start_replay(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    """`eventvault replay` in the background, its output discarded."""
    return start_cli("replay", *args, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL)


def source_and_target(bootstrap: str, url: str, n: int, partitions: int, *,
                       transaction_records: int,
                       **archive: Any) -> tuple[str, str, dict[str, str]]:
    """A source topic of ``n`` records archived to ``url``, an empty target topic, and the
    environment of a replay between them."""
    records = [Rec(i % partitions, f"k{i % 41}".encode(), str(i).encode() * 10, (),
                   1_767_225_600_000 + i) for i in range(n)]
    src = archived_topic(bootstrap, url, records, partitions, **archive)
    dst = f"dst-{src}"
    create_topic(bootstrap, dst, partitions)
    return src, dst, {"EVENTVAULT_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
                      "EVENTVAULT_STORAGE__URL": url,
                      "EVENTVAULT_REPLAY__TRANSACTION_RECORDS": str(transaction_records)}


def map_files(archive: Path, replay_id: str) -> int:
    """How many offset-map files replay ``replay_id`` has stored."""
    return len(list((archive / "_replays" / replay_id / "offsets").glob("*.parquet")))


def wait_until(what: str, done: Callable[[], bool], timeout: float = 60) -> None:
    """Poll ``done`` every 50 ms; fail the test naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def committed_transactions(bootstrap: str, replay_id: str, topic: str, partitions: int) -> int:
    """How many transactions replay ``replay_id`` has committed (its checkpoint in Kafka)."""
    return asyncio.run(read_checkpoint(KafkaSettings(bootstrap_servers=bootstrap), replay_id,
                                       topic, partitions, stable=False)).transactions


def set_topic_config(bootstrap: str, topic: str, configs: dict[str, str]) -> None:
    """Change a topic's configuration."""
    async def run() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic,
                                                      configs)])
        finally:
            await admin.close()
    asyncio.run(run())
