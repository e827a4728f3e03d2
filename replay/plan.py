"""What a replay does, as pure functions over frozen dataclasses: no I/O here.

A :class:`Plan` (selection, target, options) is written to the archive storage when a replay
starts, so that ``--resume ID`` replays exactly the same selection. Which archive files a
selection needs, how overlapping files are grouped, where each record goes in the target,
the provenance headers and the progress kept in the target cluster are all decided here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from archiver.layout import FileRef, Hour

Partitioning = Literal["preserve", "key", "map"]
TimestampMode = Literal["original", "now"]
PROVENANCE = ("eventvault.replay.id", "eventvault.source.topic", "eventvault.source.partition",
              "eventvault.source.offset")
_US_PER_HOUR = 3_600_000_000


@dataclass(frozen=True)
class Selection:
    """Which archived records to replay.

    Times are µs since the epoch, ``end_us`` exclusive. Offset bounds apply to every selected
    partition (``None`` as partition) or to one; ``to`` is exclusive. ``where`` is a DuckDB
    predicate over the archive's columns (those of the query views).
    """

    topic: str
    start_us: int | None = None
    end_us: int | None = None
    partitions: tuple[int, ...] = ()
    from_offsets: tuple[tuple[int | None, int], ...] = ()
    to_offsets: tuple[tuple[int | None, int], ...] = ()
    keys: tuple[bytes, ...] = ()
    where: str | None = None

    def offset_range(self, partition: int) -> tuple[int, int | None]:
        """[first, end) offsets selected in ``partition`` (end None: unbounded)."""
        lo = max((o for p, o in self.from_offsets if p in (None, partition)), default=0)
        his = [o for p, o in self.to_offsets if p in (None, partition)]
        return lo, min(his) if his else None


@dataclass(frozen=True)
class Target:
    """Where and how records are produced."""

    topic: str
    partitioning: Partitioning = "preserve"
    partition_map: tuple[tuple[int, int], ...] = ()
    provenance: bool = True
    timestamp: TimestampMode = "original"


@dataclass(frozen=True)
class Plan:
    """One replay: its id, selection and target; stored as ``_replays/<id>/plan.json``."""

    replay_id: str
    selection: Selection
    target: Target
    created: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """The plan as JSON (keys as hex)."""
        data = asdict(self)
        data["selection"]["keys"] = [k.hex() for k in self.selection.keys]
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Plan:
        """The plan written by :meth:`to_json`."""
        data = json.loads(text)
        sel = data["selection"]
        selection = Selection(
            sel["topic"], sel["start_us"], sel["end_us"], tuple(sel["partitions"]),
            tuple((p, o) for p, o in sel["from_offsets"]),
            tuple((p, o) for p, o in sel["to_offsets"]),
            tuple(bytes.fromhex(k) for k in sel["keys"]), sel["where"])
        tgt = data["target"]
        target = Target(tgt["topic"], tgt["partitioning"],
                        tuple((s, t) for s, t in tgt["partition_map"]), tgt["provenance"],
                        tgt["timestamp"])
        return cls(data["replay_id"], selection, target, data["created"], data["options"])


def plan_key(replay_id: str, name: str) -> str:
    """Storage key of one of a replay's files (plan, report, offset maps)."""
    return f"_replays/{replay_id}/{name}"


def _hour_wanted(hour: Hour, sel: Selection, record_time: bool) -> bool:
    if hour is None or not record_time:
        return True  # the null partition, or hours of another clock: filtered per record
    start, end = hour * _US_PER_HOUR, (hour + 1) * _US_PER_HOUR
    return ((sel.start_us is None or end > sel.start_us)
            and (sel.end_us is None or start < sel.end_us))


def select_files(refs: Iterable[FileRef], sel: Selection,
                 record_time: bool) -> dict[int, list[FileRef]]:
    """The files that may hold selected records, by source partition, in offset order.

    ``record_time``: the topic's files are placed by record timestamp, so ``start``/``end``
    rule out whole hours.
    """
    out: dict[int, list[FileRef]] = {}
    for ref in refs:
        if ref.topic != sel.topic or (sel.partitions and ref.partition not in sel.partitions):
            continue
        lo, hi = sel.offset_range(ref.partition)
        if ref.last_offset < lo or (hi is not None and ref.first_offset >= hi):
            continue
        if _hour_wanted(ref.hour, sel, record_time):
            out.setdefault(ref.partition, []).append(ref)
    for files in out.values():
        files.sort(key=lambda r: (r.first_offset, r.last_offset))
    return dict(sorted(out.items()))


def clusters(files: Sequence[FileRef]) -> list[list[FileRef]]:
    """Groups of one partition's files whose offset ranges overlap (late records make them).

    Files of different groups never interleave, so groups are read one after the other and
    only a group of several files needs sorting by offset.
    """
    groups: list[list[FileRef]] = []
    end = -1
    for ref in sorted(files, key=lambda r: r.first_offset):
        if groups and ref.first_offset <= end:
            groups[-1].append(ref)
            end = max(end, ref.last_offset)
        else:
            groups.append([ref])
            end = ref.last_offset
    return groups


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash of ``data`` as Java's ``Utils.murmur2`` returns it (signed)."""
    m, mask = 0x5BD1E995, 0xFFFFFFFF
    h = (0x9747B28C ^ len(data)) & mask
    whole = len(data) // 4 * 4
    for i in range(0, whole, 4):
        k = int.from_bytes(data[i:i + 4], "little") * m & mask
        k = (k ^ (k >> 24)) * m & mask
        h = (h * m & mask) ^ k
    rest = data[whole:]
    if rest:
        h ^= int.from_bytes(rest, "little")
        h = h * m & mask
    h = (h ^ (h >> 13)) * m & mask
    h ^= h >> 15
    return h - (1 << 32) if h >= 1 << 31 else h


def partitioner(target: Target, count: int) -> Callable[[int, bytes | None], int]:
    """(source partition, key) -> target partition, for a target of ``count`` partitions.

    ``key`` mode is Kafka's default partitioner for keyed records (murmur2, as a Java producer
    places them); records without a key keep their source partition modulo ``count``, so that
    a resumed replay places them as the first attempt did.
    """
    if target.partitioning == "preserve":
        return lambda partition, _key: partition
    if target.partitioning == "map":
        mapping = dict(target.partition_map)
        return lambda partition, _key: mapping[partition]

    def by_key(partition: int, key: bytes | None) -> int:
        if key is None:
            return partition % count
        return (murmur2(key) & 0x7FFFFFFF) % count

    return by_key


def unmapped(target: Target, partitions: Iterable[int], count: int) -> list[str]:
    """Why source ``partitions`` cannot go to a target of ``count`` partitions (empty: fine)."""
    problems = []
    mapping = dict(target.partition_map)
    for p in partitions:
        if target.partitioning == "preserve" and p >= count:
            problems.append(f"source partition {p} has no target partition "
                            f"(the target has {count}; use --partitioning key or map)")
        if target.partitioning == "map":
            if p not in mapping:
                problems.append(f"source partition {p} is not in --partition-map")
            elif not 0 <= mapping[p] < count:
                problems.append(f"--partition-map sends {p} to {mapping[p]}, but the target "
                                f"has {count} partitions")
    return problems


def provenance(replay_id: str, topic: str, partition: int,
               offset: int) -> list[tuple[str, bytes]]:
    """Headers naming a replayed record's origin (added after its own headers)."""
    values = (replay_id, topic, str(partition), str(offset))
    return [(name, value.encode()) for name, value in zip(PROVENANCE, values, strict=True)]


_MAGIC = "evr1"


def encode_progress(seq: int, next_offsets: Mapping[int, int], target_partition: int,
                    target_count: int) -> str:
    """Commit metadata for one target partition.

    It holds the transaction number and the next source offset of the source partitions
    ``p`` with ``p % target_count == target_partition``.
    """
    mine = sorted((p, o) for p, o in next_offsets.items() if p % target_count == target_partition)
    return f"{_MAGIC}|{seq}|" + ";".join(f"{p}:{o}" for p, o in mine)


def decode_progress(metadata: Iterable[str]) -> tuple[int, dict[int, int]]:
    """(committed transactions, next source offset by source partition).

    Read from all target partitions' commit metadata; (0, {}) when nothing was committed.
    """
    seq, offsets = 0, {}
    for text in metadata:
        if not text.startswith(_MAGIC + "|"):
            continue
        _, number, entries = text.split("|", 2)
        seq = max(seq, int(number))
        for entry in filter(None, entries.split(";")):
            p, o = entry.split(":")
            offsets[int(p)] = int(o)
    return seq, offsets


RECORD_BYTES_SQL = ("coalesce(octet_length(key), 0) + coalesce(octet_length(value), 0) + "
                    "coalesce(list_sum(list_transform(headers, lambda h: "
                    "octet_length(encode(h.key)) + coalesce(octet_length(h.value), 0))), 0)")


def record_filter(sel: Selection, ranges: Mapping[int, tuple[int, int | None]],
                  record_time: bool) -> tuple[str, list[Any]]:
    """A WHERE clause (with parameters) over the view columns for the selected records.

    ``ranges``: [first, end) offsets still to replay, by source partition. Times filter the
    record timestamp when the topic's event time is the record timestamp; otherwise the
    caller filters by event time (see :func:`archiver.eventtime.event_time_us`).
    """
    spans = []
    for p, (lo, hi) in sorted(ranges.items()):
        bound = f' AND "offset" < {int(hi)}' if hi is not None else ""
        spans.append(f'(partition = {int(p)} AND "offset" >= {int(lo)}{bound})')
    where = ["(" + (" OR ".join(spans) or "false") + ")"]
    params: list[Any] = []
    if record_time and sel.start_us is not None:
        where.append("timestamp >= make_timestamp(?)")
        params.append(sel.start_us)
    if record_time and sel.end_us is not None:
        where.append("timestamp < make_timestamp(?)")
        params.append(sel.end_us)
    if sel.keys:
        where.append(f"key IN ({', '.join('?' * len(sel.keys))})")
        params += list(sel.keys)
    if sel.where:
        where.append(f"({sel.where})")
    return " AND ".join(where), params
