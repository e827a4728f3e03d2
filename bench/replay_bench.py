"""Benchmark: `eventvault replay` from the S3 server against a bare aiokafka producer.

One run: start a real broker and the moto S3 server; write N realistic ~1 KB JSON events
(8 partitions, 6 hours) with the archiver's own writer (one file per partition and hour, as
bench/query_bench.py does), upload the files through eventvault's S3 storage; then in turn
run the bare idempotent producer (acks=all, bench/bare_producer.py), `eventvault replay`
from S3 into a second topic, and the bare producer again, each as its own process (peak RSS
from wait4). Reports records/s, the ratio replay / bare, and peak memory.

    .venv/bin/python -m bench.replay_bench [--events 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import boto3
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.archive_bench import local_stack, run
from bench.query_bench import TOPIC, _write_hours
from eventvault.settings import StorageSettings
from eventvault.storage.s3 import S3Storage


def archive_on_s3(tmp: Path, endpoint: str, events: int, hours: int, partitions: int,
                  versioned: bool = False) -> tuple[Path, list[Path], int]:
    """Write ``events`` over ``hours`` (two processes) into ``tmp/archive``, upload them to
    ``s3://bench/archive`` through eventvault's S3 storage; (root, files, events written)."""
    root, per_hour = tmp / "archive", events // hours
    halves = [range(0, hours // 2), range(hours // 2, hours)]
    with ProcessPoolExecutor(2) as pool:
        list(pool.map(_write_hours, [root, root], [None, None], halves, [per_hour] * 2,
                      [partitions] * 2))
    client = boto3.client("s3", endpoint_url=endpoint)
    client.create_bucket(Bucket="bench")
    if versioned:
        client.put_bucket_versioning(Bucket="bench",
                                     VersioningConfiguration={"Status": "Enabled"})
    store = S3Storage("bench", "archive",
                      StorageSettings(url="s3://bench/archive", endpoint_url=endpoint))
    files = sorted(root.rglob("*.parquet"))
    for path in files:
        store.put(path.relative_to(root).as_posix(), path.read_bytes())
    return root, files, per_hour * hours


async def _topics(bootstrap: str, names: list[str], partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, partitions, 1, topic_configs={
            "retention.ms": "-1"}) for n in names])
    finally:
        await admin.close()


def main() -> None:
    """Command line entry: set up, measure, print a JSON report."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--hours", type=int, default=6)
    args = parser.parse_args()
    with local_stack("eventvault-replay-bench-") as (tmp, broker, s3):
        root, _, n = archive_on_s3(tmp, s3.endpoint_url, args.events, args.hours,
                                   args.partitions)
        asyncio.run(_topics(broker.bootstrap, ["bare.1", "bare.2", "replayed"],
                            args.partitions))
        bare = [sys.executable, "-m", "bench.bare_producer", broker.bootstrap, str(root), TOPIC]
        out1, _, rss1 = run([*bare, "bare.1"])
        env = {"EVENTVAULT_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap,
               "EVENTVAULT_STORAGE__URL": "s3://bench/archive",
               "EVENTVAULT_STORAGE__ENDPOINT_URL": s3.endpoint_url}
        rep_out, rep_wall, rep_rss = run([sys.executable, "-m", "eventvault", "--log-level",
                                          "WARNING", "replay", "--topic", TOPIC, "--target",
                                          "replayed", "--output", "json"], env)
        out2, _, rss2 = run([*bare, "bare.2"])
        report = json.loads(rep_out)
        assert report["records"] == n, report["records"]
        bare_s = [json.loads(o)["seconds"] for o in (out1, out2)]
        assert all(json.loads(o)["records"] == n for o in (out1, out2))
        replay_s = report["this_run"]["seconds"]
        mean_bare = sum(bare_s) / 2
        print(json.dumps({
            "events": n, "partitions": args.partitions,
            "bare_producer_records_per_s": round(n / mean_bare),
            "bare_producer_seconds": bare_s,
            "bare_producer_peak_rss_mib": round(max(rss1, rss2) / 2**20),
            "replay_records_per_s": round(n / replay_s),
            "replay_seconds": replay_s, "replay_wall_seconds": round(rep_wall, 1),
            "replay_vs_bare": round(mean_bare / replay_s, 3),
            "replay_peak_rss_mib": round(rep_rss / 2**20),
            "transactions": report["transactions"],
        }, indent=2))


if __name__ == "__main__":
    main()
