"""What ``eventvault verify`` reads of the archive: footers and the offset column, no values.

Each file is opened through :meth:`Storage.reader`, which fetches only the byte ranges pyarrow
asks for: the footer (schema, row-group statistics of ``partition`` and ``timestamp``) and the
``offset`` column chunks. Files are read by a small thread pool. A file that is gone when it is
read (retention or erasure deleted it after the listing) is left out, not an error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from eventvault import format as fmt
from eventvault.errors import StorageError
from eventvault.layout import FileRef, parse_file_key, topic_prefix
from eventvault.storage import Storage
from eventvault.verify.compare import FileFacts, Interval

READERS = 8
"""Files read at once (each is a few ranged GETs on S3)."""


def archive_keys(storage: Storage, topic: str) -> tuple[list[tuple[str, FileRef]], list[str]]:
    """The archive files of ``topic`` with their parsed names, and the other keys found there."""
    files, others = [], []
    for key in storage.list(topic_prefix(topic)):
        ref = parse_file_key(key)
        if ref is None or ref.topic != topic:
            others.append(key)
        else:
            files.append((key, ref))
    return files, others


def scan_files(storage: Storage, files: list[tuple[str, FileRef]],
               done: Callable[[int], None]) -> Iterator[FileFacts | None]:
    """The facts of every file, in the order given; ``done(1)`` after each file.

    None in place of a file removed since the listing.
    """
    with ThreadPoolExecutor(READERS) as pool:
        for facts in pool.map(lambda item: read_facts(storage, *item), files):
            done(1)
            yield facts


def read_facts(storage: Storage, key: str, ref: FileRef) -> FileFacts | None:
    """Footer statistics and offsets of one file (a file that cannot be read says why).

    None when the file failed to read because it is no longer listed: removed meanwhile.
    """
    try:
        with storage.reader(key) as source:
            parquet = pq.ParquetFile(source)
            problem = _schema_problem(parquet.schema_arrow)
            offsets = parquet.read(columns=["offset"]).column("offset")
            timestamps = _min_max(parquet, "timestamp")
            partitions = _min_max(parquet, "partition")
    except StorageError:
        if key not in set(storage.list(key)):  # listed again: deleted since the listing
            return None
        raise
    except (OSError, ValueError, KeyError, pa.ArrowException) as exc:
        return FileFacts(key, ref, problem=f"{type(exc).__name__}: {exc}", readable=False)
    values = offsets.combine_chunks() if offsets.num_chunks != 1 else offsets.chunk(0)
    return FileFacts(key, ref, len(values), _runs(values), _ordered(values), partitions,
                     timestamps, problem)


def _schema_problem(schema: pa.Schema) -> str | None:
    """What differs from the archive schema, or None."""
    found = schema.remove_metadata()
    if found.equals(fmt.SCHEMA):
        return None
    wanted = {f.name: f for f in fmt.SCHEMA}
    differing = [f"{f.name}: {f.type}{'' if f.nullable else ' not null'}" for f in found
                 if wanted.get(f.name) != f]
    absent = [name for name in wanted if name not in found.names]
    parts = [f"unexpected {', '.join(differing)}"] if differing else []
    parts += [f"no {', '.join(absent)}"] if absent else []
    return "schema differs: " + "; ".join(parts or ["field order"])


def _min_max(parquet: pq.ParquetFile, column: str) -> tuple[int, int] | None:
    """(min, max) of an integer-stored column from the row-group statistics; None if absent."""
    meta = parquet.metadata
    index = parquet.schema_arrow.get_field_index(column)
    if index < 0 or meta.num_row_groups == 0:
        return None
    lows, highs = [], []
    for group in range(meta.num_row_groups):
        stats = meta.row_group(group).column(index).statistics
        if stats is None or not stats.has_min_max:
            return None
        lows.append(int(stats.min_raw))
        highs.append(int(stats.max_raw))
    return min(lows), max(highs)


def _ordered(offsets: pa.Array) -> bool:
    """Whether the offsets strictly increase."""
    if len(offsets) < 2:
        return True
    steps = pc.subtract(offsets[1:], offsets[:-1])
    return bool(pc.min(steps).as_py() > 0)


def _runs(offsets: pa.Array) -> tuple[Interval, ...]:
    """The distinct offsets as intervals of consecutive offsets."""
    if len(offsets) == 0:
        return ()
    distinct = pc.unique(offsets)
    ordered = pc.take(distinct, pc.sort_indices(distinct))
    if len(ordered) == 1:
        only = ordered[0].as_py()
        return ((only, only),)
    steps = pc.subtract(ordered[1:], ordered[:-1])
    breaks = pc.indices_nonzero(pc.not_equal(steps, 1)).to_pylist()
    starts = [0, *(b + 1 for b in breaks)]
    ends = [*breaks, len(ordered) - 1]
    firsts = pc.take(ordered, pa.array(starts)).to_pylist()
    lasts = pc.take(ordered, pa.array(ends)).to_pylist()
    return tuple(zip(firsts, lasts, strict=True))
