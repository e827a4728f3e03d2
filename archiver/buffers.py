"""What one partition's buffering is made of: the buffer of an hour bucket, the roll it becomes.

Pure data and small rules, used by :mod:`eventvault.archiver.batching` (which decides when
buffers open and roll) and by the runner and encoder (which write rolls).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from eventvault.format import Columns, Header
from eventvault.layout import Hour
from eventvault.progress import MAX_METADATA_CHARS, Cut

RECORD_OVERHEAD = 160
"""Bytes of Python objects a buffered record costs beyond its key, value and headers."""


class RecordLike(Protocol):
    """What the batch path reads of a Kafka record (aiokafka's ConsumerRecord has it)."""

    @property
    def offset(self) -> int: ...  # noqa: D102
    @property
    def timestamp(self) -> int: ...  # noqa: D102
    @property
    def key(self) -> bytes | None: ...  # noqa: D102
    @property
    def value(self) -> bytes | None: ...  # noqa: D102
    @property
    def headers(self) -> Sequence[Header]: ...  # noqa: D102


@dataclass(frozen=True)
class Limits:
    """When files roll, and how many decided cuts a partition may carry in its progress."""

    max_records: int = 1_000_000
    max_bytes: int = 128 << 20
    idle_seconds: float = 120.0
    max_age_seconds: float = 900.0
    max_cuts: int = 64
    grace_hours: int | None = None  # close hour H once hour H + grace + 1 is read
    max_progress_chars: int = MAX_METADATA_CHARS  # what the commit metadata may hold


class Buffer:
    """Records of one hour bucket, from ``first`` on, not yet in a file."""

    __slots__ = ("cols", "cut", "fence", "hour", "nbytes", "opened_at", "touched_at")

    def __init__(self, partition: int, hour: Hour, now: float, cut: Cut | None,
                 fence: int | None = None) -> None:
        self.hour = hour
        self.cols = Columns(partition)
        self.nbytes = 0
        self.opened_at = now
        self.touched_at = now
        self.cut = cut  # set when rebuilding a recorded cut: roll exactly at cut.last
        self.fence = fence  # the first offset of the next recorded cut of this hour: roll before

    @property
    def first(self) -> int:
        """The offset this buffer's file will start at."""
        return self.cut.first if self.cut else self.cols.offsets[0]

    def to_cut(self) -> Cut:
        """The cut this buffer becomes when rolled."""
        return self.cut or Cut(self.cols.offsets[0], self.cols.offsets[-1], self.hour)

    def put(self, offset: int, ts_us: int, ts_type: str, key: bytes | None,
            value: bytes | None, headers: Sequence[Header], now: float) -> None:
        """Buffer one record and count its size."""
        self.cols.append(offset, ts_us, ts_type, key, value, headers)
        self.nbytes += record_size(key, value, headers)
        self.touched_at = now


@dataclass(frozen=True)
class Roll:
    """A decided file: its cut and its records; ``rebuilt`` when it repeats a recorded cut."""

    topic: str
    partition: int
    cut: Cut
    cols: Columns
    rebuilt: bool
    nbytes: int = 0


def record_size(key: bytes | None, value: bytes | None, headers: Sequence[Header]) -> int:
    """Estimated bytes one buffered record holds."""
    size = RECORD_OVERHEAD + (len(key) if key else 0) + (len(value) if value else 0)
    for h_key, h_value in headers:
        size += 64 + len(h_key) + (len(h_value) if h_value else 0)
    return size
