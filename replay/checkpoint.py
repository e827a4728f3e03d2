"""A replay's checkpoint in the target cluster: committed transactions and next source offsets.

Each transaction commits, with ``send_offsets_to_transaction``, the checkpoint as commit
metadata of the group ``eventvault-replay-<id>`` on every target partition: the transaction
number and the next source offset of the source partitions ``p`` with
``p % target partitions == target partition``, and the token of the run that committed it
(which names that transaction's offset-map file). Text form:
``evr1|<transactions>|<p>:<o>;...|<run token>`` (older eventvault: without the token).
Pure functions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

MAGIC = "evr1"
RUN_TOKEN_CHARS = 12
"""Length of a run token (hex): random per run, in its map files' names and its checkpoints."""


def group_id(replay_id: str) -> str:
    """The group whose commit metadata holds a replay's checkpoint (and the transactional id)."""
    return f"eventvault-replay-{replay_id}"


@dataclass(frozen=True)
class Checkpoint:
    """Committed transactions of a replay, and the next source offset by source partition."""

    transactions: int = 0
    next_offsets: Mapping[int, int] = field(default_factory=dict)
    run: str = ""  # token of the run that committed the last transaction ("" if unknown)


def encode_checkpoint(transactions: int, next_offsets: Mapping[int, int],
                      target_partition: int, target_count: int, run: str = "") -> str:
    """Commit metadata for one target partition (its share of the source partitions)."""
    mine = sorted((p, o) for p, o in next_offsets.items() if p % target_count == target_partition)
    entries = ";".join(f"{p}:{o}" for p, o in mine)
    return f"{MAGIC}|{transactions}|{entries}" + (f"|{run}" if run else "")


def decode_checkpoint(metadata: Iterable[str]) -> Checkpoint:
    """The checkpoint from all target partitions' commit metadata (empty: nothing committed)."""
    transactions, offsets, run = 0, {}, ""
    for text in metadata:
        if not text.startswith(MAGIC + "|"):
            continue
        _, number, entries, *token = text.split("|", 3)
        if int(number) > transactions:
            transactions, run = int(number), (token or [""])[0]
        elif int(number) == transactions and token and not run:
            run = token[0]
        for entry in filter(None, entries.split(";")):
            p, o = entry.split(":")
            offsets[int(p)] = int(o)
    return Checkpoint(transactions, offsets, run)
