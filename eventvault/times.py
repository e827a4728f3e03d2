"""Time in eventvault: timezone-aware UTC, stored as microseconds since the Unix epoch.

Pure helpers shared by the archive format, the query tools and replay: one epoch, one
µs-per-hour constant, one parser for times given by people and one printer for stored times.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
US_PER_HOUR = 3_600_000_000
MS_PER_HOUR = 3_600_000
MAX_MS = (2**63 - 1) // 1000
"""The largest Kafka timestamp (ms) whose microseconds fit the archive's int64 column."""
_MICROSECOND = timedelta(microseconds=1)


def timestamp_us(timestamp_ms: int) -> int:
    """A Kafka timestamp in ms as µs; clamped to the int64 µs range (year ±294,000)."""
    return max(-MAX_MS, min(timestamp_ms, MAX_MS)) * 1000


def parse_time(text: str) -> datetime:
    """A time given by a person: ISO-8601, UTC unless it has an offset.

    Raises ValueError naming the text when it is not ISO-8601.
    """
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not an ISO-8601 time: {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def micros(moment: datetime) -> int:
    """µs since the epoch of a timezone-aware time."""
    return (moment - EPOCH) // _MICROSECOND


def iso_time(us: int, timespec: str = "auto") -> str:
    """µs since the epoch as ISO-8601 UTC text (beyond Python's years 1-9999: the number)."""
    try:
        return (EPOCH + timedelta(microseconds=us)).isoformat(timespec=timespec)
    except OverflowError:
        return f"{us} µs since the epoch"
