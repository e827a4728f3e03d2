"""A broken S3 under `query`, `show` and `replay`: one error line, exit 3, within seconds.

Each command meets an endpoint where nothing listens, a missing bucket, no credentials at all
(no AWS_* variables, no ~/.aws, no instance metadata), an unknown AWS_PROFILE, an AWS config
file that does not parse, S3 answering 403 AccessDenied to
everything, and 403 or dropped connections only when DuckDB's httpfs reads the Parquet files
(the listing works): the last two fail inside DuckDB, not boto3.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest

from infra.kafka_local import free_port
from tests.cliutil import EVENTVAULT
from tests.faulty_s3 import FaultyS3
from tests.kafkautil import Rec, archive_once, create_topic, produce, settings

pytestmark = pytest.mark.integration

ALL_METHODS = ("GET", "HEAD", "PUT", "POST", "DELETE")


@dataclass(frozen=True)
class Archive:
    """An S3 archive of one topic on the moto server, and the Kafka broker."""

    endpoint: str
    bucket: str
    topic: str
    bootstrap: str


@pytest.fixture(scope="module")
def archive(kafka_bootstrap: str, s3_endpoint: str) -> Archive:
    bucket = f"ev-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(
        Bucket=bucket)
    topic = f"cli.s3err-{uuid.uuid4().hex[:6]}"
    create_topic(kafka_bootstrap, topic)
    produce(kafka_bootstrap, topic, [Rec(0, b"k%d" % i, b'{"n": %d}' % i,
                                         timestamp_ms=1_767_225_600_000 + i) for i in range(20)])
    archive_once(settings(kafka_bootstrap, f"s3://{bucket}", [topic], f"g-{topic}",
                          endpoint=s3_endpoint))
    return Archive(s3_endpoint, bucket, topic, kafka_bootstrap)


@pytest.fixture
def proxy(request: pytest.FixtureRequest, s3_endpoint: str) -> Iterator[FaultyS3 | None]:
    """The fault the case names, in front of the moto server (None: no proxy)."""
    faults = {"denied": (ALL_METHODS, "403", ""), "files-denied": (("GET",), "403", ".parquet"),
              "files-dropped": (("GET",), "reset-before", ".parquet")}
    if request.param not in faults:
        yield None
        return
    methods, kind, paths = faults[request.param]
    fault = FaultyS3(s3_endpoint, 1.0, methods, faults=(kind,), paths=paths).start()
    try:
        yield fault
    finally:
        fault.stop()


def _environment(case: str, archive: Archive, proxy: FaultyS3 | None,
                 home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EVENTVAULT_", "AWS_"))}
    env |= {"HOME": str(home), "AWS_CONFIG_FILE": str(home / "no-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-credentials"),
            "AWS_EC2_METADATA_DISABLED": "true", "AWS_DEFAULT_REGION": "us-east-1",
            "EVENTVAULT_KAFKA__BOOTSTRAP_SERVERS": archive.bootstrap,
            "EVENTVAULT_STORAGE__URL": f"s3://{archive.bucket}",
            "EVENTVAULT_STORAGE__ENDPOINT_URL": proxy.endpoint_url if proxy else archive.endpoint}
    if case not in ("no-credentials", "unknown-profile", "broken-aws-config"):
        env |= {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    if case == "unknown-profile":
        env["AWS_PROFILE"] = "no-such-profile"
    if case == "broken-aws-config":
        (home / "no-config").write_text("[default\naws_access_key_id = x\n")
    if case == "unreachable":
        env["EVENTVAULT_STORAGE__ENDPOINT_URL"] = f"http://127.0.0.1:{free_port()}"
    if case == "missing-bucket":
        env["EVENTVAULT_STORAGE__URL"] = f"s3://ev-missing-{uuid.uuid4().hex[:8]}"
    return env


def _arguments(command: str, topic: str) -> list[str]:
    return {"query": ["query", f'select count(*) from "{topic}"'],
            "show": ["show", topic],
            "replay": ["replay", "--topic", topic, "--target", f"{topic}.replayed",
                       "--timestamp", "now"]}[command]


CASES = ["unreachable", "missing-bucket", "no-credentials", "unknown-profile",
         "broken-aws-config", "denied", "files-denied", "files-dropped"]


@pytest.mark.parametrize("command", ["query", "show", "replay"])
@pytest.mark.parametrize(("case", "proxy"), [(c, c) for c in CASES], indirect=["proxy"])
def test_broken_s3_is_one_line_exit_3(archive: Archive, proxy: FaultyS3 | None, case: str,
                                      command: str, tmp_path: Path) -> None:
    started = time.monotonic()
    res = subprocess.run([*EVENTVAULT, *_arguments(command, archive.topic)], check=False,
                         env=_environment(case, archive, proxy, tmp_path), cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - started
    assert res.returncode == 3, res
    assert "Traceback" not in res.stderr, res.stderr
    assert "Future exception" not in res.stderr, res.stderr
    *logs, last = res.stderr.strip().splitlines()
    assert last.startswith("eventvault: error: "), res.stderr
    for line in logs:  # anything else on stderr is a JSON log line
        assert isinstance(json.loads(line), dict), res.stderr
    assert elapsed < 15, f"took {elapsed:.1f} s"
    if proxy is not None:
        assert sum(proxy.injected.values()), "the fault was never hit"
    assert res.stdout == ""
