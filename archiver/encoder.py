"""Encoding and writing decided files in a thread pool, away from the consumer loop.

zstd compression and the uploads release the GIL. Worker processes were measured too and were
slower on two cores: pickling the buffers costs more than the GIL contention it removes
(bench/RESULTS.md). :class:`Uploads` tracks the files in flight and the memory they hold.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

from eventvault import format as fmt
from eventvault import observe
from eventvault.archiver.batching import PartitionState, Roll
from eventvault.errors import AccessDenied
from eventvault.layout import FileRef
from eventvault.storage import Storage


def write_file(storage: Storage, roll: Roll, zstd_level: int) -> int:
    """Encode and store one decided file; returns bytes written (0 when kept as it was).

    A file is only ever created, never replaced: an object already at its name (a recorded
    cut's file written before a crash, perhaps rewritten by erasure since) stays as it is.
    """
    cut = roll.cut
    key = FileRef(roll.topic, cut.hour, roll.partition, cut.first, cut.last).key
    if roll.rebuilt and not len(roll.cols):
        return 0  # a recorded cut whose records are all gone (compaction): no file
    if roll.rebuilt and _known(storage, key):
        _rebuilt(roll, key, already_written=True)
        return 0  # the file of a recorded cut that is already durable stays as written
    data = fmt.encode(fmt.to_table(roll.cols), zstd_level=zstd_level, metadata={
        "topic": roll.topic, "partition": str(roll.partition),
        "first_offset": str(cut.first), "last_offset": str(cut.last)})
    created = storage.create(key, data)
    if roll.rebuilt:
        _rebuilt(roll, key, already_written=not created)
    return len(data) if created else 0


def _known(storage: Storage, key: str) -> bool:
    """Whether an object is known to be at ``key``.

    S3 answers a HEAD of a missing key with 403 to a role without ``s3:ListBucket``: that is
    "not known", and the conditional create that follows settles it (a real denial fails
    there, as a StorageError).
    """
    try:
        return storage.exists(key)
    except AccessDenied:
        return False


def _rebuilt(roll: Roll, key: str, *, already_written: bool) -> None:
    """Log a recorded cut rebuilt after a restart: its file found written, or written now."""
    observe.event("recorded cut rebuilt", topic=roll.topic, partition=roll.partition, file=key,
                  records=len(roll.cols), already_written=already_written)


def _retrieved(future: asyncio.Future[int]) -> None:
    if not future.cancelled():
        future.exception()


class Writer:
    """Runs :func:`write_file` for rolls on ``concurrency`` threads."""

    def __init__(self, storage: Storage, zstd_level: int, concurrency: int) -> None:
        self.storage = storage
        self.zstd_level = zstd_level
        self.pool = ThreadPoolExecutor(concurrency, "eventvault-upload")

    def submit(self, roll: Roll) -> asyncio.Future[int]:
        """Start writing ``roll``'s file; the future gives the bytes written."""
        return asyncio.get_running_loop().run_in_executor(
            self.pool, write_file, self.storage, roll, self.zstd_level)

    def close(self) -> None:
        """Wait for running writes and stop the threads."""
        self.pool.shutdown(wait=True, cancel_futures=True)


class Uploads:
    """Files being encoded and written, and the memory they hold meanwhile."""

    def __init__(self, storage: Storage, zstd_level: int, concurrency: int) -> None:
        self.writer = Writer(storage, zstd_level, concurrency)
        self.limit = 2 * concurrency
        self.inflight: dict[asyncio.Future[int], tuple[PartitionState, Roll, int]] = {}
        self.held_bytes = 0

    def __len__(self) -> int:
        return len(self.inflight)

    @property
    def full(self) -> bool:
        """Whether as many files are in flight as may be (twice the upload threads)."""
        return len(self.inflight) >= self.limit

    def start(self, state: PartitionState, roll: Roll) -> None:
        """Start writing the file of ``roll``, a decided cut of ``state``'s partition."""
        future = self.writer.submit(roll)
        # Its error is raised by finished(); a run that ends on an earlier error drops this
        # future, and asyncio would print it as "Future exception was never retrieved".
        future.add_done_callback(_retrieved)
        # While a file is encoded, its records, the Arrow table and the Parquet bytes
        # coexist: count it at 2.5 times its buffered size.
        held = roll.nbytes * 5 // 2
        self.inflight[future] = (state, roll, held)
        self.held_bytes += held

    async def wait(self) -> None:
        """Wait until at least one file is written (or failed)."""
        if self.inflight:
            await asyncio.wait(self.inflight, return_when=asyncio.FIRST_COMPLETED)

    def finished(self) -> Iterator[tuple[PartitionState, Roll, int | BaseException]]:
        """Take the files done so far, one by one: (state, roll, bytes written or the error).

        A failed write gives its error: the caller ends the run (or, stopping, counts it),
        and progress stays consistent because a file whose write failed is never marked
        durable.
        """
        for future in [f for f in self.inflight if f.done()]:
            entry = self.inflight.pop(future, None)
            if entry is None:
                continue  # taken by the rebalance listener meanwhile
            state, roll, held = entry
            self.held_bytes -= held
            error = future.exception()
            yield state, roll, error if error is not None else future.result()

    def partitions(self) -> set[tuple[str, int]]:
        """(topic, partition) of every file in flight."""
        return {(roll.topic, roll.partition) for _, roll, _ in self.inflight.values()}

    def close(self) -> None:
        """Wait for running writes and stop the threads."""
        self.writer.close()
