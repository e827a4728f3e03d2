"""Named points in the archiver where a test can make it kill, stop or delay itself.

Fault tests must aim at the windows the exactly-once argument is about (a file durable but its
offset not yet committed, an idle roll in progress, a rebalance while the loop waits), not only
at random moments, and must prove each window was hit. ``archive.fault_points`` maps a point to
an action: ``kill`` (SIGKILL itself, at the first hit or ``kill:N`` at the N-th), ``stop``
(SIGSTOP itself: a zombie until SIGCONT) or ``sleep:SECONDS`` (widen the window). Every hit
that acts is logged first as ``fault point`` with the point's fields, so a test can tell from the
log which window it hit. Empty (the default), every point is one dictionary lookup.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import Counter
from collections.abc import Mapping
from typing import Any

from eventvault import observe
from eventvault.settings import FaultPoint

# The points (eventvault.settings.FaultPoint):
# - file-durable: a file was written, before any commit covers it;
# - idle-intent: the intent of an idle-timer roll is committed, its upload not started;
# - intent-committed: any intent committed, its uploads not started;
# - reap-waited: an upload finished, not yet collected;
# - position-read: a partition's position was read (rebuilt cuts);
# - loss-checked: a jump in a partition's offsets was compared with the log start.


class FaultPoints:
    """The configured actions, and how often each point was reached."""

    def __init__(self, actions: Mapping[FaultPoint, str]) -> None:
        self.actions: dict[str, str] = {str(point): act for point, act in actions.items()}
        self.hits: Counter[str] = Counter()

    async def reach(self, point: str, **fields: Any) -> None:
        """Act as configured at ``point`` (nothing if it has no action)."""
        action = self.actions.get(point)
        if action is None:
            return
        self.hits[point] += 1
        kind, _, argument = action.partition(":")
        if kind == "sleep":
            observe.event("fault point", point=point, action=action, **fields)
            await asyncio.sleep(float(argument))
            return
        if self.hits[point] != int(argument or 1):
            return
        observe.event("fault point", point=point, action=action, **fields)
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL if kind == "kill" else signal.SIGSTOP)
