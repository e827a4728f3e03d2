"""Owning partitions: adoption, revocation and progress commits, safe across rebalances.

aiokafka runs the rebalance listener in its coordinator task while the archiver's loop waits
in an ``await`` (an intent's commit, an upload, a position). The rule that keeps both sides
consistent: a partition is owned by the :class:`PartitionState` that is in ``states`` for it.

- Revocation takes the states out of ``states`` first, before it waits for anything: the loop
  stops touching them at once. It then waits for their files in flight and commits their last
  progress. Rolls the loop had decided for them are recorded in that progress as cuts whose
  files the new owner writes.
- Adoption installs a state only once it is complete, only for partitions still assigned, and
  only if no later revocation or adoption of the partition began meanwhile (``epochs``).
- After every ``await``, the loop acts on a partition only if ``owns(tp, state)`` still holds
  for the state it started with; commits are built from owned states only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Mapping
from typing import Any

from eventvault import kafka, kafka_commit, observe
from eventvault.archiver import adoption
from eventvault.archiver.adoption import partition_name
from eventvault.archiver.batching import Limits, PartitionState
from eventvault.archiver.stopping import KafkaWaits
from eventvault.errors import EventVaultError
from eventvault.kafka import TopicPartition
from eventvault.progress import Progress, encode_progress, spec_hash
from eventvault.settings import ArchiveSettings, KafkaSettings
from eventvault.storage import Storage


class Membership(kafka.RebalanceListener):  # type: ignore[misc]
    """The archiver's partitions, their states and committed progress (a mixin of it)."""

    archive_settings: ArchiveSettings
    kafka_settings: KafkaSettings
    storage: Storage
    limits: Limits
    once: bool
    consumer: Any
    stopping: asyncio.Event
    fatal: Exception | None

    def _init_membership(self) -> None:
        self.states: dict[TopicPartition, PartitionState] = {}
        self.epochs: Counter[TopicPartition] = Counter()
        self.ends: dict[TopicPartition, int] = {}
        self.done: set[TopicPartition] = set()
        self.dirty: set[TopicPartition] = set()
        self.blocked: set[TopicPartition] = set()
        self.committed: dict[TopicPartition, int] = {}
        self.reported_lost: dict[TopicPartition, int] = {}  # loss reported below, per partition
        self.kafka_waits = KafkaWaits(self._is_stopping)

    def _is_stopping(self) -> bool:
        return self.stopping.is_set()  # the run's event, made when it starts

    async def _drain(self, tps: set[TopicPartition] | None = None) -> None:
        raise NotImplementedError  # the archiver's: wait for the files of ``tps`` in flight

    def _adopted(self, tps: set[TopicPartition]) -> None:
        raise NotImplementedError  # the archiver's: report newly built states

    def owns(self, tp: TopicPartition, state: PartitionState | None) -> bool:
        """Whether ``state`` is still the one that owns ``tp`` (checked after every await)."""
        return state is not None and self.states.get(tp) is state

    def left(self, tp: TopicPartition, state: PartitionState | None, where: str) -> bool:
        """Whether ``tp`` left ``state`` during the wait at ``where`` (and log it if so)."""
        if self.owns(tp, state):
            return False
        observe.event("partition left while the loop waited", partition=partition_name(tp),
                      where=where)
        return True

    def _forget(self, tps: set[TopicPartition]) -> dict[TopicPartition, PartitionState]:
        """Take the states of ``tps`` out of ownership; the states that were owned."""
        taken = {}
        for tp in tps:
            self.epochs[tp] += 1
            self.done.discard(tp)
            self.blocked.discard(tp)
            state = self.states.pop(tp, None)
            if state is not None:
                taken[tp] = state
        return taken

    # -- progress --------------------------------------------------------------------------
    def _offsets_to_commit(self, states: Mapping[TopicPartition, PartitionState]
                           ) -> dict[TopicPartition, Any]:
        """The progress of ``states`` as commit offsets with metadata; updates the gauges."""
        offsets = {}
        assigned = self.consumer.assignment()
        for tp, state in states.items():
            progress = state.progress()
            offsets[tp] = kafka.OffsetAndMetadata(progress.offset, encode_progress(progress))
            observe.COMMITTED.labels(tp.topic, str(tp.partition)).set(progress.offset)
            highwater = self.consumer.highwater(tp) if tp in assigned else None
            if highwater is not None:
                observe.LAG.labels(tp.topic, str(tp.partition)).set(highwater - progress.offset)
        return offsets

    async def _commit(self, tps: set[TopicPartition], *, reset: bool = True) -> bool:
        """Commit the progress of the owned partitions among ``tps``; False if fenced.

        With ``reset``, fenced partitions then resume from what Kafka holds.
        """
        owned = {tp: self.states[tp] for tp in tps if tp in self.states}
        return await self._commit_states(owned, reset=reset)

    async def _commit_states(self, states: Mapping[TopicPartition, PartitionState], *,
                             reset: bool) -> bool:
        if self.kafka_waits.unresponsive:  # stopping gave up on Kafka: nothing more is sent
            return False
        # Decided now, while the states are owned: sent only in this generation (kafka_commit).
        generation = kafka_commit.generation_of(self.consumer)
        offsets = self._offsets_to_commit(states)
        if not offsets:
            return True
        observe.event("commit", logging.DEBUG, progress={
            partition_name(tp): om.metadata + f"@{om.offset}" for tp, om in offsets.items()})

        async def send() -> bool:
            await kafka_commit.commit_in_generation(self.consumer, offsets, generation)
            return True

        try:
            # Stopping with Kafka unresponsive, it is given up: what was committed before is
            # consistent (a file is written only after its cut was committed).
            if not await self.kafka_waits.attempt("commit", send, partitions=sorted(
                    partition_name(tp) for tp in offsets)):
                return False
        except kafka.COMMIT_REFUSED as exc:
            observe.event("commit refused", reason=str(exc) or type(exc).__name__,
                          reset=reset, partitions=[partition_name(tp) for tp in offsets])
            if reset and not self.stopping.is_set():  # stopping: nothing more to read
                await self._reset({tp for tp, st in states.items() if self.owns(tp, st)})
            return False
        self.dirty -= set(offsets)
        self.committed.update({tp: om.offset for tp, om in offsets.items()})
        return True

    async def _reset(self, tps: set[TopicPartition]) -> None:
        """Forget local state of ``tps`` and resume them from what Kafka holds."""
        self._forget(tps)
        still = tps & self.consumer.assignment()
        if still:
            await self._adopt(still)

    # -- the rebalance listener ------------------------------------------------------------
    async def _adopt(self, tps: set[TopicPartition]) -> None:
        """Build states of ``tps`` from committed progress (see the module's rule)."""
        for tp in tps:
            self.epochs[tp] += 1
        epochs = {tp: self.epochs[tp] for tp in tps}
        found = await adoption.committed_progress(self.kafka_settings,
                                                  self.archive_settings.group_id, tps)
        await adoption.refuse_lost_progress(self.storage, found, tps)
        starts, ends = await kafka.log_offsets(self.kafka_settings, sorted(tps),
                                               self.archive_settings.isolation_level)
        if self.once:
            self.ends.update({tp: o for tp, o in ends.items() if tp not in self.ends})
        built: dict[TopicPartition, PartitionState] = {}
        for tp in sorted(tps):
            hashed = spec_hash(self.archive_settings.event_time_spec(tp.topic).fingerprint)
            progress = found.get(tp, Progress(0, (), hashed))
            adoption.check_event_time_setting(tp, progress, hashed)
            start = starts.get(tp, 0)
            if tp in found and start > progress.offset:
                await adoption.report_retention_loss(self.storage, tp, progress.offset, start,
                                                     progress.cuts, when="adoption",
                                                     reported=self.reported_lost)
            built[tp] = PartitionState(tp.topic, tp.partition, progress, self.limits, hashed)
            built[tp].next_offset = max(progress.offset, start)  # a jump to it is no new loss
            if self.once:  # never stop inside a recorded cut (the first end seen may be in one)
                self.ends[tp] = max(self.ends.get(tp, 0), built[tp].needed_end())
        # Positions are set here by seek() alone, never by aiokafka's reset path, which raced
        # with offset lookups (seen: a position at the end offset with no record delivered).
        # Below the log start offset (retention) there is nothing to read.
        assigned = self.consumer.assignment()
        current = {tp for tp in built if self.epochs[tp] == epochs[tp] and tp in assigned}
        for tp in sorted(current):
            self.consumer.seek(tp, max(built[tp].resume, starts.get(tp, 0)))
            self.states[tp] = built[tp]
        if current != set(tps):
            observe.event("adoption overtaken by a rebalance",
                          partitions=sorted(map(partition_name, set(tps) - current)))
        self._adopted(current)

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """Forget revoked partitions at once, then finish their uploads and commit them."""
        mine = self._forget(set(revoked))
        if not mine:
            return
        try:  # a failed upload collected here ends the run (its cut stays in the last commit)
            await self._drain(set(mine))
        except Exception as exc:
            self._fail(exc)
            return
        with contextlib.suppress(kafka.AIOKafkaError):
            await self._commit_states(mine, reset=False)
        observe.event("partitions revoked", partitions=sorted(partition_name(tp) for tp in mine))

    def _fail(self, error: Exception) -> None:
        """End the run with ``error`` raised in a listener (aiokafka would only log it)."""
        self.fatal = self.fatal or error
        self.stopping.set()
        if not isinstance(error, EventVaultError):  # expected: the run's one error line
            raise error

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        """Load the committed progress of newly assigned partitions."""
        try:
            await self._adopt(set(assigned))
        except Exception as exc:
            self._fail(exc)
            return
        observe.event("partitions assigned",
                      partitions=sorted(partition_name(tp) for tp in assigned))
