"""The limit for replay: a bare aiokafka producer (idempotent, acks=all) sending the same records.

Loads every archived record of a topic from a local archive folder into memory first (not
timed), then sends them in partition and offset order with their partition, key, value,
headers and timestamp, and waits for every acknowledgement. Prints JSON: records, seconds.

    python -m bench.bare_producer BOOTSTRAP ARCHIVE_DIR SOURCE_TOPIC TARGET_TOPIC
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from aiokafka import AIOKafkaProducer

from eventvault import format as fmt
from eventvault.layout import parse_file_key


def load(root: Path, topic: str) -> list[tuple[int, int, int, bytes | None, bytes | None, list]]:  # type: ignore[type-arg]
    """(partition, offset, timestamp ms, key, value, headers) of every archived record."""
    rows = []
    for path in sorted((root / f"topic={topic}").rglob("*.parquet")):
        ref = parse_file_key(path.relative_to(root).as_posix())
        assert ref is not None
        for r in fmt.decode(path.read_bytes()).to_pylist():
            rows.append((r["partition"], r["offset"], round(r["timestamp"].timestamp() * 1000),
                         r["key"], r["value"], [(h["key"], h["value"]) for h in r["headers"]]))
    rows.sort(key=lambda r: (r[0], r[1]))
    return rows


async def send(bootstrap: str, topic: str, rows: list) -> float:  # type: ignore[type-arg]
    """Send ``rows``; seconds from producer start to the last acknowledgement."""
    started = time.monotonic()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True,
                                acks="all", linger_ms=5, max_batch_size=1 << 20,
                                max_request_size=1 << 20)
    await producer.start()
    try:
        pending = []
        for partition, _, ts, key, value, headers in rows:
            pending.append(await producer.send(topic, value, key=key, partition=partition,
                                               timestamp_ms=ts, headers=headers))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.monotonic() - started


def main() -> None:
    """Command line entry."""
    bootstrap, root, source, target = sys.argv[1:5]
    rows = load(Path(root), source)
    seconds = asyncio.run(send(bootstrap, target, rows))
    print(json.dumps({"records": len(rows), "seconds": round(seconds, 3)}))


if __name__ == "__main__":
    main()
