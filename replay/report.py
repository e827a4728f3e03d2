"""A replay's report: selection, counts, offsets, and where the offset map is.

Stored as ``_replays/<id>/report.json`` next to the plan. Counts come from the offset map
files of committed transactions (listed in the report; a file of a transaction that was not
committed may sit next to them), so a report after resumes covers every run. The map itself
(``_replays/<id>/offsets/<n>-<epoch>.parquet``: source_partition, source_offset, target_partition,
target_offset) translates consumer-group offsets from the source topic to the target.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from eventvault import format as fmt
from eventvault.errors import ObjectChanged
from eventvault.layout import replay_key
from eventvault.replay.prepare import Prepared
from eventvault.storage import Storage

FIRST_COMMIT = "first-commit.json"
"""Written (under ``_replays/<id>/``) once the replay's first transaction is committed."""


def map_file(number: int, epoch: int) -> str:
    """Transaction ``number``'s offset map (1, 2, ...) by the run of producer ``epoch``.

    A name under ``_replays/<id>/``.
    """
    return f"offsets/{number:08d}-{epoch:05d}.parquet"


def _map_files(storage: Storage, replay_id: str) -> dict[int, str]:
    """Transaction number -> the key of its map file written by the latest run.

    The latest run is the one of the highest producer epoch; files without an epoch (written
    by an older eventvault) count as epoch -1.
    """
    latest: dict[int, tuple[int, str]] = {}
    for key in storage.list(replay_key(replay_id, "offsets/")):
        number, _, epoch = key.rsplit("/", 1)[-1].removesuffix(".parquet").partition("-")
        if number.isdigit() and (epoch.isdigit() or not epoch):
            found = (int(epoch) if epoch else -1, key)
            latest[int(number)] = max(latest.get(int(number), found), found)
    return {number: key for number, (_, key) in sorted(latest.items())}


def offset_map(storage: Storage, replay_id: str, transactions: int) -> tuple[pa.Table, list[str]]:
    """The offset map of the first ``transactions`` committed transactions, and its files.

    A file numbered past ``transactions`` belongs to a transaction that was not committed.
    Of several files of one number, the committed one is the latest run's: a run fences every
    earlier one before it reads the progress, so no earlier run commits a number it writes,
    while a fenced run's hung upload may still land after it.
    """
    tables, names = [], []
    prefix = replay_key(replay_id, "")
    for number, key in _map_files(storage, replay_id).items():
        if number <= transactions:
            tables.append(fmt.decode_rows(fmt.OFFSET_MAP_SCHEMA, storage.get(key)))
            names.append(key.removeprefix(prefix))
    table = pa.concat_tables(tables) if tables else fmt.OFFSET_MAP_SCHEMA.empty_table()
    return table, names


def committed_in_storage(storage: Storage, replay_id: str) -> int:
    """How many transactions the replay's stored files prove it committed.

    The stored report's count; ``n - 1`` for a map file ``n``, which a run writes only after
    transaction ``n - 1`` was committed (a run starts after the committed checkpoint); and 1
    once :data:`FIRST_COMMIT` exists.
    """
    proven = max(_map_files(storage, replay_id), default=1) - 1
    if proven < 1 and storage.exists(replay_key(replay_id, FIRST_COMMIT)):
        proven = 1
    key = replay_key(replay_id, "report.json")
    if storage.exists(key):
        proven = max(proven, int(json.loads(storage.get(key)).get("transactions", 0)))
    return proven


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
                 seconds: float, transactions: int, epoch: int = -1) -> dict[str, Any]:
    """The report of ``prepared``: stored after a run, only returned after a dry run.

    ``transactions``: how many the replay has committed in all runs so far (their map files
    are listed); ``epoch``: this run's producer epoch.
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
        table, files = offset_map(storage, plan.replay_id, transactions)
        report.update({
            "transactions": transactions, "records": table.num_rows,
            "partitions": _mapping(table),
            "offset_map": f"{storage.url.rstrip('/')}/{replay_key(plan.replay_id, 'offsets/')}",
            "offset_map_files": files,
            "producer_epoch": epoch, "finished": datetime.now(UTC).isoformat(),
        })
        store_report(storage, plan.replay_id, report, epoch)
    return report


def store_report(storage: Storage, replay_id: str, report: dict[str, Any], epoch: int) -> bool:
    """Store ``report`` unless a later run (a higher producer ``epoch``) stored its own.

    A compare-and-set: the stored report is read with its etag and replaced only if it is
    still that one (created only if still absent), else read again; so a fenced run's
    "failed" report never replaces the report of the run that fenced it, however the two
    interleave. False if a later run's report was kept.
    """
    key = replay_key(replay_id, "report.json")
    data = json.dumps(report, indent=2).encode()
    while True:
        current = next((v for v in storage.stat(key) if v.key == key), None)
        if current is None:
            if storage.create(key, data):
                return True
            continue  # another run created it meanwhile
        if int(json.loads(storage.get(key)).get("producer_epoch", -1)) > epoch:
            return False
        try:
            storage.replace(key, data, current.etag)
        except ObjectChanged:
            continue
        return True
