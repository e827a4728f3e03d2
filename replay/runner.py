"""A replay run: prepare (checkpoint, files, preflight), then produce, then report.

Exactly once in the target (for read_committed consumers): every transaction carries the
records and their checkpoint (eventvault.replay.producer). The producer's transactional id is
``eventvault-replay-<id>``. A run starts its producer first, which fences every earlier run
of the replay (a killed one, or one still producing) and aborts its open transaction, and only
then reads the committed checkpoint (a stable read): no earlier run can commit after it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from eventvault import kafka
from eventvault.observe import ProgressBar
from eventvault.replay.checkpoint import group_id
from eventvault.replay.errors import FencedError, PreflightError, ProgressLostError, RejectedError
from eventvault.replay.plan import Plan
from eventvault.replay.prepare import Prepared, archived_files, prepare, store_plan
from eventvault.replay.producer import Pacing, ReplayProducer, fencing_producer
from eventvault.replay.report import build_report, committed_in_storage, recover_marker
from eventvault.replay.source import Source
from eventvault.settings import Settings
from eventvault.storage import Storage, open_storage


async def replay(settings: Settings, plan: Plan, *, resume: bool, dry_run: bool, force: bool,
                 pacing: Pacing) -> dict[str, Any]:
    """Run (or dry-run) ``plan``; return the report (also stored, unless a dry run)."""
    kafka.quiet_internal_failures(asyncio.get_running_loop())
    storage = open_storage(settings.storage)
    spec = settings.archive.event_time_spec(plan.selection.topic)
    source = Source(settings.storage, plan.selection, spec.field is None)
    try:
        refs = archived_files(storage, plan.selection.topic)
        if dry_run:
            prepared = await prepare(settings, plan, source, refs, force, fenced=False)
            return build_report(storage, prepared, "dry-run", 0, 0.0,
                                prepared.checkpoint.transactions)
        # fence first, then read the progress: no earlier run can commit after the read
        kafka_producer = await fencing_producer(settings, plan.replay_id)
        try:
            prepared = await prepare(settings, plan, source, refs, force, fenced=True)
            return await _produce(settings, prepared, storage, source, pacing, kafka_producer,
                                  resume=resume)
        finally:
            await kafka_producer.stop()
    finally:
        source.close()


def _refuse_lost_progress(storage: Storage, prepared: Prepared) -> None:
    """Refuse to go on from progress that is behind what storage proves was committed."""
    plan, checkpoint = prepared.plan, prepared.checkpoint
    proven = committed_in_storage(storage, plan.replay_id)
    if checkpoint.transactions < proven:
        raise ProgressLostError(
            f"replay {plan.replay_id} committed at least {proven} transactions (its report and "
            f"offset map in storage) but group {group_id(plan.replay_id)} on "
            f"{plan.target.topic} holds progress for {checkpoint.transactions}: Kafka deleted "
            f"the group's offsets (offsets.retention.minutes after the last commit); resuming "
            f"would produce them again. Replay what is left as a new replay of the selection "
            f"with --from-offset P:N, N one past the highest eventvault.source.offset among "
            f"the target's read_committed records whose eventvault.replay.id is "
            f"{plan.replay_id} (not the offset map or report, which can be stale; see "
            f"docs/REPLAY.md)",
            replay_id=plan.replay_id, proven=proven, checkpoint=checkpoint.transactions)


async def _produce(settings: Settings, prepared: Prepared, storage: Storage, source: Source,
                   pacing: Pacing, kafka_producer: Any, *, resume: bool) -> dict[str, Any]:
    """Refuse what preflight refuses, then produce the rest and report."""
    plan = prepared.plan
    recover_marker(storage, plan.replay_id, prepared.checkpoint)
    _refuse_lost_progress(storage, prepared)
    fatal = [f.message for f in prepared.findings if f.fatal]
    if fatal:
        raise PreflightError.of(fatal)
    if not resume:
        store_plan(storage, plan)
    spec = settings.archive.event_time_spec(plan.selection.topic)
    started = time.monotonic()
    total = sum(s.records for s in prepared.summary)
    with ProgressBar(description="replay", total=total) as bar:
        producer = ReplayProducer(settings, prepared, storage, source, spec, pacing, bar,
                                  kafka_producer)

        def report(status: str) -> dict[str, Any]:
            return build_report(storage, prepared, status, producer.delivered,
                                time.monotonic() - started, producer.transactions,
                                producer.epoch)

        try:
            await producer.run()
        except RejectedError:
            report("failed")
            raise
        except FencedError:
            # fenced by a newer run: its report, once stored, is the one that counts (the
            # write is a compare-and-set that keeps a later run's report: see store_report)
            report("failed")
            raise
    return report("completed")
