"""Group commits that are sent only under the generation they were decided in.

A companion of :mod:`eventvault.kafka` (the aiokafka adapter; only these modules import
aiokafka). aiokafka's ``AIOKafkaConsumer.commit`` retries a commit that met a retriable error
(a timeout, the coordinator moving) after a backoff, with its commit lock released, and it
builds each attempt's request with the generation and member id current *then*. A commit
decided while this member owned a partition can so be sent after a rebalance gave the
partition to another member that has committed newer progress since: the broker accepts it
(it checks the generation, not the assignment) and the group's progress goes back.

:func:`commit_in_generation` sends the same request (aiokafka's own ``_do_commit_offsets``,
under its commit lock, so it never interleaves with another commit of this consumer), but
each attempt only while the coordinator's generation and member id are still the ones
captured by :func:`generation_of` when the commit was decided; otherwise it raises
``CommitFailedError``, which callers already treat as "fenced by a rebalance". These are
aiokafka internals: ``tests/test_commit_generation.py`` fails if the pinned version changes
them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import (
    CommitFailedError,
    IllegalGenerationError,
    IllegalStateError,
    KafkaError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)
from aiokafka.structs import OffsetAndMetadata

__all__ = ["Generation", "commit_in_generation", "generation_of"]


@dataclass(frozen=True)
class Generation:
    """A group member's identity at one moment: its generation and member id."""

    number: int
    member_id: str


def generation_of(consumer: AIOKafkaConsumer) -> Generation:
    """The consumer's current generation and member id (-1 and "" outside a generation)."""
    coordinator = consumer._coordinator
    if coordinator is None:
        return Generation(-1, "")
    return Generation(coordinator.generation, coordinator.member_id or "")


async def commit_in_generation(consumer: AIOKafkaConsumer,
                               offsets: dict[TopicPartition, OffsetAndMetadata],
                               generation: Generation) -> None:
    """Commit ``offsets`` as ``consumer.commit`` does, every attempt under ``generation`` only.

    Raises ``CommitFailedError`` once the member has left ``generation`` (a rebalance, or the
    coordinator forgetting the member) or when ``generation`` is none (-1: the member was
    expelled and has not rejoined; the broker would take such a commit while the group is
    empty), ``IllegalStateError`` for a partition not assigned, and any error aiokafka does
    not retry. It retries as long as aiokafka does: a caller that must not wait for an
    unresponsive broker bounds it (``asyncio.timeout``); the request may then still land, in
    the generation checked.
    """
    if not offsets:
        return
    subscription = consumer._subscription.subscription
    assignment = subscription.assignment if subscription is not None else None
    if assignment is None:
        raise IllegalStateError("No partitions assigned")
    for tp in offsets:
        if tp not in assignment.tps:
            raise IllegalStateError(f"Partition {tp} is not assigned")
    await _attempts(consumer._coordinator, assignment, offsets, generation)


async def _attempts(coordinator: Any, assignment: Any,
                    offsets: dict[TopicPartition, OffsetAndMetadata],
                    generation: Generation) -> None:
    """The loop of aiokafka's ``commit_offsets``, with the generation checked before each send."""
    while True:
        await coordinator.ensure_coordinator_known()
        try:
            async with coordinator._commit_lock:
                await _send(coordinator, assignment, offsets, generation)
        except CommitFailedError:
            raise
        except (UnknownMemberIdError, IllegalGenerationError, RebalanceInProgressError) as exc:
            raise CommitFailedError("the group has rebalanced since the commit was decided"
                                    ) from exc
        except KafkaError as error:
            if not error.retriable:
                raise
            await asyncio.sleep(coordinator._retry_backoff_ms / 1000)
        else:
            return


async def _send(coordinator: Any, assignment: Any,
                offsets: dict[TopicPartition, OffsetAndMetadata],
                generation: Generation) -> None:
    """One attempt, under the commit lock: refused unless the member is still in ``generation``.

    The coroutine is awaited directly, not as a task of its own (aiokafka shields one): it runs
    at once, in this task, and builds its request with the generation current then, with no
    step of another task between the check and the request. A time limit that cancels it
    only abandons the answer.
    """
    current = Generation(coordinator.generation, coordinator.member_id or "")
    if current != generation or generation.number < 0 or not generation.member_id:
        raise CommitFailedError(
            f"the commit was decided in generation {generation.number} and the member is now "
            f"in generation {current.number}: another member may own these partitions")
    await coordinator._do_commit_offsets(assignment, offsets)

