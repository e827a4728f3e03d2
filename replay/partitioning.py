"""Where each replayed record goes in the target topic: pure functions.

``preserve`` keeps the source partition, ``map`` follows ``--partition-map``, and ``key`` is
Kafka's default partitioner for keyed records (murmur2, as a Java producer places them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from eventvault.replay.plan import Target


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
