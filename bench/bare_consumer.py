"""The limit to compare against: a bare aiokafka consumer reading a topic to its end offsets.

No group, no processing beyond touching each record's key and value lengths.
    python -m bench.bare_consumer BOOTSTRAP TOPIC PARTITIONS
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from aiokafka import AIOKafkaConsumer, TopicPartition


async def consume(bootstrap: str, topic: str, partitions: int) -> dict[str, float]:
    started = time.monotonic()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                fetch_max_bytes=50 << 20, max_partition_fetch_bytes=8 << 20,
                                fetch_max_wait_ms=200)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        records = size = 0
        remaining = {tp for tp in tps if ends[tp] > 0}
        while remaining:
            batch = await consumer.getmany(timeout_ms=200, max_records=20_000)
            for tp, recs in batch.items():
                records += len(recs)
                size += sum(len(r.value or b"") + len(r.key or b"") for r in recs)
                if recs and recs[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    return {"records": records, "bytes": size, "seconds": time.monotonic() - started}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(consume(sys.argv[1], sys.argv[2], int(sys.argv[3])))))
