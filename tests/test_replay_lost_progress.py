"""Replays whose group offsets Kafka lost (offsets.retention.minutes): --resume refuses.

Storage proves committed transactions (the report, the offset map, first-commit.json) that the
target cluster no longer has progress for; --resume then refuses in one line (exit 6) rather
than produce them again, and the recovery the message gives reaches exactly once.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from eventvault.replay.checkpoint import group_id
from tests.kafkautil import Rec, create_topic, delete_group
from tests.replayutil import (
    archived_topic,
    committed_transactions,
    kcat_read,
    map_files,
    replay,
    set_topic_config,
    source_and_target,
    start_replay,
    wait_until,
)

pytestmark = pytest.mark.integration


def test_resume_refuses_when_kafka_lost_the_progress(kafka_bootstrap: str,
                                                     tmp_path: Path) -> None:
    """Kafka deletes the replay group's offsets after offsets.retention.minutes: --resume
    then finds no progress, but storage shows committed transactions; it refuses in one line
    (exit 6) and produces nothing, where it used to replay everything again (item 2)."""
    url, archive = f"file://{tmp_path}/arch", tmp_path / "arch"
    records = [Rec(i % 2, f"k{i}".encode(), b"v", (), 1_767_225_600_000 + i) for i in range(40)]
    records[25] = Rec(1, None, b"no key", (), 1_767_225_600_025)  # partition 1, offset 12
    src = archived_topic(kafka_bootstrap, url, records, 2)
    dst = f"dst-{src}"
    create_topic(kafka_bootstrap, dst, 2, {"cleanup.policy": "compact"})
    env = {"EVENTVAULT_REPLAY__TRANSACTION_RECORDS": "10"}
    code, _, err = replay(kafka_bootstrap, url, "--topic", src, "--target", dst, cwd=tmp_path,
                          env=env)
    assert code == 7, err
    replay_id = err.strip().splitlines()[-1].rsplit(" ", 1)[-1]
    delivered = kcat_read(kafka_bootstrap, dst)
    assert len(delivered) == 30
    set_topic_config(kafka_bootstrap, dst, {"cleanup.policy": "delete", "retention.ms": "-1"})
    delete_group(kafka_bootstrap, group_id(replay_id))
    assert committed_transactions(kafka_bootstrap, replay_id, dst, 2) == 0
    report_file = archive / "_replays" / replay_id / "report.json"
    for proof in ("the report (3 transactions)", "the offset map (files 1..3)"):
        code, _, err = replay(kafka_bootstrap, url, "--resume", replay_id, cwd=tmp_path, env=env)
        assert code == 6, (proof, err)
        assert err.count("\n") == 1, err
        assert f"replay {replay_id} committed at least " in err, err
        assert "holds progress for 0" in err, err
        assert kcat_read(kafka_bootstrap, dst) == delivered, proof
        assert f"whose eventvault.replay.id is {replay_id}" in err, err  # the target's truth
        assert "read_committed" in err, err
        report_file.unlink(missing_ok=True)  # the offset map alone proves transactions 1 and 2
    # the procedure the message and docs/REPLAY.md give: the next source offset per source
    # partition from the target's committed records of this replay, then a new replay
    mine = [r for r in delivered if r.header("eventvault.replay.id") == replay_id]
    last: dict[int, int] = {}
    for record in mine:
        p, o = record.source
        last[p] = max(last.get(p, -1), o)
    starts = [arg for p, o in sorted(last.items()) for arg in ("--from-offset", f"{p}:{o + 1}")]
    code, _, err = replay(kafka_bootstrap, url, "--topic", src, "--target", dst, *starts,
                          cwd=tmp_path, env=env)
    assert code == 0, err
    target = kcat_read(kafka_bootstrap, dst)
    assert sorted(r.source for r in target) == sorted(
        (i % 2, i // 2) for i in range(len(records)))


def test_resume_refuses_when_kafka_lost_the_progress_of_its_first_transaction(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    """Killed after committing its first transaction, before a second map file or a report
    exist: storage still proves the commit, so --resume after the group's offsets are gone
    refuses instead of producing that transaction again."""
    url, archive = f"file://{tmp_path}/arch", tmp_path / "arch"
    src, dst, env = source_and_target(kafka_bootstrap, url, 200, 2, transaction_records=10)
    proc = start_replay(["--topic", src, "--target", dst, "--rate", "5"], env, tmp_path)
    try:
        wait_until("the plan", lambda: any(archive.glob("_replays/*/plan.json")))
        replay_id = next(archive.glob("_replays/*/plan.json")).parent.name
        wait_until("the first commit",
                   lambda: committed_transactions(kafka_bootstrap, replay_id, dst, 2) == 1)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert map_files(archive, replay_id) == 1  # one map file, no report: only the first commit
    assert not (archive / "_replays" / replay_id / "report.json").exists()
    delivered = kcat_read(kafka_bootstrap, dst)
    assert len(delivered) == 10
    delete_group(kafka_bootstrap, group_id(replay_id))
    code, _, err = replay(kafka_bootstrap, url, "--resume", replay_id, cwd=tmp_path, env=env)
    assert code == 6, err
    assert f"replay {replay_id} committed at least 1 transactions" in err, err
    assert kcat_read(kafka_bootstrap, dst) == delivered
