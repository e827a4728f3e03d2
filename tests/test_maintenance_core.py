"""The pure core of erasure and retention: subjects, redaction, the index, the guard, expiry."""

from __future__ import annotations

import enum
import json
import os
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventvault import format as fmt
from eventvault.errors import ConfigError
from eventvault.layout import FileRef, replay_key
from eventvault.maintenance import index
from eventvault.maintenance.erasure import erase_rows, leftovers, offsets_kept
from eventvault.maintenance.guard import Guard
from eventvault.maintenance.recipients import delivered
from eventvault.maintenance.requests import check_request_id, merged
from eventvault.maintenance.retention import expired, hour_blocked
from eventvault.maintenance.steps import dry_run_of
from eventvault.maintenance.subjects import SubjectSpec, keyed_hash, redact, subjects_of
from eventvault.progress import Cut, Progress
from eventvault.settings import StorageSettings
from eventvault.storage import ObjectVersion, open_storage
from eventvault.times import US_PER_HOUR, micros


class DagRunType(str, enum.Enum):  # noqa: UP042  (as Airflow defines it)
    """As Airflow's: a str enum whose str() is not its value."""

    MANUAL = "manual"
    SCHEDULED = "scheduled"

KEY = b"k"
VALUE_SPEC = SubjectSpec("value", "order.customer.id", "drop")


def test_where_the_subject_is() -> None:
    value = json.dumps({"order": {"customer": {"id": "c1"}}}).encode()
    assert subjects_of(VALUE_SPEC, None, value, []) == (b"c1",)
    assert subjects_of(VALUE_SPEC, None, b'{"order": {"customer": {"id": 42}}}', []) == (b"42",)
    for number in (b"12345.0", b"1.2345e4"):
        assert subjects_of(VALUE_SPEC, None, b'{"order": {"customer": {"id": %s}}}' % number,
                           []) == (b"12345",)
    big = b'{"order": {"customer": {"id": 123456789012345678901234567890}}}'
    assert subjects_of(VALUE_SPEC, None, big, []) == (b"123456789012345678901234567890",)
    odd = b'\xef\xbb\xbf{"x": NaN, "order": {"customer": {"id": "c9"}}}'  # BOM and NaN
    assert subjects_of(VALUE_SPEC, None, odd, []) == (b"c9",)
    assert subjects_of(VALUE_SPEC, None, b'{"order": {"customer": {"id": true}}}', []) == ()
    assert subjects_of(VALUE_SPEC, None, b"\xff not json", []) == ()
    assert subjects_of(VALUE_SPEC, None, None, []) == ()
    assert subjects_of(SubjectSpec("key"), b"c2", None, []) == (b"c2",)
    header = SubjectSpec("header", "user")
    assert subjects_of(header, None, None, [("user", b"a"), ("x", b"y"), ("user", b"b")]) == (
        b"a", b"b")
    assert subjects_of(header, None, None, [("user", None)]) == ()


def test_redaction_keeps_the_shape() -> None:
    spec = SubjectSpec("value", "c.id", "redact", ("c.email", "missing.path"))
    value = json.dumps({"c": {"id": "x", "email": "x@example.com", "tier": "plus"}, "n": 1.5})
    key, new, headers = redact(spec, b"k", value.encode(), [("h", b"1")])
    assert (key, headers) == (b"k", [("h", b"1")])
    assert json.loads(new or b"") == {"c": {"id": None, "email": None, "tier": "plus"}, "n": 1.5}
    assert redact(SubjectSpec("key", action="redact"), b"x", b"\x00", [])[:2] == (None, b"\x00")
    assert redact(SubjectSpec("header", "u", "redact"), None, None,
                  [("u", b"x"), ("v", b"1")])[2] == [("v", b"1")]


@settings(max_examples=50)
@given(st.sets(st.binary(min_size=1, max_size=20), min_size=0, max_size=300))
def test_the_index_never_misses_a_subject(subjects: set[bytes]) -> None:
    digests = [keyed_hash(KEY, s) for s in subjects]
    bloom = index.Bloom.decode(index.Bloom.build(digests).encode(len(digests)))
    assert all(d in bloom for d in digests)


def test_the_index_rarely_says_yes_wrongly() -> None:
    bloom = index.Bloom.build(keyed_hash(KEY, b"in-%d" % i) for i in range(2000))
    wrong = sum(keyed_hash(KEY, b"out-%d" % i) in bloom for i in range(20_000))
    assert wrong < 60  # designed for 1 in 1000: 20 expected
    assert len(bloom.bits) < 2000 * 2  # about 14.4 bits per subject


@given(st.from_regex(r"topic=[a-z.]{1,9}/date=20[0-9]{2}-0[1-9]-1[0-9]/hour=[0-2][0-9]/"
                     r"[0-9]{5}-[0-9]{20}-[0-9]{20}\.parquet", fullmatch=True),
       st.from_regex(r'"?[0-9a-f]{32}(-[0-9]{1,3})?"?', fullmatch=True))
def test_index_names_lead_back_to_their_file(key: str, etag: str) -> None:
    prefix = index.index_prefix("abc123", VALUE_SPEC)
    name = index.index_key(prefix, ObjectVersion(key, 10, etag))
    assert index.archive_key_of(name) == key
    assert index.archive_key_of(key) is None


def _table(values: list[bytes | None], timestamps_us: list[int] | None = None) -> pa.Table:
    cols = fmt.Columns(0)
    for i, value in enumerate(values):
        cols.append(10 + i, (timestamps_us or [0] * len(values))[i], "CreateTime", b"k%d" % i,
                    value, [("h", b"v")])
    return fmt.to_table(cols)


def _order(who: str) -> bytes:
    return json.dumps({"order": {"customer": {"id": who, "email": f"{who}@example.com"}}}).encode()


def test_erasing_drops_only_the_subjects_rows_and_keeps_odd_timestamps() -> None:
    far = 200_000 * 365 * 86_400 * 1_000_000  # year ~200,000: no Python datetime holds it
    table = _table([_order("cus_1"), _order("cus_10"), b"\xff", None, _order("cus_1")],
                   [far, 1, 2, 3, -far])
    wanted = {keyed_hash(KEY, b"cus_1")}
    erased = erase_rows(table, VALUE_SPEC, wanted, KEY)
    assert (erased.dropped, erased.redacted) == (2, 0)
    assert erased.found == {keyed_hash(KEY, b"cus_1"): ((0, 10), (0, 14))}
    assert erased.table.column("offset").to_pylist() == [11, 12, 13]
    assert erased.table.column("timestamp").cast("int64").to_pylist() == [1, 2, 3]
    assert offsets_kept(table, erased.table, erased)
    assert not offsets_kept(table, erased.table.slice(1), erased)
    assert leftovers(erased.table, VALUE_SPEC, wanted, KEY, [b"cus_1"]) == []
    assert leftovers(table, VALUE_SPEC, set(), KEY, [b"cus_1"]) == [(0, 10), (0, 14)]
    redacting = SubjectSpec("value", "order.customer.id", "redact", ("order.customer.email",))
    redacted = erase_rows(table, redacting, wanted, KEY)
    assert (redacted.dropped, redacted.redacted) == (0, 2)
    assert redacted.table.column("timestamp").cast("int64").to_pylist() == [far, 1, 2, 3, -far]
    assert redacted.table.schema == fmt.SCHEMA
    assert leftovers(redacted.table, redacting, wanted, KEY, [b"cus_1"]) == []
    assert erase_rows(table, VALUE_SPEC, {keyed_hash(KEY, b"nobody")}, KEY).table is table


def test_the_guard_lets_maintenance_touch_only_finished_files() -> None:
    guard = Guard("t", {0: Progress(100, (Cut(90, 120, 7),))})
    assert guard.why_not(FileRef("t", 7, 0, 0, 50)) is None
    assert "committed up to offset 100" in (guard.why_not(FileRef("t", 8, 0, 90, 100)) or "")
    assert guard.why_not(FileRef("t", 7, 1, 0, 10**6)) is None  # never committed: only new names
    assert "recorded cut" in (hour_blocked(guard, 7, []) or "")
    assert hour_blocked(guard, 6, [FileRef("t", 6, 0, 0, 99)]) is None
    assert "no committed progress" in (hour_blocked(guard, 6, [], archived=[0, 1]) or "")


@pytest.mark.parametrize(("asked", "run_type", "dry"), [
    (True, "manual", True), (False, "manual", False), (True, "scheduled", False),
    (True, DagRunType.SCHEDULED, False), (True, DagRunType.MANUAL, True)])
def test_scheduled_runs_act_and_runs_by_hand_default_to_dry(asked: bool, run_type: object,
                                                            dry: bool) -> None:
    assert dry_run_of(asked, run_type) is dry


@given(st.integers(0, 500_000), st.integers(1, 3650),
       st.integers(0, 10**12).map(lambda s: datetime(2001, 1, 1, tzinfo=UTC)
                                  + timedelta(microseconds=s * 1000)))
def test_an_hour_expires_once_it_ended_more_than_the_limit_ago(hour: int, days: int,
                                                               now: datetime) -> None:
    refs = [FileRef("t", hour, 0, 0, 1), FileRef("t", None, 0, 2, 3)]
    gone = expired(refs, days, now)
    ended = (hour + 1) * US_PER_HOUR
    assert (hour in gone) == (ended <= micros(now) - days * 86_400 * 1_000_000)
    assert None not in gone  # the null partition is never expired


def test_requests_merge_subjects_and_keep_their_deadline() -> None:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    first = merged(None, "R", ["b", "a"], now, 30, "k1")
    assert first.subjects == ("a", "b")
    assert first.deadline == now + timedelta(days=30)
    later = merged(first, "R", ["c", "a"], now + timedelta(days=3), 30, "k1")
    assert later.subjects == ("a", "b", "c")
    assert later.deadline == first.deadline
    closed = replace(later, status="closed")
    assert merged(closed, "R", ["a"], now, 30, "k1") == closed  # asked again: nothing new
    with pytest.raises(ConfigError, match="give new subjects a new request id"):
        merged(closed, "R", ["d"], now, 30, "k1")
    with pytest.raises(ConfigError, match="not starting with"):
        check_request_id(".tmp-R1")


@pytest.mark.parametrize("size", [0, 1, 5000])
def test_empty_and_large_indexes_decode(size: int) -> None:
    digests = [os.urandom(32) for _ in range(size)]
    bloom = index.Bloom.decode(index.Bloom.build(digests).encode(size))
    assert all(d in bloom for d in digests)


def test_a_recipient_counts_each_record_once_across_map_files(tmp_path: Path) -> None:
    """A fenced run and its successor may both leave a map of one transaction
    (``offsets/<n>-<epoch>.parquet``); the ledger counts each delivered record once."""
    storage = open_storage(StorageSettings(url=str(tmp_path)))
    plan = {"replay_id": "r1", "selection": {"topic": "src"}, "target": {"topic": "dst"},
            "created": "2026-12-01T00:00:00+00:00"}
    storage.put(replay_key("r1", "plan.json"), json.dumps(plan).encode())
    for epoch, target_offsets in ((0, [10, 11, 12]), (1, [13, 14, 15])):
        storage.put(replay_key("r1", f"offsets/1-{epoch}.parquet"), fmt.encode_rows(
            fmt.OFFSET_MAP_SCHEMA, {"source_partition": [0, 0, 0], "source_offset": [5, 6, 7],
                                    "target_partition": [0, 0, 0],
                                    "target_offset": target_offsets}))
    found = delivered(storage, "src", [(0, 5), (0, 7), (1, 5)])
    assert [(r.replay_id, r.target_topic, r.records) for r in found] == [("r1", "dst", 2)]
