"""Recipients (GDPR Art. 19): the replays that delivered a subject's records to other topics.

Replays copy records to other topics, and each keeps an offset map of where every record went
(``_replays/<id>/offsets/``, docs/REPLAY.md). Joining the (partition, offset) of a subject's
records with those maps names each replay that delivered them, its target topic and time.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass

from eventvault import format as fmt
from eventvault.layout import REPLAYS, replay_key
from eventvault.storage import Storage


@dataclass(frozen=True)
class Recipient:
    """A replay that delivered ``records`` of the records asked about to ``target_topic``."""

    replay_id: str
    target_topic: str
    records: int
    at: str  # when the replay finished (or started, if it has no report)


def _replays_of(storage: Storage, topic: str) -> list[tuple[str, str, str]]:
    """(replay id, target topic, time) of every replay whose source is ``topic``."""
    found = []
    for key in storage.list(REPLAYS):
        if not key.endswith("/plan.json"):
            continue
        plan = json.loads(storage.get(key))
        if plan["selection"]["topic"] != topic:
            continue
        replay_id = plan["replay_id"]
        report_key = replay_key(replay_id, "report.json")
        at = plan.get("created", "")
        if storage.exists(report_key):
            at = json.loads(storage.get(report_key)).get("finished", at)
        found.append((replay_id, plan["target"]["topic"], at))
    return found


def delivered(storage: Storage, topic: str,
              places: Collection[tuple[int, int]]) -> list[Recipient]:
    """The replays that delivered any of ``topic``'s records at ``places`` (partition, offset).

    Every offset map counts, also one of a transaction that may not have committed: telling a
    recipient too many is better than one too few. A record is counted once per replay,
    however many map files name it (a fenced run's and its successor's map of one transaction,
    ``offsets/<n>-<epoch>-<run>.parquet``).
    """
    wanted = set(places)
    recipients: list[Recipient] = []
    if not wanted:
        return recipients
    for replay_id, target, at in _replays_of(storage, topic):
        found: set[tuple[int, int]] = set()
        for key in storage.list(replay_key(replay_id, "offsets/")):
            table = fmt.decode_rows(fmt.OFFSET_MAP_SCHEMA, storage.get(key))
            pairs = zip(table.column("source_partition").to_pylist(),
                        table.column("source_offset").to_pylist(), strict=True)
            found.update(pair for pair in pairs if pair in wanted)
        if found:
            recipients.append(Recipient(replay_id, target, len(found), at))
    return recipients
