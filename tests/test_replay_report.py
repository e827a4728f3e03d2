"""The replay report's write: a compare-and-set that keeps a later run's report (issue 10,
review item 4). Local storage, no broker: the interleavings are made by hand."""

from __future__ import annotations

import json
from pathlib import Path

from eventvault.layout import replay_key
from eventvault.query.selection import Selection
from eventvault.replay.checkpoint import Checkpoint
from eventvault.replay.plan import Plan, Target
from eventvault.replay.prepare import Prepared
from eventvault.replay.report import build_report
from eventvault.storage.local import LocalStorage

PLAN = Plan("r1", Selection("src", None, None, (), (), (), (), None), Target("dst"),
            "2026-12-01T00:00:00+00:00")
PREPARED = Prepared(PLAN, None, {}, {}, [], [], Checkpoint())
KEY = replay_key("r1", "report.json")


def _stored(storage: LocalStorage) -> dict[str, object]:
    stored: dict[str, object] = json.loads(storage.get(KEY))
    return stored


class _WinnerWritesFirst(LocalStorage):
    """Local storage where the winning run (epoch 5) stores its report just before the
    fenced run's conditional write reaches storage: inside the compare-and-set's window."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.raced = False

    def _race(self) -> None:
        if not self.raced:
            self.raced = True
            build_report(LocalStorage(self.root), PREPARED, "completed", 10, 1.0, 2, epoch=5)

    def create(self, key: str, data: bytes) -> bool:
        """Race, then create."""
        self._race()
        return super().create(key, data)

    def replace(self, key: str, data: bytes, etag: str) -> str | None:
        """Race, then replace."""
        self._race()
        return super().replace(key, data, etag)


def test_a_fenced_runs_late_report_keeps_the_winners(tmp_path: Path) -> None:
    """The fenced run (epoch 4) saw no later report, then the winner stored "completed":
    the fenced run's "failed" report no longer replaces it; a later run's report does."""
    storage = LocalStorage(tmp_path)
    build_report(storage, PREPARED, "completed", 10, 1.0, 2, epoch=5)
    build_report(storage, PREPARED, "failed", 3, 1.0, 1, epoch=4)
    assert (_stored(storage)["status"], _stored(storage)["producer_epoch"]) == ("completed", 5)
    build_report(storage, PREPARED, "failed", 0, 1.0, 2, epoch=6)
    assert (_stored(storage)["status"], _stored(storage)["producer_epoch"]) == ("failed", 6)


def test_the_report_write_rechecks_inside_the_compare_and_set(tmp_path: Path) -> None:
    """The winner's report lands between the fenced run's read and its write, with no report
    before and with an older one: the write fails its condition, reads again, keeps it."""
    for earlier in (None, 3):
        root = tmp_path / f"from-{earlier}"
        root.mkdir()
        if earlier is not None:
            build_report(LocalStorage(root), PREPARED, "failed", 1, 1.0, 1, epoch=earlier)
        storage = _WinnerWritesFirst(root)
        build_report(storage, PREPARED, "failed", 3, 1.0, 1, epoch=4)
        assert storage.raced
        assert (_stored(storage)["status"], _stored(storage)["producer_epoch"]) == (
            "completed", 5), earlier
