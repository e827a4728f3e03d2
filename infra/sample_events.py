r"""Realistic business events (~1 KB JSON orders and payments) for the demo and the benchmarks.

Not random bytes: nested objects, UUIDs, customer and product ids drawn from finite
populations, amounts, currencies, ISO timestamps and free-text fields, as an order service
would emit them. Deterministic for a given seed.

    python -m infra.sample_events --bootstrap 127.0.0.1:9092 --topic shop.orders \\
        --count 10000 --partitions 4 [--hours 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

_TYPES = ["OrderPlaced", "OrderPaid", "PaymentFailed", "OrderShipped", "OrderCancelled"]
_PRODUCTS = [f"SKU-{i:05d}" for i in range(2000)]
_CITIES = ["Berlin", "Lisbon", "Austin", "Osaka", "Nairobi", "Toronto", "Lyon", "Porto"]
_NAMES = ["Ada", "Grace", "Linus", "Margaret", "Ken", "Barbara", "Edsger", "Frances", "Alan"]
_AGENTS = ["Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36",
           "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 Mobile",
           "ShopApp/7.12.0 (Android 15; Pixel 9)"]
_WORDS = ("fast delivery gift wrap leave at door fragile handle with care weekend call "
          "before arrival back entrance office hours").split()


def events(count: int, seed: int = 42, start: datetime | None = None,
           hours: float = 2.0) -> Iterator[tuple[bytes, bytes, datetime]]:
    """Yield ``count`` (key, value, event time) triples spread over ``hours``."""
    rng = random.Random(seed)
    start = start or datetime(2026, 11, 1, tzinfo=UTC)
    step = timedelta(hours=hours) / max(count, 1)
    for i in range(count):
        at = start + step * i
        order = rng.randrange(10_000_000)
        customer = rng.randrange(200_000)
        name = rng.choice(_NAMES)
        lines: list[dict[str, Any]] = [{
            "sku": (sku := rng.choice(_PRODUCTS)), "name": f"Product {sku[4:]} {rng.choice(_WORDS)}",
            "qty": rng.randint(1, 5),
            "unit_price": {"amount": f"{rng.uniform(1, 500):.2f}", "currency": "EUR"},
        } for _ in range(rng.randint(1, 4))]
        body = {
            "event_id": str(uuid.UUID(int=rng.getrandbits(128))),
            "type": rng.choices(_TYPES, [50, 30, 5, 12, 3])[0],
            "occurred_at": at.isoformat().replace("+00:00", "Z"),
            "order": {
                "id": order,
                "customer": {"id": f"cus_{customer:07d}", "name": f"{name} {customer % 97}",
                             "email": f"{name.lower()}.{customer}@example.com",
                             "tier": rng.choice(["basic", "plus", "business"]),
                             "since": f"20{rng.randint(15, 26)}-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}"},
                "lines": lines,
                "total": {"amount": f"{sum(float(x['unit_price']['amount']) * x['qty'] for x in lines):.2f}",
                          "currency": "EUR"},
                "shipping": {"city": rng.choice(_CITIES), "postcode": f"{rng.randrange(99999):05d}",
                             "method": rng.choice(["standard", "express", "pickup"])},
                "note": " ".join(rng.choices(_WORDS, k=rng.randint(0, 12))),
                "payment": {"method": rng.choice(["card", "paypal", "sepa", "klarna"]),
                            "psp_reference": f"psp_{rng.getrandbits(80):020x}",
                            "card_last4": f"{rng.randrange(10_000):04d}", "attempt": rng.randint(1, 3)},
            },
            "device": {"user_agent": rng.choice(_AGENTS),
                       "ip": f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}",
                       "session_id": str(uuid.UUID(int=rng.getrandbits(128)))},
            "meta": {"source": "order-service", "version": 3, "trace_id": f"{rng.getrandbits(64):016x}",
                     "region": rng.choice(["eu-west-1", "us-east-1", "ap-northeast-1"])},
        }
        value = json.dumps(body, separators=(",", ":")).encode()
        yield f"order-{order}".encode(), value, at


async def produce(bootstrap: str, topic: str, count: int, partitions: int, hours: float = 2.0,
                  seed: int = 42) -> int:
    """Create ``topic`` if needed and produce ``count`` events; return bytes of key+value."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1,
                                            topic_configs={"retention.ms": "-1"})])
    except TopicAlreadyExistsError:
        pass
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20,
                                max_batch_size=512 * 1024, compression_type="lz4",
                                enable_idempotence=True)
    await producer.start()
    total = 0
    try:
        pending = []
        for i, (key, value, at) in enumerate(events(count, seed, hours=hours)):
            pending.append(await producer.send(topic, value, key=key, partition=i % partitions,
                                               timestamp_ms=int(at.timestamp() * 1000),
                                               headers=[("content-type", b"application/json")]))
            total += len(key) + len(value)
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return total


def main(argv: list[str] | None = None) -> int:
    """Command line entry."""
    p = argparse.ArgumentParser(prog="python -m infra.sample_events")
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--count", type=int, default=10_000)
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--hours", type=float, default=2.0)
    args = p.parse_args(argv)
    size = asyncio.run(produce(args.bootstrap, args.topic, args.count, args.partitions,
                               args.hours))
    print(f"produced {args.count} events ({size} bytes of keys and values) to {args.topic}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
