"""Helpers for erasure and retention tests: customer events, settings, reading every version."""

from __future__ import annotations

import io
import json
import re
from collections import Counter
from typing import Any

import boto3
import pyarrow.parquet as pq

from eventvault import format as fmt
from eventvault.layout import parse_file_key
from tests.kafkautil import Rec

HMAC_KEY = "test-hmac-key-not-a-secret"
BASE_MS = 1_767_225_600_000  # 2026-01-01T00:00Z
HOUR_MS = 3_600_000


def customer(n: int) -> str:
    return f"cus_{n:04d}"


def order_event(i: int, who: int) -> bytes:
    return json.dumps({"type": "OrderPlaced", "n": i, "order": {
        "customer": {"id": customer(who), "email": f"{customer(who)}@example.com",
                     "name": f"Name {who}"}, "total": i * 3}}).encode()


def customer_records(count: int, customers: int, partitions: int, hours: int = 3,
                     first: int = 0) -> list[Rec]:
    """``count`` order events over ``hours`` hours, customer ``i % customers`` for event i."""
    return [Rec(i % partitions, f"order-{i}".encode(), order_event(i, i % customers),
                (("source", b"shop"),), BASE_MS + (i * hours * HOUR_MS) // count)
            for i in range(first, first + count)]


def erasure_env(topic: str, action: str = "drop", **extra: str) -> dict[str, str]:
    subject = {"location": "value", "field": "order.customer.id", "action": action}
    if action == "redact":
        subject["redact"] = ["order.customer.email", "order.customer.name"]  # type: ignore[assignment]
    return {"EVENTVAULT_ERASURE__HMAC_KEY": HMAC_KEY,
            "EVENTVAULT_ERASURE__TOPICS": json.dumps({topic: subject}), **extra}


def every_version(endpoint: str, bucket: str, prefix: str = "") -> list[dict[str, Any]]:
    """Every stored version of every archive file: key, version id, latest, rows."""
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    found = []
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket,
                                                                      Prefix=prefix):
        for version in page.get("Versions", []):
            key = version["Key"][len(prefix):]
            if parse_file_key(key) is None:
                continue
            body = client.get_object(Bucket=bucket, Key=version["Key"],
                                     VersionId=version["VersionId"])["Body"].read()
            found.append({"key": key, "version": version["VersionId"],
                          "latest": version["IsLatest"], "rows": fmt.decode(body).to_pylist(),
                          "raw": body})
    return found


def mentions(rows: list[dict[str, Any]], subject: str) -> list[tuple[int, int]]:
    """(partition, offset) of rows that contain the subject id as a token anywhere."""
    pattern = re.compile(rb"(?<![A-Za-z0-9_])" + re.escape(subject.encode()) + rb"(?![A-Za-z0-9_])")
    hits = []
    for row in rows:
        parts = [row["key"], row["value"], *(h["value"] for h in row["headers"])]
        if any(p is not None and pattern.search(p) for p in parts):
            hits.append((row["partition"], row["offset"]))
    return hits


def offsets(rows: list[dict[str, Any]]) -> Counter[tuple[int, int]]:
    return Counter((r["partition"], r["offset"]) for r in rows)


def parquet_rows(data: bytes) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = pq.read_table(io.BytesIO(data)).to_pylist()
    return rows
