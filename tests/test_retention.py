"""`eventvault retention` on a versioned bucket: expired hours go with every version; hours the
archiver may still write into wait; topics without a limit stay."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import boto3
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from eventvault.layout import hour_dir
from eventvault.progress import Cut, Progress, encode_progress, spec_hash
from tests.cliutil import run_cli
from tests.kafkautil import Rec, archive_once, create_topic, produce, settings

pytestmark = pytest.mark.integration
OLD_A = 438_288  # 2020-01-01T00:00Z, in hours since the epoch
OLD_B = OLD_A + 5


async def _commit_cut(bootstrap: str, group: str, topic: str, partition: int, offset: int,
                      cut: Cut) -> None:
    """Commit a progress with a recorded cut, as an archiver would have before a crash."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        metadata = encode_progress(Progress(offset, (cut,), spec_hash("ts")))
        await consumer.commit({tp: OffsetAndMetadata(offset, metadata)})
    finally:
        await consumer.stop()


def _versions(endpoint: str, bucket: str, prefix: str) -> list[str]:
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    pages = client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix)
    return [v["Key"] for page in pages for v in page.get("Versions", []) + page.get(
        "DeleteMarkers", [])]


def test_retention_deletes_expired_hours_with_every_version(
        kafka_bootstrap: str, s3_endpoint: str, versioned_bucket: str, tmp_path: Path) -> None:
    topic = f"ret.orders-{uuid.uuid4().hex[:6]}"
    kept = f"ret.forever-{uuid.uuid4().hex[:6]}"
    recent = int(time.time() * 1000) - 3_600_000
    for name in (topic, kept):
        create_topic(kafka_bootstrap, name, partitions=2)
        produce(kafka_bootstrap, name, [
            Rec(i % 2, b"k", b"v", (), ts) for i, ts in enumerate(
                [OLD_A * 3_600_000 + j for j in range(10)]
                + [OLD_B * 3_600_000 + j for j in range(10)] + [recent + j for j in range(10)])])
    url = f"s3://{versioned_bucket}/arch"
    for name in (topic, kept):
        archive_once(settings(kafka_bootstrap, url, [name], f"g-{name}", endpoint=s3_endpoint))
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    old_a = [k for k in _versions(s3_endpoint, versioned_bucket, "arch/")
             if k.startswith("arch/" + hour_dir(topic, OLD_A))]
    assert len(old_a) == 2
    client.put_object(Bucket=versioned_bucket, Key=old_a[0], Body=b"an overwrite: now a version")
    asyncio.run(_commit_cut(kafka_bootstrap, f"g-{topic}", topic, 1, 15,
                            Cut(15, 20, OLD_B)))
    env = {"EVENTVAULT_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
           "EVENTVAULT_STORAGE__URL": url, "EVENTVAULT_STORAGE__ENDPOINT_URL": s3_endpoint,
           "EVENTVAULT_ARCHIVE__GROUP_ID": f"g-{topic}",
           "EVENTVAULT_RETENTION__KEEP_DAYS": json.dumps({topic: 30})}
    before = sorted(_versions(s3_endpoint, versioned_bucket, "arch/topic="))

    dry = run_cli("retention", "--dry-run", "--output", "json", env=env, cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)["topics"]
    assert [(p["topic"], [(h["hour"], bool(h["waiting"])) for h in p["hours"]]) for p in plan] \
        == [(topic, [(OLD_A, False), (OLD_B, True)])]
    assert sorted(_versions(s3_endpoint, versioned_bucket, "arch/topic=")) == before

    res = run_cli("retention", env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "recorded cut of this hour" in res.stdout
    after = _versions(s3_endpoint, versioned_bucket, "arch/topic=")
    assert not [k for k in after if k.startswith("arch/" + hour_dir(topic, OLD_A))]
    assert sorted(after) == sorted(k for k in before
                                   if not k.startswith("arch/" + hour_dir(topic, OLD_A)))
    assert len([k for k in after if k.startswith(f"arch/topic={kept}/")]) == 6
    ledger = run_cli("query", "select entry, object_key, noncurrent_versions_deleted, verified "
                     "from maintenance_ledger order by entry", "--format", "json", env=env,
                     cwd=tmp_path)
    assert ledger.returncode == 0, ledger.stderr
    rows = [json.loads(line) for line in ledger.stdout.splitlines()]
    assert [(r["entry"], r["object_key"]) for r in rows] == [
        ("deleted", hour_dir(topic, OLD_A)), ("waiting", hour_dir(topic, OLD_B))]
    assert rows[0]["noncurrent_versions_deleted"] == 3
    assert rows[0]["verified"] is True
