"""Which archive files maintenance may change without racing the archiver. Pure, plus one read.

The archiver writes a file only for a cut it has recorded in its group's committed progress,
and only ever creates files (eventvault.archiver.encoder). A file wholly below a partition's
committed resume offset and outside its recorded cuts is therefore finished: the archiver will
never write that name again. Erasure and retention touch only such files; the rest is left for
a later run, which finds them finished.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from eventvault import kafka
from eventvault.kafka import TopicPartition
from eventvault.layout import FileRef
from eventvault.progress import Progress, decode_progress
from eventvault.settings import Settings


@dataclass(frozen=True)
class Guard:
    """The archiver's committed progress of one topic's partitions (absent: never committed)."""

    topic: str
    progress: Mapping[int, Progress] = field(default_factory=dict)

    def why_not(self, ref: FileRef) -> str | None:
        """Why ``ref`` may still be written by the archiver (None: it is finished)."""
        progress = self.progress.get(ref.partition)
        if progress is None:
            return None  # nothing recorded: the archiver writes only new names from here on
        if ref.last_offset >= progress.offset:
            return (f"partition {ref.partition} is committed up to offset {progress.offset}, "
                    f"the file ends at {ref.last_offset}")
        for cut in progress.cuts:
            overlaps = cut.first <= ref.last_offset and ref.first_offset <= cut.last
            if cut.hour == ref.hour and overlaps:
                return f"the archiver recorded the cut {cut.first}-{cut.last} of this hour"
        return None

    def split(self, refs: Iterable[FileRef]) -> tuple[list[FileRef], dict[FileRef, str]]:
        """(finished files, {file: why it must wait})."""
        finished, waiting = [], {}
        for ref in refs:
            reason = self.why_not(ref)
            if reason is None:
                finished.append(ref)
            else:
                waiting[ref] = reason
        return finished, waiting


async def read_guard(settings: Settings, topic: str, partitions: Iterable[int]) -> Guard:
    """The committed progress of the archiver's group (``archive.group_id``) on ``topic``."""
    committed = await kafka.committed_offsets(
        settings.kafka, settings.archive.group_id,
        [TopicPartition(topic, p) for p in sorted(set(partitions))])
    return Guard(topic, {tp.partition: decode_progress(offset, metadata)
                         for tp, (offset, metadata) in committed.items()})
