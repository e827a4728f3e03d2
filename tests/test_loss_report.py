"""The retention loss report counts each lost offset once per archiver.

A memory relief that gives up a rebuild rewinds the partition below offsets it had read; a
batch from before the rewind, or the rewind's own fetch reset to the log start, then meets the
same gap again. The report keeps a per-partition high-water of what it already reported.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from prometheus_client import REGISTRY

from eventvault.archiver.adoption import report_retention_loss
from eventvault.kafka import TopicPartition
from eventvault.storage.local import LocalStorage

LOST = "eventvault_records_lost_to_retention_total"


def test_a_gap_met_again_is_reported_once(tmp_path: Path) -> None:
    tp = TopicPartition(f"loss.once-{tmp_path.name}", 0)
    store = LocalStorage(tmp_path)
    reported: dict[TopicPartition, int] = {}
    labels = {"topic": tp.topic, "partition": "0"}

    def report(lower: int, upper: int) -> int:
        return asyncio.run(report_retention_loss(store, tp, lower, upper, (), when="test",
                                                 reported=reported))

    assert report(10, 50) == 40  # the jump a batch from before the rewind looked like
    assert report(10, 50) == 0  # the rewind's fetch reset to the same log start
    assert report(10, 60) == 10  # retention moved on meanwhile: only the new offsets
    assert report(70, 80) == 10
    assert REGISTRY.get_sample_value(LOST, labels) == 60
