"""The replay report's write: a compare-and-set that keeps a later run's report (issue 10,
review item 4). Local storage, no broker: the interleavings are made by hand."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from eventvault.layout import replay_key
from eventvault.query.selection import Selection
from eventvault.replay.checkpoint import Checkpoint
from eventvault.replay.plan import Plan, Target
from eventvault.replay.prepare import Prepared
from eventvault.replay.report import build_report
from eventvault.storage.local import LocalStorage
from tests.kafkautil import Rec, create_topic
from tests.replayutil import archived_topic, assert_offset_map_matches, kcat_read, replay

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


@pytest.mark.integration
def test_the_committed_map_file_wins_over_a_higher_epoch(kafka_bootstrap: str,
                                                         tmp_path: Path) -> None:
    """After transactional.id.expiration.ms a new producer id starts again at epoch 0, so
    an aborted map file of an earlier producer id can carry a higher epoch than the committed
    one of its number: the report takes the file the commit marker names, not the highest
    epoch (review item 3); a marker its run died before writing comes from the checkpoint."""
    url, archive = f"file://{tmp_path}/arch", tmp_path / "arch"
    records = [Rec(i % 2, f"k{i}".encode(), b"v", (), 1_767_225_600_000 + i) for i in range(40)]
    src = archived_topic(kafka_bootstrap, url, records, 2)
    dst = f"dst-{src}"
    create_topic(kafka_bootstrap, dst, 2)
    env = {"EVENTVAULT_REPLAY__TRANSACTION_RECORDS": "10"}
    code, report, err = replay(kafka_bootstrap, url, "--topic", src, "--target", dst,
                               cwd=tmp_path, env=env)
    assert code == 0, err
    assert report is not None
    assert report["transactions"] == 4
    replay_id = report["replay_id"]
    folder = archive / "_replays" / replay_id
    first = folder / report["offset_map_files"][0]
    # an aborted transaction 2 of an earlier producer id, at epoch 3, holding other rows
    shutil.copy(first, folder / "offsets" / "00000002-00003.parquet")
    (folder / "committed" / "00000004.json").unlink(missing_ok=True)  # killed after commit 4
    code, report, err = replay(kafka_bootstrap, url, "--resume", replay_id, cwd=tmp_path,
                               env=env)
    assert code == 0, err
    assert report is not None
    assert "offsets/00000002-00003.parquet" not in report["offset_map_files"], report
    assert report["records"] == 40
    assert (folder / "committed" / "00000004.json").exists()
    assert_offset_map_matches(archive, report, kcat_read(kafka_bootstrap, dst),
                              kcat_read(kafka_bootstrap, src))
