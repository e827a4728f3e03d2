"""Benchmark: `eventvault archive --once` to the S3 server against a bare aiokafka consumer.

One run: start a real broker and the moto S3 server, produce N realistic ~1 KB JSON events
across 8 partitions, then in turn run the bare consumer, the archiver, and the bare consumer
again, each as its own process (peak RSS from wait4). Reports records/s and the ratio to the
bare consumer, stored bytes / (key + value bytes), peak RSS, and files per (partition, hour).

    .venv/bin/python -m bench.archive_bench [--events 1000000] [--partitions 8] [--hours 6]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3

from eventvault.layout import parse_file_key
from infra import kafka_local, s3_local, sample_events

REPO = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def local_stack(prefix: str) -> Iterator[tuple[Path, kafka_local.Broker, s3_local.S3Server]]:
    """A temporary folder, a Kafka broker and the moto S3 server, stopped on exit."""
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                      AWS_DEFAULT_REGION="us-east-1")
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    broker = kafka_local.start(tmp / "kafka")
    s3 = s3_local.start(tmp / "moto.log")
    try:
        yield tmp, broker, s3
    finally:
        broker.stop()
        s3.stop()


def run(cmd: list[str], env: dict[str, str] | None = None) -> tuple[str, float, int]:
    """Run a process; return its stdout, wall seconds and peak RSS in bytes."""
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env={**os.environ, **(env or {})},
                            cwd=REPO)
    assert proc.stdout is not None
    out = proc.stdout.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd} failed with {proc.returncode}")
    return out, time.monotonic() - started, usage.ru_maxrss * 1024


def _objects(storage: str, client: Any, local: Path) -> list[tuple[str, int]]:
    """(key, size) of every archive file."""
    if storage == "local":
        return [(p.relative_to(local).as_posix(), p.stat().st_size)
                for p in local.rglob("*.parquet")]
    return [(obj["Key"].removeprefix("archive/"), obj["Size"])
            for page in client.get_paginator("list_objects_v2").paginate(
                Bucket="bench-archive", Prefix="archive/")
            for obj in page.get("Contents", [])]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--hours", type=float, default=6)
    parser.add_argument("--storage", choices=["s3", "local"], default="s3",
                        help="the moto S3 server (default) or a local directory")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an archiver setting, e.g. --set ARCHIVE__UPLOAD_CONCURRENCY=2")
    args = parser.parse_args()
    with local_stack("eventvault-bench-") as (tmp, broker, s3):
        topic = "bench.orders"
        t = time.monotonic()
        raw = asyncio.run(sample_events.produce(broker.bootstrap, topic, args.events,
                                                args.partitions, args.hours))
        print(f"produced {args.events} events, {raw} key+value bytes, "
              f"in {time.monotonic() - t:.0f}s", file=sys.stderr)
        client = boto3.client("s3", endpoint_url=s3.endpoint_url)
        client.create_bucket(Bucket="bench-archive")
        bare_cmd = [sys.executable, "-m", "bench.bare_consumer", broker.bootstrap, topic,
                    str(args.partitions)]
        out1, bare1_s, bare1_rss = run(bare_cmd)
        env = {"EVENTVAULT_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap,
               "EVENTVAULT_STORAGE__URL": "s3://bench-archive/archive",
               "EVENTVAULT_STORAGE__ENDPOINT_URL": s3.endpoint_url,
               "EVENTVAULT_ARCHIVE__TOPICS": json.dumps([topic]),
               "EVENTVAULT_ARCHIVE__GROUP_ID": "bench"}
        if args.storage == "local":
            env["EVENTVAULT_STORAGE__URL"] = f"file://{tmp}/archive"
        env.update(("EVENTVAULT_" + k, v) for k, v in (s.split("=", 1) for s in args.set))
        arch_out, arch_s, arch_rss = run([sys.executable, "-m", "eventvault", "--log-level",
                                          "WARNING", "archive", "--once", "--output", "json"],
                                         env)
        _, bare2_s, bare2_rss = run(bare_cmd)
        summary = json.loads(arch_out)
        assert summary["records"] == args.events, summary
        assert json.loads(out1)["records"] == args.events
        stored = 0
        files: Counter[tuple[int, int | None]] = Counter()
        for key, size in _objects(args.storage, client, tmp / "archive"):
            stored += size
            ref = parse_file_key(key)
            assert ref is not None
            files[(ref.partition, ref.hour)] += 1
        bare_s = (bare1_s + bare2_s) / 2
        n = args.events
        print(json.dumps({
            "events": n, "partitions": args.partitions, "key_value_bytes": raw,
            "storage": args.storage, "settings": args.set,
            "bare_consumer_records_per_s": round(n / bare_s),
            "bare_consumer_seconds": [round(bare1_s, 1), round(bare2_s, 1)],
            "bare_consumer_peak_rss_mib": round(max(bare1_rss, bare2_rss) / 2**20),
            "archiver_records_per_s": round(n / arch_s),
            "archiver_seconds": round(arch_s, 1),
            "archiver_vs_bare": round(bare_s / arch_s, 3),
            "stored_bytes": stored, "stored_ratio": round(stored / raw, 4),
            "archiver_peak_rss_mib": round(arch_rss / 2**20),
            "archiver_peak_buffered_mib": round(summary["peak_buffered_bytes"] / 2**20),
            "files": sum(files.values()),
            "partition_hours": len(files),
            "files_per_partition_hour": {"max": max(files.values()),
                                         "mean": round(sum(files.values()) / len(files), 2)},
        }, indent=2))


if __name__ == "__main__":
    main()
