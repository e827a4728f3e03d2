"""Benchmark: erasing one subject from a large archive on the S3 server (versioning on).

One run: start a broker and the moto S3 server; write N realistic ~1 KB JSON order events
(infra.sample_events: 200,000 customers) over H hours and P partitions with the archiver's own
writer (one file per partition and hour), upload them through eventvault's S3 storage to a
versioned bucket; then, each as its own process (wall time and peak RSS from wait4):

1. ``eventvault erase`` of one subject on the archive without an index: every file is scanned
   once (its value column, where the customer id is) and indexed;
2. ``eventvault erase`` of another subject, present in k files: it reads only the indexes.

Reports for each: bytes read to find the files against the archive's size, the k files' size
and the bytes rewritten, and wall time; each run's own verification (every version of each
rewritten file) must find the subject nowhere.

    .venv/bin/python -m bench.erasure_bench [--events 2000000] [--hours 28] [--partitions 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

import pyarrow.parquet as pq

from bench.archive_bench import local_stack, run
from bench.query_bench import TOPIC
from bench.replay_bench import _topics, archive_on_s3

SUBJECT = {"location": "value", "field": "order.customer.id", "action": "redact",
           "redact": ["order.customer.email", "order.customer.name", "device.ip"]}


def _customer_of_first_record(path: Any) -> str:
    value = pq.read_table(path, columns=["value"]).column("value")[0].as_py()
    return str(json.loads(value)["order"]["customer"]["id"])


def _erase(env: dict[str, str], request_id: str, subject: str) -> dict[str, Any]:
    out, wall, rss = run([sys.executable, "-m", "eventvault", "--log-level", "WARNING", "erase",
                          "--request-id", request_id, "--subject", subject, "--output", "json"],
                         env)
    summary: dict[str, Any] = json.loads(out)
    topic = summary["topics"][0]
    changed = [f for f in summary["files"] if f["redacted"] or f["dropped"]]
    archive = topic["archive_bytes"]
    found_bytes = topic["index_bytes_read"] + topic["scan_bytes_read"]
    k_bytes = sum(f["bytes_before"] for f in changed)
    rewritten = sum(f["bytes_after"] for f in changed)
    return {"files": topic["files"], "scanned": topic["scanned"], "archive_bytes": archive,
            "bytes_read_to_find": found_bytes,
            "read_share_of_archive": round(found_bytes / archive, 4),
            "files_read_after_the_index": len(summary["files"]),
            "k_files_with_subject": len(changed),
            "records": sum(f["redacted"] + f["dropped"] for f in changed),
            "k_files_bytes": k_bytes, "bytes_rewritten": rewritten,
            "rewritten_vs_k_files": round(rewritten / k_bytes, 3) if k_bytes else None,
            "wall_seconds": round(wall, 1), "peak_rss_mib": round(rss / 2**20),
            "problems": summary["problems"]}


def main() -> None:
    """Command line entry: set up, measure, print a JSON report."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--hours", type=int, default=28)
    args = parser.parse_args()
    with local_stack("eventvault-erasure-bench-") as (tmp, broker, s3):
        _, files, events = archive_on_s3(tmp, s3.endpoint_url, args.events, args.hours,
                                         args.partitions, versioned=True)
        asyncio.run(_topics(broker.bootstrap, [TOPIC], args.partitions))
        env = {"EVENTVAULT_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap,
               "EVENTVAULT_STORAGE__URL": "s3://bench/archive",
               "EVENTVAULT_STORAGE__ENDPOINT_URL": s3.endpoint_url,
               "EVENTVAULT_ERASURE__HMAC_KEY": "bench-key",
               "EVENTVAULT_ERASURE__TOPICS": json.dumps({TOPIC: SUBJECT})}
        first = _erase(env, "BENCH-1", _customer_of_first_record(files[0]))
        second = _erase(env, "BENCH-2", _customer_of_first_record(files[len(files) // 2]))
        assert not first["problems"], first
        assert not second["problems"], second
        print(json.dumps({"events": events, "archive_files": len(files),
                          "first_request_no_index": first, "second_request": second},
                         indent=2))


if __name__ == "__main__":
    main()
