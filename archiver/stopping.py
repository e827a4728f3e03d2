"""Stopping on SIGTERM/SIGINT: at once, however S3 is doing, and never past what is durable.

The first signal stops the loop and makes the storage's retry loops give up at their next wait
(eventvault.storage.abandon_retries): files still in flight then fail, are not marked durable,
and the last commit covers only files that were written. A second signal exits the process
on the spot (status 128 + signal), as a kill would: the committed progress was consistent at
every commit, so nothing is lost or duplicated (docs/EXACTLY_ONCE.md). Kafka's waits are
bounded the same way (:class:`KafkaWaits`): an unresponsive broker holds a stopping archiver
for about :data:`STOP_KAFKA_SECONDS`, not for aiokafka's endless commit retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

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


T = TypeVar("T")
STOP_KAFKA_SECONDS = 5.0
"""How long the Kafka requests of stopping (commits, a loss check, the clients' stops) may take
in all, from the first of them (or from the signal, for those in flight then)."""


class KafkaWaits:
    """Kafka waits that have no limit while running and share one once stopping has begun.

    aiokafka retries a commit without end and waits a request timeout (40 s) for each answer,
    so an unresponsive broker would hold a stopping archiver for as long. Each wait runs in
    :meth:`bounded`; :meth:`bound_all` (at the signal) gives the waits in flight the limit.
    The first wait that runs out sets ``unresponsive``: the archiver then sends no more
    commits, and the next run resumes from the last one that was accepted.
    """

    def __init__(self, stopping: Callable[[], bool]) -> None:
        self._stopping = stopping
        self._deadline: float | None = None  # time.monotonic() of the shared limit
        self._waits: set[asyncio.Timeout] = set()
        self.unresponsive = False

    def limit(self) -> float | None:
        """Seconds a Kafka wait may still take (None: not stopping, so no limit)."""
        if not self._stopping():
            return None
        now = time.monotonic()
        if self._deadline is None:
            self._deadline = now + STOP_KAFKA_SECONDS
        return max(0.5, self._deadline - now)

    def bound_all(self) -> None:
        """Stopping has begun: the waits in flight get the limit too."""
        waits = [wait for wait in self._waits if not wait.expired()]
        if waits and (limit := self.limit()) is not None:
            deadline = asyncio.get_running_loop().time() + limit
            for wait in waits:
                wait.reschedule(deadline)

    @contextlib.asynccontextmanager
    async def bounded(self) -> AsyncIterator[asyncio.Timeout]:
        """A Kafka wait: TimeoutError once stopping and past the limit (see ``expired()``)."""
        async with asyncio.timeout(None) as wait:
            limit = self.limit()
            if limit is not None:
                wait.reschedule(asyncio.get_running_loop().time() + limit)
            self._waits.add(wait)
            try:
                yield wait
            finally:
                self._waits.discard(wait)

    async def attempt(self, what: str, call: Callable[[], Awaitable[T]],
                      **attributes: object) -> T | None:
        """``await call()`` within :meth:`bounded`; None if stopping gave up on ``what``."""
        try:
            async with self.bounded() as wait:
                return await call()
        except TimeoutError:
            if not wait.expired():
                raise
            self.gave_up(what, **attributes)
            return None

    def gave_up(self, what: str, **attributes: object) -> None:
        """Record that stopping gave up on Kafka (one WARNING line for the whole stop)."""
        if not self.unresponsive:
            self.unresponsive = True
            observe.event("stopping: Kafka did not answer in time; no more commits, the next "
                          "run resumes from the last accepted one", logging.WARNING,
                          seconds=STOP_KAFKA_SECONDS, waiting_for=what, **attributes)
