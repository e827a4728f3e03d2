"""The archiver's per-partition progress, as stored in Kafka's committed-offset metadata.

A committed offset alone cannot make an archive exactly-once when files are cut by timers
(docs/EXACTLY_ONCE.md). Next to the offset, the archiver commits the list of *cuts*: files it
has decided on whose last offset is at or beyond the committed offset. Kafka fences these
commits by consumer-group generation, so a stale owner cannot overwrite them.

Text form (short, to stay well under the broker's ``offset.metadata.max.bytes``, 4096 by
default)::

    ev1|<spec hash>|<hour>:<first - offset>:<last - first>;...

with ``n`` for the unknown hour. Pure functions only. The codec is part of the core, not of the
archiver, because every job that must not race the archiver (erasure, retention, verify)
reads the recorded cuts too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from eventvault.errors import ArchiveStateError
from eventvault.layout import Hour

MAGIC = "ev1"
MAX_METADATA_CHARS = 3800
MAX_SPAN = (1 << 63) - 1
"""The widest a cut can be: Kafka offsets are 64-bit signed integers."""


@dataclass(frozen=True, order=True)
class Cut:
    """A file decided on: the records of one hour bucket from ``first`` to ``last`` offset.

    The file holds exactly the partition's records whose hour is ``hour`` and whose offset is in
    ``[first, last]``; its name is derived from these three numbers alone.
    """

    first: int
    last: int
    hour: Hour


@dataclass(frozen=True)
class Progress:
    """Committed state of one partition: resume offset, open cuts, and the event-time spec."""

    offset: int
    cuts: tuple[Cut, ...] = ()
    spec_hash: str = ""


def spec_hash(fingerprint: str) -> str:
    """A short hash of an event-time spec fingerprint."""
    return hashlib.sha256(fingerprint.encode()).hexdigest()[:8]


def encode_progress(progress: Progress, limit: int = MAX_METADATA_CHARS) -> str:
    """Metadata text for a progress; raises if it is longer than ``limit`` characters."""
    parts = _parts(progress.offset, sorted(progress.cuts))
    text = f"{MAGIC}|{progress.spec_hash}|{';'.join(parts)}"
    if len(text) > limit:
        raise ArchiveStateError(
            f"progress of {len(progress.cuts)} cuts does not fit in commit metadata "
            f"({len(text)} characters, at most {limit})", cuts=len(progress.cuts))
    return text


def progress_chars(offset: int, cuts: Iterable[Cut], open_firsts: Iterable[tuple[Hour, int]] = (),
                   spec_hash: str = "") -> int:
    """The length of the progress text once the open buffers ``(hour, first)`` are cuts too.

    An open buffer's last offset is not known yet: it is counted at the widest a cut can be,
    so what is decided while this fits still fits when those buffers roll, whatever their size.
    """
    widest = [Cut(first, first + MAX_SPAN, hour) for hour, first in open_firsts]
    parts = _parts(offset, [*cuts, *widest])
    return len(MAGIC) + len(spec_hash) + 2 + sum(map(len, parts)) + max(0, len(parts) - 1)


def _parts(offset: int, cuts: Iterable[Cut]) -> list[str]:
    parts = []
    for cut in cuts:
        hour = "n" if cut.hour is None else str(cut.hour)
        parts.append(f"{hour}:{cut.first - offset}:{cut.last - cut.first}")
    return parts


def decode_progress(offset: int, text: str | None) -> Progress:
    """Progress from a committed offset and its metadata ('' or None: no cuts recorded)."""
    if not text:
        return Progress(offset)
    fields = text.split("|")
    if len(fields) != 3 or fields[0] != MAGIC:
        raise ArchiveStateError(
            f"committed offset metadata {text[:40]!r} was not written by eventvault; "
            "use a group id of eventvault's own", metadata=text[:200])
    cuts = []
    for part in filter(None, fields[2].split(";")):
        hour_s, first_d, span = part.split(":")
        first = offset + int(first_d)
        cuts.append(Cut(first, first + int(span), None if hour_s == "n" else int(hour_s)))
    return Progress(offset, tuple(sorted(cuts)), fields[1])
