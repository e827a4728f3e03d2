"""A replay's report: selection, counts, offsets, and where the offset map is.

Stored as ``_replays/<id>/report.json`` next to the plan. Counts come from the offset map
files of committed transactions, so a report after resumes covers every run. The map itself
(``_replays/<id>/offsets/*.parquet``: source_partition, source_offset, target_partition,
target_offset) translates consumer-group offsets from the source topic to the target.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from eventvault import format as fmt
from eventvault.layout import replay_key
from eventvault.replay.prepare import Prepared
from eventvault.storage import Storage


def offset_map(storage: Storage, replay_id: str, transactions: int) -> pa.Table:
    """The offset map of the first ``transactions`` committed transactions."""
    tables = []
    for key in sorted(storage.list(replay_key(replay_id, "offsets/"))):
        number = key.rsplit("/", 1)[-1].removesuffix(".parquet")
        if number.isdigit() and int(number) <= transactions:
            tables.append(fmt.decode_rows(fmt.OFFSET_MAP_SCHEMA, storage.get(key)))
    return pa.concat_tables(tables) if tables else fmt.OFFSET_MAP_SCHEMA.empty_table()


def _mapping(table: pa.Table) -> list[dict[str, int]]:
    grouped = table.group_by(["source_partition", "target_partition"]).aggregate([
        ("source_offset", "count"), ("source_offset", "min"), ("source_offset", "max"),
        ("target_offset", "min"), ("target_offset", "max")])
    rows = grouped.to_pylist()
    return sorted(({"source_partition": r["source_partition"],
                    "target_partition": r["target_partition"],
                    "records": r["source_offset_count"],
                    "first_source_offset": r["source_offset_min"],
                    "last_source_offset": r["source_offset_max"],
                    "first_target_offset": r["target_offset_min"],
                    "last_target_offset": r["target_offset_max"]} for r in rows),
                  key=lambda r: (r["source_partition"], r["target_partition"]))


def build_report(storage: Storage, prepared: Prepared, status: str, delivered: int,
                 seconds: float, transactions: int) -> dict[str, Any]:
    """The report of ``prepared``: stored after a run, only returned after a dry run.

    ``transactions``: how many the replay has committed in all runs so far.
    """
    plan = prepared.plan
    report: dict[str, Any] = {
        "replay_id": plan.replay_id, "status": status,
        "source_topic": plan.selection.topic, "target_topic": plan.target.topic,
        "plan": json.loads(plan.to_json()),
        "preflight": [{"fatal": f.fatal, "message": f.message} for f in prepared.findings],
        "to_replay": [asdict(s) for s in prepared.summary],
        "this_run": {"records": delivered, "seconds": round(seconds, 3),
                     "records_per_s": round(delivered / seconds) if seconds else None},
    }
    if status != "dry-run":
        table = offset_map(storage, plan.replay_id, transactions)
        report.update({
            "transactions": transactions, "records": table.num_rows,
            "partitions": _mapping(table),
            "offset_map": f"{storage.url.rstrip('/')}/{replay_key(plan.replay_id, 'offsets/')}",
            "finished": datetime.now(UTC).isoformat(),
        })
        storage.put(replay_key(plan.replay_id, "report.json"),
                    json.dumps(report, indent=2).encode())
    return report
