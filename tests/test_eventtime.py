"""Event time extraction: record timestamp by default, JSON fields on request, never a crash."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventvault.eventtime import EventTimeSpec, event_time_us
from eventvault.layout import hour_of

JSON = EventTimeSpec("a.b")


@pytest.mark.parametrize(("value", "spec", "expected"), [
    (b'{"a": {"b": "2026-01-02T03:04:05.123456Z"}}', JSON, 1767323045123456),
    (b'{"a": {"b": "2026-01-02T05:04:05+02:00"}}', JSON, 1767323045000000),
    (b'{"a": {"b": "2026-01-02T03:04:05"}}', JSON, 1767323045000000),  # naive = UTC
    (b'{"a": {"b": 1767323045123}}', JSON, 1767323045123000),
    (b'{"a": {"b": 1767323045}}', EventTimeSpec("a.b", "epoch_s"), 1767323045000000),
    (b'{"a": {"b": 1767323045000000}}', EventTimeSpec("a.b", "epoch_us"), 1767323045000000),
    (b'{"a": {"b": "1767323045"}}', EventTimeSpec("a.b", "epoch_s"), None),
    (b'{"a": {"b": 5}}', EventTimeSpec("a.b", "iso8601"), None),
    (b'{"a": {"b": true}}', JSON, None),
    (b'{"a": {"b": -1}}', JSON, None),
    (b'{"a": "flat"}', JSON, None),
    (b'[1, 2]', JSON, None),
    (b"\xff\xfe", JSON, None),
    (b"", JSON, None),
    (None, JSON, None),
])
def test_json_field(value: bytes | None, spec: EventTimeSpec, expected: int | None) -> None:
    assert event_time_us(spec, 0, value) == expected


def test_event_time_beyond_year_9999_has_no_hour() -> None:
    far = event_time_us(JSON, 0, b'{"a": {"b": 1e300}}')
    assert far is not None
    assert hour_of(far) is None


@given(st.integers(-(2**63), 2**63 - 1))
def test_record_timestamp(ts_ms: int) -> None:
    got = event_time_us(EventTimeSpec(), ts_ms, b"ignored")
    assert got == (ts_ms * 1000 if ts_ms >= 0 else None)


@given(st.binary(max_size=200))
def test_any_bytes_never_raise(value: bytes) -> None:
    event_time_us(JSON, 0, value)
