"""Erasure of subjects from one archive file's rows, and its verification. Pure functions.

A file's table goes in with the keyed hashes of the subjects to erase; out comes the table
without them (``drop``) or with their records redacted (``redact``), and where they were.
Verification looks for them again: by keyed hash, and, where the ids themselves are known
(the run that received the request), for the id's bytes anywhere in the record.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import pyarrow as pa

from eventvault import format as fmt
from eventvault.maintenance.subjects import SubjectSpec, keyed_hash, redact, subjects_of


@dataclass(frozen=True)
class Erased:
    """What erasure did to one file's rows."""

    table: pa.Table
    dropped: int = 0
    redacted: int = 0
    found: Mapping[bytes, tuple[tuple[int, int], ...]] = field(default_factory=dict)
    """Subject hash -> (partition, offset) of each of its records in the file."""

    @property
    def changed(self) -> bool:
        """Whether any row was dropped or redacted."""
        return bool(self.dropped or self.redacted)


@dataclass
class _Records:
    """The columns of a table that erasure reads, as Python lists.

    Never the timestamps, which Python's datetime cannot hold beyond year 9999.
    """

    partitions: list[int]
    offsets: list[int]
    keys: list[bytes | None]
    values: list[bytes | None]
    headers: list[list[tuple[str, bytes | None]]]

    @classmethod
    def of(cls, table: pa.Table) -> _Records:
        column = table.column
        return cls(column("partition").to_pylist(), column("offset").to_pylist(),
                   column("key").to_pylist(), column("value").to_pylist(),
                   [[(h["key"], h["value"]) for h in hs] for hs in column("headers").to_pylist()])

    def hashes(self, spec: SubjectSpec, hmac_key: bytes) -> Iterator[set[bytes]]:
        """The keyed hashes of the subjects each record names."""
        for key, value, headers in zip(self.keys, self.values, self.headers, strict=True):
            yield {keyed_hash(hmac_key, s) for s in subjects_of(spec, key, value, headers)}


def erase_rows(table: pa.Table, spec: SubjectSpec, hashes: Collection[bytes],
               hmac_key: bytes) -> Erased:
    """``table`` without the records of the subjects ``hashes`` (dropped or redacted)."""
    records = _Records.of(table)
    found: dict[bytes, list[tuple[int, int]]] = {}
    matched = []
    for i, digests in enumerate(records.hashes(spec, hmac_key)):
        for digest in sorted(digests & set(hashes)):
            found.setdefault(digest, []).append((records.partitions[i], records.offsets[i]))
        if digests & set(hashes):
            matched.append(i)
    if not matched:
        return Erased(table)
    places = {h: tuple(p) for h, p in found.items()}
    if spec.action == "drop":
        mask = [True] * table.num_rows
        for i in matched:
            mask[i] = False
        return Erased(table.filter(pa.array(mask)), dropped=len(matched), found=places)
    for i in matched:
        records.keys[i], records.values[i], records.headers[i] = redact(
            spec, records.keys[i], records.values[i], records.headers[i])
    header_type = fmt.SCHEMA.field("headers").type
    redacted = (table.set_column(table.schema.get_field_index("key"), "key",
                                 pa.array(records.keys, pa.binary()))
                .set_column(table.schema.get_field_index("value"), "value",
                            pa.array(records.values, pa.binary()))
                .set_column(table.schema.get_field_index("headers"), "headers", pa.array(
                    [[{"key": k, "value": v} for k, v in hs] for hs in records.headers],
                    header_type)))
    return Erased(redacted.cast(fmt.SCHEMA), redacted=len(matched), found=places)


def id_pattern(raw_ids: Sequence[bytes]) -> re.Pattern[bytes] | None:
    """A pattern that finds any of ``raw_ids`` as a whole token in bytes.

    Not inside a longer word: ``cus_1`` is found in ``"cus_1"`` and ``cus_1@example.com``,
    not in ``cus_10``.
    """
    if not raw_ids:
        return None
    alternatives = b"|".join(re.escape(raw) for raw in sorted(raw_ids, key=len, reverse=True))
    return re.compile(rb"(?<![A-Za-z0-9_])(?:" + alternatives + rb")(?![A-Za-z0-9_])")


def leftovers(table: pa.Table, spec: SubjectSpec, hashes: Collection[bytes], hmac_key: bytes,
              raw_ids: Sequence[bytes] = ()) -> list[tuple[int, int]]:
    """(partition, offset) of every row that still names a subject (empty: verified).

    By keyed hash of the subject field, and by ``raw_ids`` anywhere in key, value or headers.
    """
    records = _Records.of(table)
    pattern = id_pattern(raw_ids)
    found = []
    wanted = set(hashes)
    for i, digests in enumerate(records.hashes(spec, hmac_key)):
        parts = [records.keys[i], records.values[i], *(v for _, v in records.headers[i])]
        if (digests & wanted) or (pattern is not None and any(
                part is not None and pattern.search(part) for part in parts)):
            found.append((records.partitions[i], records.offsets[i]))
    return found


def offsets_kept(before: pa.Table, after: pa.Table, erased: Erased) -> bool:
    """Whether ``after`` holds exactly ``before``'s offsets less the dropped records.

    Checked before any older version is deleted: nobody else's records may go.
    """
    gone = {at for places in erased.found.values() for at in places} \
        if erased.dropped else set()
    want = [(p, o) for p, o in zip(before.column("partition").to_pylist(),
                                    before.column("offset").to_pylist(), strict=True)
            if (p, o) not in gone]
    have = list(zip(after.column("partition").to_pylist(), after.column("offset").to_pylist(),
                    strict=True))
    return have == want
