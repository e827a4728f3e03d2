"""Encoding and writing decided files in a thread pool, away from the consumer loop.

zstd compression and the uploads release the GIL. Worker processes were measured too and were
slower on two cores: pickling the buffers costs more than the GIL contention it removes
(bench/RESULTS.md).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from archiver import format as fmt
from archiver.batching import Roll
from archiver.layout import FileRef
from archiver.storage import Storage


def write_file(storage: Storage, roll: Roll, zstd_level: int) -> int:
    """Encode and store one decided file; returns bytes written (0 when kept as it was)."""
    cut = roll.cut
    key = FileRef(roll.topic, cut.hour, roll.partition, cut.first, cut.last).key
    if roll.rebuilt and (not len(roll.cols) or storage.exists(key)):
        return 0  # the file of a recorded cut that is already durable stays as written
    data = fmt.encode(fmt.to_table(roll.cols), zstd_level=zstd_level, metadata={
        "topic": roll.topic, "partition": str(roll.partition),
        "first_offset": str(cut.first), "last_offset": str(cut.last)})
    storage.put(key, data)
    return len(data)


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
