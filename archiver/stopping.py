"""Stopping on SIGTERM/SIGINT: at once, however S3 is doing, and never past what is durable.

The first signal stops the loop and makes the storage's retry loops give up at their next wait
(eventvault.storage.abandon_retries): files still in flight then fail, are not marked durable,
and the last commit covers only files that were written. A second signal exits the process
on the spot (status 128 + signal), as a kill would: the committed progress was consistent at
every commit, so nothing is lost or duplicated (docs/EXACTLY_ONCE.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable

from eventvault import observe


def on_signals(loop: asyncio.AbstractEventLoop, stop: Callable[[], None]) -> None:
    """Call ``stop`` at the first SIGTERM or SIGINT; exit at once at the second."""
    received: list[int] = []

    def handle(number: int) -> None:
        received.append(number)
        name = signal.Signals(number).name
        if len(received) == 1:
            observe.event("stopping", signal=name)
            stop()
            return
        observe.event("second signal: exiting now, without waiting for files in flight",
                      logging.WARNING, signal=name)
        sys.stderr.flush()
        os._exit(128 + number)

    for number in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(number, handle, number)
