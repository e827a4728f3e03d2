"""Layout is a pure function: keys parse back, sort in offset order, and dates are UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from eventvault.layout import (
    HIVE_NULL,
    MAX_HOUR,
    FileRef,
    file_name,
    hour_dir,
    hour_of,
    parse_file_key,
)
from eventvault.times import US_PER_HOUR

topics = st.from_regex(r"[A-Za-z0-9._-]{1,40}", fullmatch=True)
hours = st.none() | st.integers(0, MAX_HOUR)
offsets = st.integers(0, 2**63 - 1)


@given(topics, hours, st.integers(0, 99_999), offsets, offsets)
def test_key_round_trip(topic: str, hour: int | None, partition: int, a: int, b: int) -> None:
    ref = FileRef(topic, hour, partition, min(a, b), max(a, b))
    assert parse_file_key(ref.key) == ref


@given(st.integers(0, 10_000), st.lists(offsets, min_size=2, max_size=20, unique=True))
def test_names_sort_in_offset_order(partition: int, starts: list[int]) -> None:
    names = [file_name(partition, s, s) for s in starts]
    assert sorted(names) == [file_name(partition, s, s) for s in sorted(starts)]


@given(st.integers(0, MAX_HOUR * US_PER_HOUR + US_PER_HOUR - 1))
def test_hour_dir_is_the_utc_hour_of_the_event(event_us: int) -> None:
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=event_us)
    assert hour_dir("t", hour_of(event_us)) == f"topic=t/date={moment:%Y-%m-%d}/hour={moment:%H}"


def test_unknown_event_times_go_to_the_hive_null_partition() -> None:
    assert hour_of(None) is None
    assert hour_of(-1) is None
    assert hour_of((MAX_HOUR + 1) * US_PER_HOUR) is None  # year 10000
    assert hour_dir("t", None) == f"topic=t/date={HIVE_NULL}/hour={HIVE_NULL}"
    assert hour_dir("t", 0) == "topic=t/date=1970-01-01/hour=00"
    assert hour_dir("t", MAX_HOUR) == "topic=t/date=9999-12-31/hour=23"


def test_foreign_keys_are_not_parsed() -> None:
    assert parse_file_key("topic=t/date=2026-01-01/hour=01/notes.txt") is None
    assert parse_file_key("something/else.parquet") is None


dates = st.from_regex(r"[0-9-]{10}", fullmatch=True) | st.just(HIVE_NULL) | st.dates().map(str)
hour_names = st.from_regex(r"\d{2}", fullmatch=True) | st.just(HIVE_NULL)
file_names = st.from_regex(r"\d{5}-\d{20}-\d{20}\.parquet", fullmatch=True)


@given(topics, dates, hour_names, file_names)
def test_malformed_keys_are_not_archive_files_and_never_raise(topic: str, date: str, hour: str,
                                                              name: str) -> None:
    """Impossible dates and hours (2026-02-30, 24), a Hive null hour beside a real date, a
    date before 1970: None, never ValueError; whatever parses is the key FileRef writes."""
    key = f"topic={topic}/date={date}/hour={hour}/{name}"
    ref = parse_file_key(key)
    assert ref is None or ref.key == key


def test_impossible_dates_and_mixed_hive_null_hours_are_not_archive_files() -> None:
    name = file_name(0, 0, 9)
    for directory in ("date=2026-02-30/hour=00", f"date=2026-01-01/hour={HIVE_NULL}",
                      "date=2026-01-01/hour=24", f"date={HIVE_NULL}/hour=05",
                      "date=1969-12-31/hour=23", "date=2026-1-011/hour=00"):
        assert parse_file_key(f"topic=t/{directory}/{name}") is None, directory
    assert parse_file_key(f"topic=t/date=2026-02-28/hour=23/{name}") is not None
