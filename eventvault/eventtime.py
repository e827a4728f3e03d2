"""Event time of a record: its Kafka timestamp by default, or a JSON field of its value.

Pure functions. The result is microseconds since the epoch (UTC) or None when the event time
is missing, negative or unparsable; such records are still archived (see eventvault.layout).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import orjson

from eventvault.times import EPOCH

TimeFormat = Literal["auto", "iso8601", "epoch_s", "epoch_ms", "epoch_us"]
_SCALE = {"epoch_s": 1_000_000, "epoch_ms": 1_000, "epoch_us": 1}


@dataclass(frozen=True)
class EventTimeSpec:
    """Where a topic's event time comes from.

    ``field`` None means the Kafka record timestamp. Otherwise ``field`` is a dotted path into a
    JSON object value (``"meta.occurred_at"``) and ``format`` says how to read it: ISO-8601 text
    (a time without an offset is taken as UTC), or a number of seconds, milliseconds or
    microseconds since the epoch. ``auto`` reads text as ISO-8601 and numbers as milliseconds.
    """

    field: str | None = None
    format: TimeFormat = "auto"

    @property
    def fingerprint(self) -> str:
        """A short stable text naming this spec (recorded with the archiver's progress)."""
        return "ts" if self.field is None else f"json:{self.field}:{self.format}"


def event_time_us(spec: EventTimeSpec, timestamp_ms: int, value: bytes | None) -> int | None:
    """The event time of one record in µs since the epoch, or None when it has none."""
    if spec.field is None:
        return timestamp_ms * 1000 if timestamp_ms >= 0 else None
    raw = _lookup(value, spec.field)
    if raw is None or isinstance(raw, bool):
        return None
    us = _parse(raw, spec.format)
    return us if us is not None and us >= 0 else None


def _lookup(value: bytes | None, path: str) -> object:
    if not value:
        return None
    try:
        node: object = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    for part in path.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def _parse(raw: object, fmt: TimeFormat) -> int | None:
    if isinstance(raw, str) and fmt in ("auto", "iso8601"):
        return _parse_iso(raw)
    if isinstance(raw, int | float) and fmt != "iso8601":
        scale = _SCALE.get(fmt, 1_000)
        try:
            return int(raw * scale)
        except (OverflowError, ValueError):
            return None
    return None


def _parse_iso(text: str) -> int | None:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
