"""A replay's checkpoint in the target cluster: committed transactions and next source offsets.

Each transaction commits, with ``send_offsets_to_transaction``, the checkpoint as commit
metadata of the group ``eventvault-replay-<id>`` on every target partition: the transaction
number and the next source offset of the source partitions ``p`` with
``p % target partitions == target partition``. Text form: ``evr1|<transactions>|<p>:<o>;...``.
Pure functions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

MAGIC = "evr1"


def group_id(replay_id: str) -> str:
    """The group whose commit metadata holds a replay's checkpoint (and the transactional id)."""
    return f"eventvault-replay-{replay_id}"


@dataclass(frozen=True)
class Checkpoint:
    """Committed transactions of a replay, and the next source offset by source partition."""

    transactions: int = 0
    next_offsets: Mapping[int, int] = field(default_factory=dict)


def encode_checkpoint(transactions: int, next_offsets: Mapping[int, int],
                      target_partition: int, target_count: int) -> str:
    """Commit metadata for one target partition (its share of the source partitions)."""
    mine = sorted((p, o) for p, o in next_offsets.items() if p % target_count == target_partition)
    return f"{MAGIC}|{transactions}|" + ";".join(f"{p}:{o}" for p, o in mine)


def decode_checkpoint(metadata: Iterable[str]) -> Checkpoint:
    """The checkpoint from all target partitions' commit metadata (empty: nothing committed)."""
    transactions, offsets = 0, {}
    for text in metadata:
        if not text.startswith(MAGIC + "|"):
            continue
        _, number, entries = text.split("|", 2)
        transactions = max(transactions, int(number))
        for entry in filter(None, entries.split(";")):
            p, o = entry.split(":")
            offsets[int(p)] = int(o)
    return Checkpoint(transactions, offsets)
