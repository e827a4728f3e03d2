"""Benchmark: DuckDB over the partitioned archive against one well-sorted Parquet file.

One run. N realistic ~1 KB JSON events (infra.sample_events) spread evenly over H hours and P
partitions are written twice, by two processes that each generate half of the hours:

- into an archive, with the archiver's own writer
  (``eventvault.archiver.encoder.write_file``): one file per (partition, hour), which is what
  ``eventvault archive`` writes at this rate (see bench/RESULTS.md), in the Hive layout, zstd;
- into one Parquet file with the same columns, sorted by timestamp, zstd at the same level,
  131,072-row groups with statistics: the best case for a single file.

Kafka is not involved: the benchmark is about reading. Then each query runs R times on each
side, alternating, and the report gives medians and the ratio archive / single file:

- ``hour``: count and sum of order totals per event type within one hour, filtered on
  ``timestamp`` only (eventvault's rewrite adds the ``date``/``hour`` bounds);
- ``hour-by-partition-columns``: the same with ``date``/``hour`` written by hand;
- ``key``: every record of one key within one day (a point lookup).

    .venv/bin/python -m bench.query_bench [--events 5000000] [--hours 168] [--partitions 8]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from eventvault import format as fmt
from eventvault.archiver.batching import Roll
from eventvault.archiver.encoder import write_file
from eventvault.progress import Cut
from eventvault.query import engine, timeprune
from eventvault.settings import StorageSettings
from eventvault.storage.local import LocalStorage
from eventvault.times import EPOCH, timestamp_us
from infra.sample_events import events

TOPIC = "shop.orders"
START = datetime(2026, 10, 1, tzinfo=UTC)
HEADERS = (("content-type", b"application/json"),)


def _write_hours(root: Path, part: Path | None, hours: range, per_hour: int,
                 partitions: int) -> int:
    """Write ``hours`` into the archive and their rows, in time order, into ``part`` (if any).

    Returns the bytes of keys and values written.
    """
    storage = LocalStorage(root)
    total = 0
    with contextlib.ExitStack() as stack:
        single = part and stack.enter_context(pq.ParquetWriter(
            part, fmt.SCHEMA, compression="zstd", compression_level=1))
        for h in hours:
            cols = {p: fmt.Columns(p) for p in range(partitions)}
            stream = events(per_hour, seed=h, start=START + timedelta(hours=h), hours=1)
            for j, (key, value, at) in enumerate(stream):
                i = h * per_hour + j
                c = cols[i % partitions]
                c.append(i // partitions, timestamp_us(int(at.timestamp() * 1000)),
                         "CreateTime", key, value, HEADERS)
                total += len(key) + len(value)
            hour = int((START - EPOCH).total_seconds()) // 3600 + h
            for p, c in cols.items():
                write_file(storage, Roll(TOPIC, p, Cut(c.offsets[0], c.offsets[-1], hour), c,
                                         rebuilt=False), 1)
            if single:
                table = pa.concat_tables(fmt.to_table(c) for c in cols.values())
                single.write_table(table.sort_by([("timestamp", "ascending"),
                                                  ("partition", "ascending")]))
    return total


def _merge(parts: list[Path], target: Path) -> None:
    """One file from time-ordered parts, in 131,072-row groups (as the archive's files)."""
    with pq.ParquetWriter(target, fmt.SCHEMA, compression="zstd", compression_level=1,
                          use_dictionary=["timestamp_type", "headers.list.element.key"],
                          data_page_size=1 << 20, write_statistics=True) as out:
        buffer: list[pa.RecordBatch] = []
        rows = 0
        for part in parts:
            for batch in pq.ParquetFile(part).iter_batches(batch_size=32_768):
                buffer.append(batch)
                rows += batch.num_rows
                if rows >= 131_072:
                    out.write_table(pa.Table.from_batches(buffer), row_group_size=131_072)
                    buffer, rows = [], 0
        if buffer:
            out.write_table(pa.Table.from_batches(buffer), row_group_size=131_072)


def build(workdir: Path, n: int, hours: int, partitions: int) -> tuple[Path, Path, int]:
    """Write the archive and the single file; return their paths and raw key+value bytes."""
    root, per_hour = workdir / "archive", n // hours
    halves = [range(0, hours // 2), range(hours // 2, hours)]
    parts = [workdir / f"part-{i}.parquet" for i in range(2)]
    with ProcessPoolExecutor(2) as pool:
        raw = sum(pool.map(_write_hours, [root, root], parts, halves, [per_hour] * 2,
                           [partitions] * 2))
    single = workdir / "single.parquet"
    _merge(parts, single)
    for part in parts:
        part.unlink()
    return root, single, raw


def queries(hours: int, key: bytes) -> dict[str, tuple[str, str, str]]:
    """Name -> (WHERE on the archive, WHERE on the file, SELECT with ``{src}``, ``{where}``)."""
    hour = START + timedelta(hours=hours // 2 + 5)
    day = START + timedelta(days=(hours // 24) // 2)
    iso = "%Y-%m-%d %H:%M:%S"
    agg = ("SELECT json_extract_string(decode(value), '$.type') AS type, count(*) AS n, "
           "sum(CAST(json_extract_string(decode(value), '$.order.total.amount') "
           "AS DECIMAL(18, 2))) AS total FROM {src} WHERE {where} GROUP BY ALL ORDER BY ALL")
    in_hour = (f"timestamp >= '{hour:{iso}}' AND timestamp < "
               f"'{hour + timedelta(hours=1):{iso}}'")
    by_key = (f"key = from_hex('{key.hex()}') AND timestamp >= '{day:{iso}}' AND "
              f"timestamp < '{day + timedelta(days=1):{iso}}'")
    return {
        "hour": (in_hour, in_hour, agg),
        "hour-by-partition-columns": (
            f"date = DATE '{hour:%Y-%m-%d}' AND hour = {hour.hour}", in_hour, agg),
        "key": (by_key, by_key,
                'SELECT partition, "offset", epoch_us(timestamp), octet_length(value) FROM {src} '
                'WHERE {where} ORDER BY ALL'),
    }


def _timed(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[float, list[tuple[object, ...]]]:
    started = time.perf_counter()
    rows = con.execute(sql).fetchall()
    return time.perf_counter() - started, rows


def _files(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    plan = con.execute(f"EXPLAIN ANALYZE {sql}").fetchall()[0][1]
    return sum(int(n) for n in re.findall(r"Total Files Read:\s*(\d+)", plan))


def measure(root: Path, single: Path, hours: int, repeat: int) -> dict[str, dict[str, float]]:
    """Median seconds per query on both sides, the ratio, and files read by the archive."""
    archive = engine.connect(StorageSettings(url=str(root)), [TOPIC])
    views = timeprune.views_for([TOPIC], lambda _: True)
    plain = duckdb.connect()
    plain.execute("SET TimeZone = 'UTC'")
    # a key that occurs within the chosen day: the first record of its middle hour
    middle = START + timedelta(days=(hours // 24) // 2, hours=12)
    row = plain.execute(f"SELECT key FROM read_parquet('{single}') WHERE timestamp >= "
                        f"'{middle:%Y-%m-%d %H:%M:%S}' LIMIT 1").fetchone()
    assert row is not None
    out = {}
    for name, (where, where_single, template) in queries(hours, row[0]).items():
        on_archive = engine.pruned(archive, template.format(src=f'"{TOPIC}"', where=where),
                                  views)
        on_single = template.format(src=f"read_parquet('{single}')", where=where_single)
        times: dict[str, list[float]] = {"archive": [], "single": []}
        for _ in range(repeat):
            t_archive, rows_archive = _timed(archive, on_archive)
            t_single, rows_single = _timed(plain, on_single)
            assert rows_archive == rows_single, (name, rows_archive[:3], rows_single[:3])
            times["archive"].append(t_archive)
            times["single"].append(t_single)
        med = {side: statistics.median(ts) for side, ts in times.items()}
        out[name] = {"archive_s": round(med["archive"], 4), "single_s": round(med["single"], 4),
                     "ratio": round(med["archive"] / med["single"], 2),
                     "rows": len(rows_archive), "archive_files_read": _files(archive, on_archive)}
    return out


def main() -> None:
    """Command line entry: build, measure, print a JSON report."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=5_000_000)
    parser.add_argument("--hours", type=int, default=168)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--keep", type=Path, help="build into (or reuse) this folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ev-query-bench-") as tmp:
        started = time.monotonic()
        workdir = args.keep or Path(tmp)
        if args.keep and (workdir / "single.parquet").exists():
            root, single, raw = workdir / "archive", workdir / "single.parquet", 0
        else:
            workdir.mkdir(parents=True, exist_ok=True)
            root, single, raw = build(workdir, args.events, args.hours, args.partitions)
        files = sorted(root.rglob("*.parquet"))
        report = {
            "events": args.events // args.hours * args.hours, "hours": args.hours,
            "partitions": args.partitions, "raw_bytes": raw,
            "archive_files": len(files), "archive_bytes": sum(f.stat().st_size for f in files),
            "single_file_bytes": single.stat().st_size,
            "build_s": round(time.monotonic() - started, 1), "duckdb": duckdb.__version__,
            "queries": measure(root, single, args.hours, args.repeat),
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
