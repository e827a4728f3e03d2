"""What a replay is: its id, selection, target and options, as frozen dataclasses. No I/O.

A :class:`Plan` is written to the archive storage when a replay starts
(``_replays/<id>/plan.json``), so that ``--resume ID`` replays exactly the same selection. The
selection itself is the core's (eventvault.query.selection), shared with ``show``; the
provenance headers each replayed record carries are decided here too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from eventvault.query.selection import Selection

Partitioning = Literal["preserve", "key", "map"]
TimestampMode = Literal["original", "now"]
PROVENANCE = ("eventvault.replay.id", "eventvault.source.topic", "eventvault.source.partition",
              "eventvault.source.offset")


@dataclass(frozen=True)
class Target:
    """Where and how records are produced."""

    topic: str
    partitioning: Partitioning = "preserve"
    partition_map: tuple[tuple[int, int], ...] = ()
    provenance: bool = True
    timestamp: TimestampMode = "original"


@dataclass(frozen=True)
class Plan:
    """One replay: its id, selection and target; stored as ``_replays/<id>/plan.json``."""

    replay_id: str
    selection: Selection
    target: Target
    created: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """The plan as JSON (keys as hex)."""
        data = asdict(self)
        data["selection"]["keys"] = [k.hex() for k in self.selection.keys]
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Plan:
        """The plan written by :meth:`to_json`."""
        data = json.loads(text)
        sel = data["selection"]
        selection = Selection(
            sel["topic"], sel["start_us"], sel["end_us"], tuple(sel["partitions"]),
            tuple((p, o) for p, o in sel["from_offsets"]),
            tuple((p, o) for p, o in sel["to_offsets"]),
            tuple(bytes.fromhex(k) for k in sel["keys"]), sel["where"])
        target_data = data["target"]
        target = Target(target_data["topic"], target_data["partitioning"],
                        tuple((s, t) for s, t in target_data["partition_map"]),
                        target_data["provenance"], target_data["timestamp"])
        return cls(data["replay_id"], selection, target, data["created"], data["options"])


def provenance(replay_id: str, topic: str, partition: int,
               offset: int) -> list[tuple[str, bytes]]:
    """Headers naming a replayed record's origin (added after its own headers)."""
    values = (replay_id, topic, str(partition), str(offset))
    return [(name, value.encode()) for name, value in zip(PROVENANCE, values, strict=True)]
