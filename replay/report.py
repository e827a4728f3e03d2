"""A replay's report: selection, counts, offsets, and where the offset map is.

Stored as ``_replays/<id>/report.json`` next to the plan. Counts come from the offset map
files of committed transactions (listed in the report; a file of a transaction that was not
committed may sit next to them), so a report after resumes covers every run. The map itself
(``_replays/<id>/offsets/<n>-<epoch>-<run>.parquet``: source_partition, source_offset,
target_partition, target_offset) translates consumer-group offsets from the source topic to
the target.
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
from eventvault.replay.checkpoint import Checkpoint
from eventvault.replay.prepare import Prepared
from eventvault.storage import Storage

FIRST_COMMIT = "first-commit.json"
"""Written (under ``_replays/<id>/``) once the replay's first transaction is committed."""


def map_file(number: int, epoch: int, run: str) -> str:
    """Transaction ``number``'s offset map (1, 2, ...) by one run: its producer ``epoch``.

    ``run``: the run's token. A name under ``_replays/<id>/``.
    """
    return f"offsets/{number:08d}-{epoch:05d}-{run}.parquet"


def marker(number: int) -> str:
    """The marker naming committed transaction ``number``'s map file (under ``_replays/<id>/``)."""
    return f"committed/{number:08d}.json"


def record_commit(storage: Storage, replay_id: str, number: int, name: str) -> None:
    """Mark map file ``name`` as the one of committed transaction ``number``."""
    storage.put(replay_key(replay_id, marker(number)), json.dumps({"map_file": name}).encode())


def _parse(key: str) -> tuple[int, int, str] | None:
    """(number, epoch, run token) of a map file's key; epoch -1 and token "" where absent."""
    parts = key.rsplit("/", 1)[-1].removesuffix(".parquet").split("-", 2)
    number, epoch, run = [*parts, "", ""][:3]
    if not number.isdigit() or not (epoch.isdigit() or not epoch):
        return None
    return int(number), int(epoch) if epoch else -1, run


def _all_map_files(storage: Storage, replay_id: str) -> list[tuple[int, int, str, str]]:
    """(number, epoch, run token, key) of every map file, committed or not."""
    found = []
    for key in storage.list(replay_key(replay_id, "offsets/")):
        parsed = _parse(key)
        if parsed is not None:
            found.append((*parsed, key))
    return found


def recover_marker(storage: Storage, replay_id: str, checkpoint: Checkpoint) -> None:
    """Write the marker of the checkpoint's last transaction if its run died before it did.

    The checkpoint, committed in that transaction, names the run whose map file it is.
    """
    number, run = checkpoint.transactions, checkpoint.run
    if not run or storage.exists(replay_key(replay_id, marker(number))):
        return
    prefix = replay_key(replay_id, "")
    for found, _, token, key in _all_map_files(storage, replay_id):
        if found == number and token == run:
            record_commit(storage, replay_id, number, key.removeprefix(prefix))


def _map_files(storage: Storage, replay_id: str) -> dict[int, str]:
    """Transaction number -> the key of its committed map file.

    The file a marker names (``committed/<n>.json``, written once the transaction committed,
    or by the next run from the checkpoint); producer epochs are not compared, as a producer
    id expires (``transactional.id.expiration.ms``) and its successor starts again at epoch 0.
    Where no marker exists (files of an older eventvault, without a run token): the highest
    epoch's file, files without an epoch counting as epoch -1.
    """
    chosen: dict[int, str] = {}
    legacy: dict[int, tuple[int, str]] = {}
    for number, epoch, run, key in _all_map_files(storage, replay_id):
        if not run:
            legacy[number] = max(legacy.get(number, (epoch, key)), (epoch, key))
    for key in storage.list(replay_key(replay_id, "committed/")):
        stem = key.rsplit("/", 1)[-1].removesuffix(".json")
        if stem.isdigit():
            name = json.loads(storage.get(key))["map_file"]
            chosen[int(stem)] = replay_key(replay_id, name)
    for number, (_, key) in legacy.items():
        chosen.setdefault(number, key)
    return dict(sorted(chosen.items()))


def offset_map(storage: Storage, replay_id: str, transactions: int) -> tuple[pa.Table, list[str]]:
    """The offset map of the first ``transactions`` committed transactions, and its files.

    A file numbered past ``transactions`` belongs to a transaction that was not committed.
    Of several files of one number, the committed one is the one its marker names (see
    :func:`_map_files`): a fenced run's hung upload may still land after it.
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
    transaction ``n - 1`` was committed (a run starts after the committed checkpoint); ``n``
    for a marker ``committed/<n>.json``; and 1 once :data:`FIRST_COMMIT` exists.
    """
    proven = max((number for number, *_ in _all_map_files(storage, replay_id)), default=1) - 1
    proven = max([proven, *_map_files(storage, replay_id)])
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
