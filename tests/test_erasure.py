"""`eventvault erase` against the real broker and the S3 server with versioning on.

Every test reads the archive afterwards, every object version included, and counts records by
(partition, offset): the subject is found nowhere, every other record is there exactly once.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import boto3
import pytest

from eventvault import format as fmt
from eventvault.layout import FileRef, file_refs
from eventvault.maintenance.erase import Erasure
from eventvault.maintenance.requests import Request
from eventvault.maintenance.subjects import keyed_hash
from eventvault.settings import StorageSettings, load_settings
from eventvault.storage import open_storage
from tests.cliutil import run_cli
from tests.erasureutil import customer, customer_records, erasure_env, every_version, mentions
from tests.kafkautil import Rec, archive_once, create_topic, produce, read_archive, settings
from tests.replayutil import replay

pytestmark = pytest.mark.integration


def _archived(bootstrap: str, url: str, endpoint: str | None, count: int = 400,
              customers: int = 25) -> tuple[str, dict[tuple[int, int], bytes | None]]:
    topic = f"pii.orders-{uuid.uuid4().hex[:6]}"
    create_topic(bootstrap, topic, partitions=2)
    produced = produce(bootstrap, topic, customer_records(count, customers, 2))
    archive_once(settings(bootstrap, url, [topic], f"g-{topic}", endpoint=endpoint,
                          max_file_records=60))
    return topic, {at: rec.value for at, rec in produced.items()}


def _env(bootstrap: str, url: str, endpoint: str | None, topic: str,
         action: str = "drop") -> dict[str, str]:
    env = {"EVENTVAULT_KAFKA__BOOTSTRAP_SERVERS": bootstrap, "EVENTVAULT_STORAGE__URL": url,
           "EVENTVAULT_ARCHIVE__GROUP_ID": f"g-{topic}", **erasure_env(topic, action)}
    if endpoint:
        env["EVENTVAULT_STORAGE__ENDPOINT_URL"] = endpoint
    return env


def test_erase_drops_a_subject_from_every_version_and_names_the_replays(
        kafka_bootstrap: str, s3_endpoint: str, versioned_bucket: str, tmp_path: Path) -> None:
    url = f"s3://{versioned_bucket}/arch"
    topic, produced = _archived(kafka_bootstrap, url, s3_endpoint)
    subject = customer(7)
    theirs = {at for at, value in produced.items() if value and subject.encode() in value}
    assert len(theirs) == 16
    target = f"copy-{topic}"
    create_topic(kafka_bootstrap, target, partitions=2)
    code, replayed, err = replay(kafka_bootstrap, url, "--topic", topic, "--target", target,
                                 "--partition", "1", cwd=tmp_path,
                                 env={"EVENTVAULT_STORAGE__ENDPOINT_URL": s3_endpoint})
    assert code == 0, err
    assert replayed is not None
    env = _env(kafka_bootstrap, url, s3_endpoint, topic)
    keys_before = sorted(v["key"] for v in every_version(s3_endpoint, versioned_bucket, "arch/"))

    dry = run_cli("erase", "--request-id", "R-1", "--subject", subject, "--dry-run", "--output",
                  "json", env=env, cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    planned = json.loads(dry.stdout)
    assert sum(f["dropped"] for f in planned["files"]) == len(theirs)
    assert sorted(v["key"] for v in every_version(s3_endpoint, versioned_bucket,
                                                  "arch/")) == keys_before
    store = open_storage(StorageSettings(url=url, endpoint_url=s3_endpoint))
    assert not list(store.list("_erasure/")), "a dry run writes nothing"

    res = run_cli("erase", "--request-id", "R-1", "--subject", subject, "--output", "json",
                  env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["problems"] == []
    assert all(f["verified"] for f in summary["files"])
    rewritten = {f["key"] for f in summary["files"] if f["dropped"]}
    assert rewritten == {f["key"] for f in planned["files"] if f["dropped"]}
    assert len(rewritten) < len(keys_before)
    versions = every_version(s3_endpoint, versioned_bucket, "arch/")
    assert sorted(v["key"] for v in versions) == keys_before, "same names, one version each"
    for version in versions:
        assert mentions(version["rows"], subject) == [], version["key"]
    rows = [r for v in versions for r in v["rows"]]
    assert sorted((r["partition"], r["offset"]) for r in rows) == sorted(set(produced) - theirs)
    assert all(r["value"] == produced[(r["partition"], r["offset"])] for r in rows)

    request = summary["requests"][0]
    assert request["records_found"] == len(theirs)
    assert request["status"] == "open"
    copied = {r["replay_id"]: r for r in request["recipients"]}
    assert set(copied) == {replayed["replay_id"]}
    assert copied[replayed["replay_id"]]["target_topic"] == target
    assert copied[replayed["replay_id"]]["records"] == sum(1 for p, _ in theirs if p == 1)

    ledger = run_cli("query", "select entry, request_id, subject_hash, rows_dropped, verified, "
                     "replay_id, topic_retention_ms from maintenance_ledger where not dry_run",
                     "--format", "json", env=env, cwd=tmp_path)
    assert ledger.returncode == 0, ledger.stderr
    entries = [json.loads(line) for line in ledger.stdout.splitlines()]
    assert subject not in ledger.stdout, "the ledger holds no subject id"
    assert sum(e["rows_dropped"] or 0 for e in entries if e["entry"] == "file") == len(theirs)
    assert {e["replay_id"] for e in entries if e["entry"] == "recipient"} == {
        replayed["replay_id"]}
    assert {e["topic_retention_ms"] for e in entries if e["entry"] == "request"} == {-1}
    stored = store.get("_erasure/requests/R-1.json").decode()
    assert subject not in stored


def test_redact_keeps_the_records_and_their_offsets(kafka_bootstrap: str,
                                                     tmp_path: Path) -> None:
    url = f"file://{tmp_path}/arch"
    topic, produced = _archived(kafka_bootstrap, url, None)
    subject = customer(3)
    env = _env(kafka_bootstrap, url, None, topic, action="redact")
    res = run_cli("erase", "--request-id", "R-2", "--subject", subject, env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "verified" in res.stdout
    rows = read_archive(open_storage(StorageSettings(url=url)))
    assert sorted((r["partition"], r["offset"]) for r in rows) == sorted(produced)
    assert mentions(rows, subject) == []
    redacted = [json.loads(r["value"]) for r in rows
                if json.loads(r["value"])["order"]["customer"]["id"] is None]
    assert len(redacted) == 16
    assert all(v["order"]["customer"] == {"id": None, "email": None, "name": None}
               for v in redacted)
    assert all(v["total"] == v["n"] * 3 for v in (json.loads(r["value"])["order"] | {
        "n": json.loads(r["value"])["n"]} for r in rows))


def test_late_records_are_erased_by_a_later_run(kafka_bootstrap: str, s3_endpoint: str,
                                                 versioned_bucket: str, tmp_path: Path) -> None:
    url = f"s3://{versioned_bucket}/arch"
    topic, _ = _archived(kafka_bootstrap, url, s3_endpoint)
    subject = customer(5)
    env = _env(kafka_bootstrap, url, s3_endpoint, topic)
    first = run_cli("erase", "--request-id", "R-3", "--subject", subject, "--output", "json",
                    env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    files_before = json.loads(first.stdout)["topics"][0]["files"]
    produce(kafka_bootstrap, topic, customer_records(100, 25, 2, first=400))
    archive_once(settings(kafka_bootstrap, url, [topic], f"g-{topic}", endpoint=s3_endpoint,
                          max_file_records=60))
    assert mentions([r for v in every_version(s3_endpoint, versioned_bucket, "arch/")
                     for r in v["rows"]], subject), "the late records were archived"
    res = run_cli("erase", "--output", "json", env=env, cwd=tmp_path)  # no new request
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["requests"][0]["request_id"] == "R-3"
    assert summary["requests"][0]["records_found"] == 4
    found = summary["topics"][0]
    assert found["files"] > files_before
    assert found["scanned"] == found["files"] - files_before, "only new files had no index"
    for version in every_version(s3_endpoint, versioned_bucket, "arch/"):
        assert mentions(version["rows"], subject) == []


def test_bad_requests_are_one_line_exit_2(tmp_path: Path) -> None:
    env = erasure_env("t", "drop", EVENTVAULT_STORAGE__URL=f"file://{tmp_path}/a")
    for args, needle in [(["--subject", "x"], "--request-id and --subject go together"),
                         (["--request-id", "a b", "--subject", "x"], "request id 'a b'"),
                         (["--requests", str(tmp_path / "none.json")], "No such file")]:
        res = run_cli("erase", *args, env=env, cwd=tmp_path)
        assert res.returncode == 2, res
        assert res.stderr.count("\n") == 1, res.stderr
        assert needle in res.stderr
    res = run_cli("erase", "--request-id", "a", "--subject", "x", cwd=tmp_path,
                  env={"EVENTVAULT_STORAGE__URL": f"file://{tmp_path}/a"})
    assert res.returncode == 2
    assert "erasure.hmac_key" in res.stderr


def test_index_lets_a_request_read_a_small_share_of_the_archive(
        kafka_bootstrap: str, s3_endpoint: str, versioned_bucket: str, tmp_path: Path) -> None:
    url = f"s3://{versioned_bucket}/arch"
    topic, _ = _archived(kafka_bootstrap, url, s3_endpoint, count=1200, customers=200)
    env = _env(kafka_bootstrap, url, s3_endpoint, topic)
    first = json.loads(run_cli("erase", "--request-id", "A", "--subject", customer(1),
                               "--output", "json", env=env, cwd=tmp_path).stdout)
    assert first["topics"][0]["scanned"] == first["topics"][0]["files"]
    second = json.loads(run_cli("erase", "--request-id", "B", "--subject", customer(2),
                                "--output", "json", env=env, cwd=tmp_path).stdout)
    found = second["topics"][0]
    assert found["scanned"] == 0
    assert found["indexed"] == found["files"]
    assert found["index_bytes_read"] < 0.05 * found["archive_bytes"]
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    names = [o["Key"] for o in client.list_objects_v2(Bucket=versioned_bucket)["Contents"]]
    assert len(file_refs(n.removeprefix("arch/") for n in names)) == found["files"]


def test_an_id_outside_its_field_keeps_failing_until_a_run_with_the_ids(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    """Redaction clears the configured fields; the id also in a free-text note is found by its
    bytes, and a later run without the ids cannot call that file clean."""
    url = f"file://{tmp_path}/arch"
    topic = f"pii.notes-{uuid.uuid4().hex[:6]}"
    create_topic(kafka_bootstrap, topic)
    records = customer_records(40, 5, 1)
    noted = records[7]  # customer 2, with the id again in a note
    value = json.loads(noted.value or b"{}") | {"note": f"call {customer(2)} back"}
    records[7] = Rec(0, noted.key, json.dumps(value).encode(), noted.headers, noted.timestamp_ms)
    produce(kafka_bootstrap, topic, records)
    archive_once(settings(kafka_bootstrap, url, [topic], f"g-{topic}"))
    env = _env(kafka_bootstrap, url, None, topic, action="redact")
    first = run_cli("erase", "--request-id", "N", "--subject", customer(2), env=env,
                    cwd=tmp_path)
    assert first.returncode == 8, first
    assert "still name a subject" in first.stderr
    again = run_cli("erase", env=env, cwd=tmp_path)
    assert again.returncode == 8, again
    assert "only a run given the ids can verify it" in again.stderr
    rows = read_archive(open_storage(StorageSettings(url=url)))
    assert len(mentions(rows, customer(2))) == 1, "only the note is left"


def _file_erasure(url: str, endpoint: str, records: int) -> tuple[Erasure, FileRef, Request]:
    """One archive file of ``records`` customer events written straight to S3, an erasure
    run over it (no Kafka: only its file step is used) and a request for customer 1."""
    store = open_storage(StorageSettings(url=url, endpoint_url=endpoint))
    cols = fmt.Columns(0)
    for i, record in enumerate(customer_records(records, 3, 1)):
        cols.append(i, 0, "CreateTime", record.key, record.value, list(record.headers))
    ref = FileRef("t.x", 490_000, 0, 0, records - 1)
    store.put(ref.key, fmt.encode(fmt.to_table(cols)))
    settings_ = load_settings(None, storage={"url": url, "endpoint_url": endpoint},
                              erasure={"hmac_key": "k", "topics": json.loads(
                                  erasure_env("t.x")["EVENTVAULT_ERASURE__TOPICS"])})
    now = datetime.now(UTC)
    request = Request("R", (keyed_hash(b"k", customer(1).encode()).hex(),), now, now)
    return Erasure(settings_, store, now, "run", dry_run=False), ref, request


@pytest.mark.parametrize("versioning", ["none", "suspended"])
def test_rewrites_keep_the_object_without_versioning(s3_endpoint: str, s3_bucket: str,
                                                     versioning: str) -> None:
    """A rewrite on a bucket without versions (or with versioning suspended) replaces the
    "null" version in place: nothing else may be deleted, and the object must stay."""
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    if versioning == "suspended":
        client.put_bucket_versioning(Bucket=s3_bucket,
                                     VersioningConfiguration={"Status": "Enabled"})
    erasure, ref, request = _file_erasure(f"s3://{s3_bucket}/arch", s3_endpoint, 30)
    store = erasure.storage
    if versioning == "suspended":
        client.put_bucket_versioning(Bucket=s3_bucket,
                                     VersioningConfiguration={"Status": "Suspended"})
    outcome, = erasure.erase_files("t.x", [ref.key], [request], [customer(1)])
    assert outcome.verified, outcome.detail
    assert outcome.dropped == 10
    rows = fmt.decode(store.get(ref.key)).to_pylist()
    assert len(rows) == 20
    assert mentions(rows, customer(1)) == []
    assert len(store.versions(ref.key)) == 1


def test_a_deleted_object_is_not_brought_back_nor_purged(s3_endpoint: str,
                                                         versioned_bucket: str) -> None:
    """An object deleted by hand (a delete marker) keeps its older versions: erasure reads
    them, reports the subject it finds there, and neither restores nor purges them."""
    erasure, ref, request = _file_erasure(f"s3://{versioned_bucket}/arch", s3_endpoint, 9)
    store = erasure.storage
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").delete_object(
        Bucket=versioned_bucket, Key=f"arch/{ref.key}")
    before = store.versions(ref.key)
    outcome, = erasure.erase_files("t.x", [ref.key], [request])
    assert outcome.verified is False
    assert "does not restore deleted objects" in outcome.detail
    assert store.versions(ref.key) == before
