"""``eventvault archive --resume-from-archive``: progress rebuilt from the archive itself.

When the group's committed offsets are gone (expired after ``offsets.retention.minutes``, or
deleted), the archive still knows how far each partition got. For each partition that has
files but no committed offset, the offset after its highest archived offset is committed,
with no recorded cuts, and only if ``eventvault verify`` finds nothing wrong with the
partition but the missing offsets: no record Kafka holds below that offset is missing from the
archive, no offset is in two files, every file is readable and where its name says. Records
after that offset are in no file, so archiving them from there cannot duplicate any.
"""

from __future__ import annotations

import asyncio
import re

from eventvault import kafka, observe
from eventvault.errors import ArchiveStateError
from eventvault.kafka import TopicPartition
from eventvault.progress import Progress, encode_progress, spec_hash
from eventvault.settings import Settings
from eventvault.storage import Storage
from eventvault.verify.check import verify

_LOST = "group_offsets_missing"


def resume_from_archive(settings: Settings, storage: Storage) -> dict[str, int]:
    """Commit the resume offset of every partition whose progress was lost; name -> offset."""
    config = settings.archive
    topics = config.topics or [t for t in storage.topics()
                               if re.fullmatch(config.topics_regex or "", t)]
    report = verify(settings, storage, topics, config.group_id)
    offsets: dict[TopicPartition, tuple[int, str]] = {}
    for part in report.partitions:
        if part.committed is not None or part.archived is None:
            continue
        name = f"{part.topic}[{part.partition}]"
        wrong = sorted({d.kind for d in part.defects} - {_LOST})
        if wrong:
            raise ArchiveStateError(
                f"cannot resume {name} from the archive: `eventvault verify` finds "
                f"{', '.join(wrong)}; repair the archive first", partition=name)
        resume = part.archived[1] + 1
        hashed = spec_hash(config.event_time_spec(part.topic).fingerprint)
        offsets[TopicPartition(part.topic, part.partition)] = (
            resume, encode_progress(Progress(resume, (), hashed)))
    if offsets:
        asyncio.run(kafka.commit_offsets(settings.kafka, config.group_id, offsets))
    restored = {f"{tp.topic}[{tp.partition}]": offset for tp, (offset, _) in offsets.items()}
    observe.event("progress restored from the archive", group_id=config.group_id,
                  partitions=restored)
    return restored
