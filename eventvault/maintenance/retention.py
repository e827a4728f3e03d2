"""Retention by event time: whole hours older than a topic's limit go, with every version.

``retention.keep_days[topic]`` is the limit; topics without one are kept forever, and so is the
null partition (records without a usable event time: their age is unknown). An hour is
deleted only when it has ended more than the limit ago and the archiver has finished it
(eventvault.maintenance.guard): no recorded cut of that hour, no file above the committed
resume offset. Otherwise it waits for a later run. Each file goes with all its versions and
its subject indexes; the run verifies that no version is left, and writes the ledger.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from eventvault import kafka
from eventvault.errors import MaintenanceError
from eventvault.layout import FileRef, file_refs, hour_dir, topic_prefix
from eventvault.maintenance import index
from eventvault.maintenance.guard import Guard, read_guard
from eventvault.maintenance.ledger import write_ledger
from eventvault.settings import Settings
from eventvault.storage import Storage, delete_all_versions
from eventvault.times import US_PER_HOUR, micros


def expired(refs: Iterable[FileRef], keep_days: int, now: datetime) -> dict[int, list[FileRef]]:
    """The files of every hour that ended more than ``keep_days`` before ``now``. Pure."""
    horizon = micros(now - timedelta(days=keep_days))
    hours: dict[int, list[FileRef]] = {}
    for ref in refs:
        if ref.hour is not None and (ref.hour + 1) * US_PER_HOUR <= horizon:
            hours.setdefault(ref.hour, []).append(ref)
    return dict(sorted(hours.items()))


def hour_blocked(guard: Guard, hour: int, files: Sequence[FileRef],
                 archived: Iterable[int] = ()) -> str | None:
    """Why the archiver may still write into ``hour`` (None: it has finished it). Pure.

    ``archived``: the partitions that have files. One of them without committed progress
    (expired group offsets, another group id) could be archived again from the log start,
    files of this hour included, so the hour waits.
    """
    lost = sorted(set(archived) - set(guard.progress))
    if lost:
        return (f"partition {lost[0]} has archive files but no committed progress in the "
                "archiver's group: the archiver could write this hour again")
    for partition, progress in guard.progress.items():
        if any(cut.hour == hour for cut in progress.cuts):
            return f"partition {partition} has a recorded cut of this hour"
    for ref in files:
        reason = guard.why_not(ref)
        if reason:
            return f"{ref.key}: {reason}"
    return None


@dataclass
class HourPlan:
    """One expired hour of a topic and its files."""

    hour: int
    folder: str
    files: list[str] = field(default_factory=list)
    waiting: str | None = None


@dataclass
class RetentionPlan:
    """What retention would delete in one topic."""

    topic: str
    keep_days: int
    hours: list[HourPlan] = field(default_factory=list)


@dataclass
class HourOutcome:
    """What was deleted of one hour: objects, versions, and whether anything is left."""

    topic: str
    hour: int
    objects: int = 0
    versions_deleted: int = 0
    verified: bool = False
    left: list[str] = field(default_factory=list)


class Retention:
    """One retention run over ``storage``'s archive."""

    def __init__(self, settings: Settings, storage: Storage, now: datetime, run_id: str,
                 dry_run: bool) -> None:
        self.settings, self.storage, self.now, self.run_id = settings, storage, now, run_id
        self.dry_run = dry_run
        self._index_objects: dict[str, list[str]] | None = None

    def topics(self) -> list[str]:
        """The topics with a retention limit that are in the archive."""
        archived = set(self.storage.topics())
        return sorted(t for t in self.settings.retention.keep_days if t in archived)

    async def plan(self, topic: str) -> RetentionPlan:
        """The expired hours of ``topic``, each ready to delete or waiting for the archiver."""
        keep_days = self.settings.retention.keep_days[topic]
        refs = file_refs(self.storage.list(topic_prefix(topic)))
        hours = expired(refs, keep_days, self.now)
        archived = {r.partition for r in refs}
        info = await kafka.describe_topic(self.settings.kafka, topic)
        partitions = set(range(info.partitions)) if info else set()
        guard = await read_guard(self.settings, topic, partitions | archived)
        plan = RetentionPlan(topic, keep_days)
        for hour, files in hours.items():
            plan.hours.append(HourPlan(hour, hour_dir(topic, hour), sorted(f.key for f in files),
                                       hour_blocked(guard, hour, files, archived)))
        return plan

    def delete_hour(self, topic: str, hour: int, keys: Sequence[str]) -> HourOutcome:
        """Delete every version of ``keys`` (one hour's files) and their indexes; verify.

        The hour's versions are listed once before and once after.
        """
        outcome = HourOutcome(topic, hour)
        folder = hour_dir(topic, hour) + "/"
        indexes = self._indexes(keys)
        versions = self.storage.all_versions(folder)
        for key in keys:
            for version in versions.get(key, ()):
                self.storage.delete_version(key, version.version_id)
                outcome.versions_deleted += 1
            outcome.objects += 1
            for index_object in indexes.get(key, []):
                delete_all_versions(self.storage, index_object)
        left = self.storage.all_versions(folder)
        outcome.left = [key for key in keys if key in left]
        outcome.verified = not outcome.left
        return outcome

    def _indexes(self, keys: Sequence[str]) -> dict[str, list[str]]:
        """Archive key -> its subject index objects (under any HMAC key), listed once a run."""
        if self._index_objects is None:
            self._index_objects = {}
            for key in self.storage.list(index.ROOT):
                archive = index.archive_key_of(key)
                if archive is not None:
                    self._index_objects.setdefault(archive, []).append(key)
        return {key: self._index_objects.get(key, []) for key in keys}

    def finish(self, plans: Sequence[RetentionPlan],
               outcomes: Sequence[HourOutcome]) -> dict[str, Any]:
        """The summary; the ledger (unless a dry run). Raises if a deletion did not verify."""
        base = {"run_id": self.run_id, "job": "retention", "at": self.now,
                "dry_run": self.dry_run}
        rows = [{**base, "entry": "deleted", "topic": o.topic,
                 "object_key": hour_dir(o.topic, o.hour), "records": o.objects,
                 "noncurrent_versions_deleted": o.versions_deleted, "verified": o.verified,
                 "detail": "; ".join(o.left) or "no version left"} for o in outcomes]
        rows += [{**base, "entry": "waiting", "topic": p.topic, "object_key": h.folder,
                  "detail": h.waiting} for p in plans for h in p.hours if h.waiting]
        if not self.dry_run:
            write_ledger(self.storage, "retention", self.run_id, rows)
        summary = {"run_id": self.run_id, "dry_run": self.dry_run, "at": self.now.isoformat(),
                   "topics": [asdict(p) for p in plans],
                   "deleted": [asdict(o) for o in outcomes]}
        failed = [o for o in outcomes if not o.verified]
        if failed:
            raise MaintenanceError(f"retention run {self.run_id}: {len(failed[0].left)} objects "
                                   f"of {hour_dir(failed[0].topic, failed[0].hour)} remain",
                                   run_id=self.run_id)
        return summary


async def plan_all(retention: Retention) -> list[RetentionPlan]:
    """The plan of every topic with a limit."""
    return [await retention.plan(topic) for topic in retention.topics()]


def text(summary: dict[str, Any]) -> Iterator[str]:
    """The summary for people."""
    mode = "dry run" if summary["dry_run"] else "run"
    yield f"retention {mode} {summary['run_id']}:"
    for topic in summary["topics"]:
        waiting = sum(1 for h in topic["hours"] if h["waiting"])
        yield (f"  {topic['topic']}: keep {topic['keep_days']} days; "
               f"{len(topic['hours'])} hours expired, {waiting} waiting for the archiver")
        for hour in topic["hours"]:
            state = f"waiting: {hour['waiting']}" if hour["waiting"] else (
                "would delete" if summary["dry_run"] else "deleted")
            yield f"    {hour['folder']}: {len(hour['files'])} files, {state}"
    for done in summary["deleted"]:
        yield (f"  {done['topic']} hour {done['hour']}: {done['objects']} objects, "
               f"{done['versions_deleted']} versions deleted; "
               + ("verified: none left" if done["verified"] else f"LEFT: {done['left']}"))
