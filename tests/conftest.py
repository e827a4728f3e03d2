"""Session fixtures: the real Kafka broker and the moto S3 server, started once per run."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from infra import kafka_local, s3_local

S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
          "AWS_DEFAULT_REGION": "us-east-1"}
# Dummy credentials for the moto server, set before any S3 client is built.
for _k, _v in S3_ENV.items():
    os.environ.setdefault(_k, _v)


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap servers of a fresh single-node KRaft broker on 127.0.0.1."""
    broker = kafka_local.start(tmp_path_factory.mktemp("kafka"))
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Endpoint URL of a moto S3 server on 127.0.0.1 (credentials are dummies)."""
    server = s3_local.start(tmp_path_factory.mktemp("s3") / "moto.log")
    try:
        yield server.endpoint_url
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    """A new, empty bucket on the S3 server."""
    name = f"ev-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(
        Bucket=name)
    return name


@pytest.fixture
def versioned_bucket(s3_endpoint: str) -> str:
    """A new, empty bucket with versioning on: deleted and overwritten objects stay as
    noncurrent versions, as on a real archive bucket (every maintenance test uses one)."""
    name = f"ev-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=name)
    client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


@pytest.fixture
def topic_name(request: pytest.FixtureRequest) -> str:
    """A unique, legal topic name for one test (with a dot, a dash and an underscore)."""
    base = request.node.name.replace("[", "_").replace("]", "").replace("-", "_")[:80]
    return f"t.{base}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def archive_dir(tmp_path: Path) -> Path:
    """A local archive directory."""
    return tmp_path / "archive"
