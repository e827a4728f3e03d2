"""`eventvault replay` on the real broker, read back with kcat: fidelity, partitioning, selection.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.kafkautil import Rec, create_topic
from tests.replayutil import (
    archived_topic,
    assert_offset_map_matches,
    kcat_read,
    read_headers,
    replay,
)

pytestmark = pytest.mark.integration

TRICKY = [
    Rec(0, b"k1", b"\x00\xff binary\n\r\t", (("x-hyphen-name", b"v"), ("dup", None),
                                              ("dup", b"x")), 1_000),
    Rec(1, None, b"no key", (), 0),
    Rec(0, b"tomb", None, (("", b""),), 978_307_200_000),
    Rec(1, b"\xfe\xff", b"", (("h", b"\x00\x01"),), 1_767_225_600_000),
    Rec(0, b"big", b"J" * 900_000, (), 1_767_225_600_001),
    Rec(1, b"k1", b'{"type": "OrderPaid"}', (), 4_102_444_800_000),  # year 2100
]


def _topic(bootstrap: str, partitions: int, config: dict[str, str] | None = None) -> str:
    name = f"dst.{uuid.uuid4().hex[:6]}_replayed"
    create_topic(bootstrap, name, partitions, config)
    return name


def test_round_trip_is_byte_for_byte(kafka_bootstrap: str, tmp_path: Path) -> None:
    url = f"file://{tmp_path}/arch"
    src = archived_topic(kafka_bootstrap, url, TRICKY, 2, null_record_partition=1)
    dst = _topic(kafka_bootstrap, 2)
    code, report, err = replay(kafka_bootstrap, url, "--topic", src, "--target", dst,
                               cwd=tmp_path)
    assert code == 0, err
    assert report is not None
    assert report["status"] == "completed"
    assert report["records"] == len(TRICKY) + 1
    source, target = kcat_read(kafka_bootstrap, src), kcat_read(kafka_bootstrap, dst)
    assert len(target) == len(source) == len(TRICKY) + 1
    by_origin = {r.source: r for r in target}
    for s in source:
        t = by_origin[(s.partition, s.offset)]
        assert (t.partition, t.key, t.value, t.timestamp_ms) == (
            s.partition, s.key, s.value, s.timestamp_ms)
        assert t.header("eventvault.replay.id") == report["replay_id"]
        assert t.header("eventvault.source.topic") == src
    # headers exactly: order, duplicates, null values, binary; provenance appended
    src_h = read_headers(kafka_bootstrap, src, len(source))
    dst_h = read_headers(kafka_bootstrap, dst, len(target))
    for t in target:
        assert dst_h[(t.partition, t.offset)][:-4] == src_h[t.source]
    # the offset map translates source offsets to target offsets, record for record
    for row in report["partitions"]:
        assert row["source_partition"] == row["target_partition"]
    assert_offset_map_matches(tmp_path / "arch", report, target, source)
    # --no-provenance: exactly the source headers
    dst2 = _topic(kafka_bootstrap, 2)
    code, _, err = replay(kafka_bootstrap, url, "--topic", src, "--target", dst2,
                          "--no-provenance", cwd=tmp_path)
    assert code == 0, err
    plain = kcat_read(kafka_bootstrap, dst2)
    assert [(r.partition, r.key, r.value, r.timestamp_ms) for r in plain] == [
        (r.partition, r.key, r.value, r.timestamp_ms) for r in source]
    assert read_headers(kafka_bootstrap, dst2, len(plain)) == src_h


def _keyed(n: int, partitions: int) -> list[Rec]:
    return [Rec(i % partitions, f"order-{i % 37}".encode(), f'{{"i": {i}}}'.encode(), (),
                1_767_225_600_000 + i * 60_000) for i in range(n)]


def _kcat_partition_of_keys(bootstrap: str, keys: list[bytes], partitions: int) -> dict[bytes,
                                                                                      int]:
    """Where librdkafka's Java-compatible murmur2 partitioner puts each key."""
    probe = _topic(bootstrap, partitions)
    lines = b"".join(k + b"\t" + b"v\n" for k in keys)
    subprocess.run(["kcat", "-P", "-b", bootstrap, "-t", probe, "-K", "\t",
                    "-X", "partitioner=murmur2_random"], input=lines, check=True, timeout=60)
    return {r.key: r.partition for r in kcat_read(bootstrap, probe) if r.key is not None}


def test_partitioning_modes_and_order(kafka_bootstrap: str, tmp_path: Path) -> None:
    url = f"file://{tmp_path}/arch"
    records = _keyed(300, 3)
    src = archived_topic(kafka_bootstrap, url, records, 3)
    # key: where a Java producer would put each key
    dst = _topic(kafka_bootstrap, 5)
    code, _, err = replay(kafka_bootstrap, url, "--topic", src, "--target", dst,
                          "--partitioning", "key", cwd=tmp_path)
    assert code == 0, err
    target = kcat_read(kafka_bootstrap, dst)
    expected = _kcat_partition_of_keys(kafka_bootstrap, sorted({r.key for r in target
                                                                if r.key}), 5)
    assert len(target) == 300
    assert all(r.partition == expected[r.key] for r in target if r.key)
    for p in range(5):  # source offset order kept within each source partition
        seen = [r.source for r in target if r.partition == p]
        for sp in range(3):
            offsets = [o for q, o in seen if q == sp]
            assert offsets == sorted(offsets)
    # map
    dst = _topic(kafka_bootstrap, 4)
    code, _, err = replay(kafka_bootstrap, url, "--topic", src, "--target", dst,
                          "--partitioning", "map", "--partition-map", "0:3,1:0,2:2",
                          cwd=tmp_path)
    assert code == 0, err
    mapping = {0: 3, 1: 0, 2: 2}
    target = kcat_read(kafka_bootstrap, dst)
    assert all(r.partition == mapping[r.source[0]] for r in target)
    assert [r.source[1] for r in target if r.partition == 3] == list(range(100))
    # preserve into too few partitions: refused before producing anything
    small = _topic(kafka_bootstrap, 2)
    code, _, err = replay(kafka_bootstrap, url, "--topic", src, "--target", small,
                          cwd=tmp_path)
    assert code == 6
    assert "source partition 2 has no target partition" in err
    assert kcat_read(kafka_bootstrap, small) == []


def test_selection(kafka_bootstrap: str, tmp_path: Path) -> None:
    url = f"file://{tmp_path}/arch"
    records = _keyed(240, 2)
    src = archived_topic(kafka_bootstrap, url, records, 2)
    produced = {(i % 2, i // 2): r for i, r in enumerate(records)}

    def selected(*args: str) -> set[tuple[int, int]]:
        dst = _topic(kafka_bootstrap, 2)
        code, report, err = replay(kafka_bootstrap, url, "--topic", src, "--target", dst,
                                   *args, cwd=tmp_path)
        assert code == 0, err
        assert report is not None
        got = [r.source for r in kcat_read(kafka_bootstrap, dst)]
        assert len(got) == len(set(got)) == report["records"]
        return set(got)

    start_ms = 1_767_225_600_000 + 30 * 60_000
    assert selected("--start", "2026-01-01T00:30:00Z", "--end", "2026-01-01T02:00:00+00:00") \
        == {k for k, r in produced.items()
            if r.timestamp_ms is not None and start_ms <= r.timestamp_ms < start_ms + 5_400_000}
    assert selected("--key", "order-5", "--key", "hex:" + b"order-6".hex()) == {
        k for k, r in produced.items() if r.key in (b"order-5", b"order-6")}
    assert selected("--where", "CAST(value_json->>'$.i' AS INTEGER) % 7 = 0") == {
        k for k, r in produced.items() if int(r.value[6:-1]) % 7 == 0}  # type: ignore[index]
    assert selected("--partition", "1", "--from-offset", "10", "--to-offset", "1:20") == {
        (1, o) for o in range(10, 20)}


def test_dry_run_and_preflight(kafka_bootstrap: str, tmp_path: Path) -> None:
    url = f"file://{tmp_path}/arch"
    src = archived_topic(kafka_bootstrap, url, TRICKY, 2)
    dst = _topic(kafka_bootstrap, 2, {"retention.ms": str(86_400_000)})
    code, report, err = replay(kafka_bootstrap, url, "--topic", src, "--target", dst,
                               "--dry-run", cwd=tmp_path)
    assert code == 6, err  # the dry run prints what it found, and says the replay is refused
    assert err.startswith("eventvault: error: replay refused: "), err
    assert err.count("\n") == 1, err
    assert report is not None
    assert sum(s["records"] for s in report["to_replay"]) == len(TRICKY)
    assert any("retention.ms" in f["message"] and f["fatal"] for f in report["preflight"])
    code, report, err = replay(kafka_bootstrap, url, "--topic", src, "--target", dst,
                               "--dry-run", "--timestamp", "now", cwd=tmp_path)
    assert code == 0, err  # nothing refused: exit 0
    assert report is not None
    assert not (tmp_path / "arch" / "_replays").exists()  # a dry run stores nothing
    assert kcat_read(kafka_bootstrap, dst) == []
    code, _, err = replay(kafka_bootstrap, url, "--topic", src, "--target", dst, cwd=tmp_path)
    assert code == 6
    assert "retention.ms=86400000" in err
    assert len(err.strip().splitlines()) == 1
    before_ms = time.time() * 1000
    code, _, err = replay(kafka_bootstrap, url, "--topic", src, "--target", dst,
                          "--timestamp", "now", cwd=tmp_path)
    assert code == 0, err
    assert all(r.timestamp_ms >= before_ms - 1000 for r in kcat_read(kafka_bootstrap, dst))
    # a record larger than the target takes is named before anything is produced
    tiny = _topic(kafka_bootstrap, 2, {"max.message.bytes": "100000"})
    code, _, err = replay(kafka_bootstrap, url, "--topic", src, "--target", tiny,
                          "--force", cwd=tmp_path)
    assert code == 6
    assert f"record {src}/0/" in err
    assert "max.message.bytes=100000" in err
    assert kcat_read(kafka_bootstrap, tiny) == []
    code, _, err = replay(kafka_bootstrap, url, "--topic", src, "--target", "no.such.topic",
                          cwd=tmp_path)
    assert code == 6
    assert "does not exist" in err


def test_start_and_end_are_event_times_for_a_json_event_time_topic(kafka_bootstrap: str,
                                                                    tmp_path: Path) -> None:
    url = f"file://{tmp_path}/arch"
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    # the record timestamps run backwards against the event times in the value
    records = [Rec(0, b"k", json.dumps({"at": (t0 + timedelta(minutes=i)).isoformat()}).encode(),
                   (), 1_767_225_600_000 - i * 60_000) for i in range(120)]
    src = f"src.{uuid.uuid4().hex[:6]}-events"
    archived_topic(kafka_bootstrap, url, records, 1, topic=src,
                   event_time={src: {"field": "at"}})
    dst = _topic(kafka_bootstrap, 1)
    code, report, err = replay(kafka_bootstrap, url, "--topic", src, "--target", dst,
                               "--start", "2026-03-01T00:30:00Z", "--end", "2026-03-01T01:10:00Z",
                               cwd=tmp_path, env={"EVENTVAULT_ARCHIVE__EVENT_TIME": json.dumps(
                                   {src: {"field": "at"}})})
    assert code == 0, err
    assert report is not None
    assert sorted(r.source[1] for r in kcat_read(kafka_bootstrap, dst)) == list(range(30, 70))


def test_nonsensical_arguments_are_refused_and_leave_nothing(kafka_bootstrap: str,
                                                             tmp_path: Path) -> None:
    """A topic not in the archive, an empty time or offset range, a negative rate, a key that
    is not hex: one line, exit 2, no plan or report in _replays/, dry run or not."""
    url = f"file://{tmp_path}/arch"
    src = archived_topic(kafka_bootstrap, url, TRICKY, 2)
    dst = _topic(kafka_bootstrap, 2)
    cases = [
        (["--topic", "no.such.source"], "topic no.such.source is not in the archive"),
        (["--start", "2026-01-02T00:00Z", "--end", "2026-01-01T00:00Z"], "is not before --end"),
        (["--start", "2026-01-01T00:00Z", "--end", "2026-01-01T00:00Z"], "is not before --end"),
        (["--rate", "-5"], "want a number above 0, got '-5'"),
        (["--rate", "0"], "want a number above 0"),
        (["--rate", "nan"], "want a number above 0"),
        (["--rate-bytes", "-1"], "want a number above 0"),
        (["--from-offset", "10", "--to-offset", "5"], "--from-offset 10 is not before"),
        (["--from-offset", "1:3", "--to-offset", "1:3"], "in partition 1"),
        (["--from-offset", "-4"], "not an offset"),
        (["--partition", "-1"], "want a whole number"),
        (["--key", "hex:zz"], "is not hex:"),
    ]
    for number, (args, says) in enumerate(cases):
        for dry_run in ([], ["--dry-run"])[:2 if number < 3 else 1]:
            full = ["--topic", src, "--target", dst, *args, *dry_run]
            code, _, err = replay(kafka_bootstrap, url, *full, cwd=tmp_path)
            assert code == 2, (full, err)
            assert err.count("\n") == 1, err
            assert err.startswith("eventvault: error: "), err
            assert says in err, (full, err)
            assert not (tmp_path / "arch" / "_replays").exists(), full
    assert kcat_read(kafka_bootstrap, dst) == []


def test_a_paced_replay_outlives_the_transaction_timeout(kafka_bootstrap: str,
                                                         tmp_path: Path) -> None:
    """Paced to last 5 transaction timeouts, the replay commits by time as well as by count,
    so the broker never aborts a transaction, and delivers exactly once (issue 10, item 6)."""
    url = f"file://{tmp_path}/arch"
    n = 400
    records = [Rec(i % 2, f"k{i}".encode(), b"v" * 100, (), 1_767_225_600_000 + i)
               for i in range(n)]
    src = archived_topic(kafka_bootstrap, url, records, 2)
    dst = _topic(kafka_bootstrap, 2)
    started = time.monotonic()
    code, report, err = replay(
        kafka_bootstrap, url, "--topic", src, "--target", dst, "--rate", "40", cwd=tmp_path,
        env={"EVENTVAULT_REPLAY__TRANSACTION_TIMEOUT_MS": "2000",
             "EVENTVAULT_REPLAY__TRANSACTION_SECONDS": "1",
             "EVENTVAULT_REPLAY__BATCH_BYTES": "1024"})  # batches go out while it is open
    assert code == 0, err
    assert report is not None
    assert time.monotonic() - started > 10  # 5 times the transaction timeout
    assert report["records"] == n
    assert report["transactions"] >= 9  # one per second at most
    target = kcat_read(kafka_bootstrap, dst)
    assert sorted(r.source for r in target) == sorted((i % 2, i // 2) for i in range(n))


def test_a_long_filtered_stretch_outlives_the_transaction_timeout(kafka_bootstrap: str,
                                                                  tmp_path: Path) -> None:
    """A transaction already on the broker (its first batch sent), then a long stretch of
    rows that a selective and costly --where filters out, for longer than the transaction
    timeout: the replay commits by age while DuckDB reads, so the broker never aborts, and
    the last records are delivered exactly once (issue 10, review item 1)."""
    url = f"file://{tmp_path}/arch"
    n = 30_000
    records = [Rec(0, f"k{i}".encode(), b"v" * 100, (), 1_767_225_600_000 + i)
               for i in range(n)]
    src = archived_topic(kafka_bootstrap, url, records, 1, max_file_records=n // 3)
    dst = _topic(kafka_bootstrap, 1)
    kept = [*range(20), *range(n - 20, n)]  # 20 records of 100 bytes fill a 1 KiB batch
    # the third term costs DuckDB about 3,000 multiplications a row: seconds for the stretch
    where = (f'"offset" < 20 OR "offset" >= {n - 20} OR '
             f'list_sum(list_transform(range(3000), x -> x * "offset")) < 0')
    started = time.monotonic()
    code, report, err = replay(
        kafka_bootstrap, url, "--topic", src, "--target", dst, "--where", where, cwd=tmp_path,
        env={"EVENTVAULT_REPLAY__TRANSACTION_TIMEOUT_MS": "1000",
             "EVENTVAULT_REPLAY__TRANSACTION_SECONDS": "0.5",
             "EVENTVAULT_REPLAY__BATCH_BYTES": "1024"})
    elapsed = time.monotonic() - started
    assert code == 0, err
    assert report is not None
    assert elapsed > 3, elapsed  # the filtered stretch: past the timeout and its abort check
    assert report["records"] == len(kept)
    target = kcat_read(kafka_bootstrap, dst)
    assert [r.source for r in target] == [(0, i) for i in kept]
    assert_offset_map_matches(tmp_path / "arch", report, target, kcat_read(kafka_bootstrap, src))
