"""Kafka protocol messages aiokafka does not have: OffsetFetch v7 with ``require_stable``.

Part of the aiokafka adapter (:mod:`eventvault.kafka` sends it); no other eventvault module
imports aiokafka besides these two, :mod:`eventvault.kafka_probes` and
:mod:`eventvault.kafka_commit`.
"""

from __future__ import annotations

from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    Boolean,
    CompactArray,
    CompactString,
    Int16,
    Int32,
    Int64,
    Schema,
    TaggedFields,
)
from aiokafka.structs import TopicPartition

__all__ = ["UNSTABLE_OFFSET_COMMIT", "StableOffsetFetch"]

UNSTABLE_OFFSET_COMMIT = 88  # offsets of a transaction still open (KIP-447)


class _OffsetFetchResponseV7(Response):  # type: ignore[misc]
    API_KEY = 9
    API_VERSION = 7
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("topics", CompactArray(
            ("name", CompactString("utf-8")),
            ("partitions", CompactArray(
                ("partition_index", Int32), ("committed_offset", Int64),
                ("committed_leader_epoch", Int32), ("metadata", CompactString("utf-8")),
                ("error_code", Int16), ("tags", TaggedFields))),
            ("tags", TaggedFields))),
        ("error_code", Int16),
        ("tags", TaggedFields))


class _OffsetFetchRequestV7(RequestStruct):  # type: ignore[misc]
    FLEXIBLE_VERSION = True
    API_KEY = 9
    API_VERSION = 7
    RESPONSE_TYPE = _OffsetFetchResponseV7
    SCHEMA = Schema(
        ("group_id", CompactString("utf-8")),
        ("topics", CompactArray(("name", CompactString("utf-8")),
                                ("partition_indexes", CompactArray(Int32)),
                                ("tags", TaggedFields))),
        ("require_stable", Boolean),
        ("tags", TaggedFields))


class StableOffsetFetch(Request[_OffsetFetchRequestV7]):  # type: ignore[misc]
    """OffsetFetch with ``require_stable`` (v7; aiokafka's own request stops at v3)."""

    API_KEY = 9

    def __init__(self, group_id: str, partitions: list[TopicPartition]) -> None:
        topics: dict[str, list[int]] = {}
        for tp in partitions:
            topics.setdefault(tp.topic, []).append(tp.partition)
        self.group_id = group_id
        self.topics: list[tuple[str, list[int], dict[int, bytes]]] = [
            (topic, numbers, {}) for topic, numbers in topics.items()]

    def build(self, request_struct_class: type[_OffsetFetchRequestV7]) -> _OffsetFetchRequestV7:
        """The request, asking for stable offsets only."""
        return request_struct_class(self.group_id, self.topics, True, {})
