"""A replay run: prepare (checkpoint, files, preflight), then produce, then report.

Exactly once in the target (for read_committed consumers): every transaction carries the
records and their checkpoint (eventvault.replay.producer). The producer's transactional id is
``eventvault-replay-<id>``, so a resumed run fences (and aborts) the killed run's open
transaction and goes on from the committed checkpoint.
"""

from __future__ import annotations

import time
from typing import Any

from eventvault.observe import ProgressBar
from eventvault.replay.errors import PreflightError, RejectedError
from eventvault.replay.plan import Plan
from eventvault.replay.prepare import prepare, store_plan
from eventvault.replay.producer import Pacing, ReplayProducer
from eventvault.replay.report import build_report
from eventvault.replay.source import Source
from eventvault.settings import Settings
from eventvault.storage import open_storage


async def replay(settings: Settings, plan: Plan, *, resume: bool, dry_run: bool, force: bool,
                 pacing: Pacing) -> dict[str, Any]:
    """Run (or dry-run) ``plan``; return the report (also stored, unless a dry run)."""
    storage = open_storage(settings.storage)
    spec = settings.archive.event_time_spec(plan.selection.topic)
    source = Source(settings.storage, plan.selection, spec.field is None)
    try:
        prepared = await prepare(settings, plan, source, storage, force)
        transactions = prepared.checkpoint.transactions
        if dry_run:
            return build_report(storage, prepared, "dry-run", 0, 0.0, transactions)
        fatal = [f.message for f in prepared.findings if f.fatal]
        if fatal:
            raise PreflightError(f"replay refused: {fatal[0]}"
                                 + (f" (and {len(fatal) - 1} more)" if len(fatal) > 1 else ""),
                                 findings=fatal)
        if not resume:
            store_plan(storage, plan)
        started = time.monotonic()
        total = sum(s.records for s in prepared.summary)
        with ProgressBar(description="replay", total=total) as bar:
            producer = ReplayProducer(settings, prepared, storage, source, spec, pacing, bar)
            try:
                await producer.run()
            except RejectedError:
                build_report(storage, prepared, "failed", producer.delivered,
                             time.monotonic() - started, producer.transactions)
                raise
        return build_report(storage, prepared, "completed", producer.delivered,
                            time.monotonic() - started, producer.transactions)
    finally:
        source.close()
