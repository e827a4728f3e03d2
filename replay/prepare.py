"""Before a replay produces: its target, its committed checkpoint, its files, and preflight.

Also where plans are stored and found: ``_replays/<id>/plan.json`` in the archive storage.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from datetime import datetime

from eventvault import kafka
from eventvault.errors import ConfigError
from eventvault.kafka import TopicInfo, TopicPartition
from eventvault.layout import FileRef, file_refs, replay_key, topic_prefix
from eventvault.query.selection import offset_ranges, select_files
from eventvault.replay.checkpoint import Checkpoint, decode_checkpoint, group_id
from eventvault.replay.plan import Plan
from eventvault.replay.preflight import Finding, preflight
from eventvault.replay.source import PartitionSummary, Source
from eventvault.settings import KafkaSettings, Settings
from eventvault.storage import Storage


def new_id(now: datetime) -> str:
    """A fresh replay id: UTC start time and random hex."""
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


@dataclass
class Prepared:
    """A replay after planning and preflight, before producing."""

    plan: Plan
    info: TopicInfo | None
    files: dict[int, list[FileRef]]
    ranges: dict[int, tuple[int, int | None]]
    summary: list[PartitionSummary]
    findings: list[Finding]
    checkpoint: Checkpoint


async def read_checkpoint(settings: KafkaSettings, replay_id: str, topic: str,
                          partitions: int, *, stable: bool) -> Checkpoint:
    """The checkpoint replay ``replay_id`` committed on the target topic's partitions.

    ``stable``: wait out a transaction still open (see
    :func:`~eventvault.kafka.stable_committed_offsets`); after the run's producer fenced
    every earlier run, what this reads is final.
    """
    read = kafka.stable_committed_offsets if stable else kafka.committed_offsets
    committed = await read(
        settings, group_id(replay_id), [TopicPartition(topic, p) for p in range(partitions)],
        what="the progress of")
    return decode_checkpoint(metadata for _, metadata in committed.values() if metadata)


def archived_files(storage: Storage, topic: str) -> list[FileRef]:
    """The archive files of ``topic``; a topic with none is refused (exit 2)."""
    refs = file_refs(storage.list(topic_prefix(topic)))
    if not refs:
        raise ConfigError(f"topic {topic} is not in the archive at {storage.url}",
                          setting="--topic")
    return refs


async def prepare(settings: Settings, plan: Plan, source: Source, refs: list[FileRef],
                  force: bool, *, fenced: bool) -> Prepared:
    """Everything a replay decides before producing.

    Reads the committed checkpoint, chooses among ``refs`` (the topic's archive files, from
    :func:`archived_files`) the files to read, summarises what is left of the
    selection and runs the preflight. ``fenced``: this run's producer has already fenced
    every earlier run of the replay (a run that produces must be), so the checkpoint is read
    with a stable read and cannot move any more; a dry run reads it as it is.
    """
    target_cluster = settings.replay.target or settings.kafka
    info = await kafka.describe_topic(target_cluster, plan.target.topic, "target topic")
    checkpoint = Checkpoint()
    if info is not None:
        checkpoint = await read_checkpoint(target_cluster, plan.replay_id, plan.target.topic,
                                           info.partitions, stable=fenced)
    selection = plan.selection
    files = select_files(refs, selection, source.record_time)
    ranges = {p: (max(lo, checkpoint.next_offsets.get(p, lo)), hi)
              for p, (lo, hi) in offset_ranges(selection, files).items()}
    summary = source.summary([f for fs in files.values() for f in fs], ranges)
    now_ms = int(time.time() * 1000)
    findings = preflight(info, plan.target, selection.topic, summary, now_ms, force)
    return Prepared(plan, info, files, ranges, summary, findings, checkpoint)


def store_plan(storage: Storage, plan: Plan) -> None:
    """Write ``plan`` where ``--resume`` finds it."""
    storage.put(replay_key(plan.replay_id, "plan.json"), plan.to_json().encode())


def load_plan(storage: Storage, replay_id: str) -> Plan:
    """The stored plan of replay ``replay_id``."""
    key = replay_key(replay_id, "plan.json")
    if not storage.exists(key):
        raise ConfigError(f"no replay {replay_id} in the archive (no {key})", setting="--resume")
    return Plan.from_json(storage.get(key).decode())
