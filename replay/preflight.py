"""Preflight checks of a replay against its target topic: pure, run before anything is produced.

Problems that make Kafka reject records (too large, timestamps outside what the broker
accepts, no target partition) always stop the replay. Problems that only make the result
surprising (retention would delete old records at once, LogAppendTime overwrites timestamps)
stop it unless ``--force`` is given, and are then reported as warnings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from eventvault.kafka import TopicInfo
from eventvault.replay.checkpoint import RUN_TOKEN_CHARS, encode_checkpoint
from eventvault.replay.partitioning import unmapped
from eventvault.replay.plan import Target
from eventvault.replay.source import PartitionSummary

# Bytes a record needs beyond its key, value and headers: record batch header (61), record
# framing (up to ~25) and the provenance headers (under 200 for any topic name up to 249).
OVERHEAD_BYTES = 61 + 25 + 200 + 249


METADATA_BYTES = 4096  # the broker's default offset.metadata.max.bytes


def progress_bytes(partitions: Sequence[int], target_partitions: int) -> int:
    """The longest progress metadata a replay of ``partitions`` may commit (at most)."""
    worst = (1 << 63) - 1
    return max((len(encode_checkpoint(worst, {p: worst for p in partitions}, t,
                                      target_partitions, "0" * RUN_TOKEN_CHARS))
                for t in range(target_partitions)), default=0)


@dataclass(frozen=True)
class Finding:
    """One preflight result; ``fatal`` ones stop the replay."""

    fatal: bool
    message: str


def preflight(info: TopicInfo | None, target: Target, source_topic: str,
              summary: Sequence[PartitionSummary], now_ms: int, force: bool) -> list[Finding]:
    """Every problem the replay of ``summary`` into ``info`` would meet."""
    if info is None:
        return [Finding(True, f"target topic {target.topic} does not exist (create it first: "
                              f"eventvault never creates topics)")]
    found = [Finding(True, m) for m in unmapped(target, [s.partition for s in summary],
                                                  info.partitions)]
    longest = progress_bytes([s.partition for s in summary], info.partitions)
    if longest > METADATA_BYTES:
        found.append(Finding(True, (
            f"the progress of {len(summary)} source partitions needs {longest} bytes of commit "
            f"metadata on one of {info.topic}'s {info.partitions} partitions; Kafka keeps "
            f"{METADATA_BYTES} (offset.metadata.max.bytes): replay fewer partitions at once")))
    for s in summary:
        if s.largest + OVERHEAD_BYTES > info.max_message_bytes:
            found.append(Finding(True, (
                f"record {source_topic}/{s.partition}/{s.largest_offset} is {s.largest} bytes; "
                f"{info.topic} accepts at most max.message.bytes={info.max_message_bytes}")))
    if not summary or target.timestamp == "now":
        return found
    oldest = min(s.first_us for s in summary) // 1000
    newest = max(s.last_us for s in summary) // 1000
    if oldest < now_ms - info.before_max_ms or newest > now_ms + info.after_max_ms:
        found.append(Finding(True, (
            f"{info.topic} rejects timestamps older than message.timestamp.before.max.ms="
            f"{info.before_max_ms} or newer than message.timestamp.after.max.ms="
            f"{info.after_max_ms}; the selection spans {oldest} to {newest} ms "
            f"(use --timestamp now)")))
    if info.timestamp_type == "LogAppendTime":
        found.append(Finding(not force, (
            f"{info.topic} has message.timestamp.type=LogAppendTime: the broker replaces the "
            f"original timestamps (use --timestamp now, or --force)")))
    if info.retention_ms >= 0 and oldest < now_ms - info.retention_ms:
        found.append(Finding(not force, (
            f"records older than {info.topic}'s retention.ms={info.retention_ms} would be "
            f"deleted at once: the oldest selected record is {(now_ms - oldest) // 1000} s "
            f"old (use --timestamp now, raise the retention, or --force)")))
    return found
