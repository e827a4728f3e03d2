"""The erasure and retention jobs as steps that pass only JSON-ready, PII-free values.

The Airflow DAGs in dags/ run each step as a task (mapped over topics, files and hours), and
a test can run them in the same order without Airflow. Settings come from the environment and
``eventvault.toml`` (or the file named by ``EVENTVAULT_CONFIG``), as for the command line.
A ``run`` is the dictionary the first step returns: run id, time, dry run, open requests.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from eventvault.maintenance.erase import Erasure, submissions
from eventvault.maintenance.ledger import new_run_id
from eventvault.maintenance.report import FileOutcome, TopicFindings
from eventvault.maintenance.requests import Request
from eventvault.maintenance.retention import HourOutcome, HourPlan, Retention, RetentionPlan
from eventvault.settings import Settings, load_settings
from eventvault.storage import open_storage

Run = dict[str, Any]
FILES_PER_TASK = 100
"""Files one mapped erase task rewrites (Airflow maps at most 1,024 tasks)."""


def dry_run_of(asked: bool, run_type: object) -> bool:
    """Whether a DAG run is a dry run: as asked, but a scheduled run acts.

    A scheduled run re-checks requests that a real run registered, and retention applies
    the limits the settings name: a dry run there would never do what it is scheduled for.
    A run started by hand is a dry run unless its conf says ``"dry_run": false``.
    """
    return asked and str(getattr(run_type, "value", run_type)) != "scheduled"


def _erasure(run: Run, settings: Settings | None = None) -> Erasure:
    settings = settings or load_settings()
    return Erasure(settings, open_storage(settings.storage), datetime.fromisoformat(run["at"]),
                   run["run_id"], run["dry_run"])


def _requests(run: Run) -> list[Request]:
    return [Request.from_json(text) for text in run["requests"]]


def start_erasure(asked: list[dict[str, Any]], dry_run: bool) -> Run:
    """Step 1: store new requests; the run, with every open request (hashes only)."""
    settings = load_settings()
    now = datetime.now(UTC)
    run: Run = {"run_id": new_run_id(now), "at": now.isoformat(), "dry_run": dry_run}
    erasure = _erasure({**run, "requests": []}, settings)
    open_requests = erasure.register(submissions(asked))
    archived = set(erasure.storage.topics())
    return {**run, "requests": [r.to_json() for r in open_requests],
            "topics": sorted(t for t in erasure.specs if t in archived)}


def find(run: Run, topic: str) -> dict[str, Any]:
    """Step 2, for one topic: the files to rewrite and those that wait."""
    return asdict(asyncio.run(_erasure(run).find(topic, _requests(run))))


def ready_files(findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Step 2's files to rewrite, in batches of one topic (one mapped task each)."""
    return [{"topic": f["topic"], "keys": f["ready"][i:i + FILES_PER_TASK]}
            for f in findings for i in range(0, len(f["ready"]), FILES_PER_TASK)]


def erase_files(run: Run, batch: dict[str, Any], raw_ids: list[str]) -> list[dict[str, Any]]:
    """Step 3, for a batch of files: rewrite, delete other versions, verify."""
    return [asdict(o) for o in _erasure(run).erase_files(batch["topic"], batch["keys"],
                                                         _requests(run), raw_ids)]


def finish_erasure(run: Run, findings: list[dict[str, Any]],
                   outcomes: list[list[dict[str, Any]]]) -> dict[str, Any]:
    """Step 4: recipients, ledger, request states; raises if anything did not verify.

    A topic or file without a result (its task failed) is a problem too.
    """
    summary = _erasure(run).finish(_requests(run), [TopicFindings(**f) for f in findings],
                                   [FileOutcome(**o) for batch in outcomes for o in batch],
                                   run["topics"])
    summary.pop("ledger")
    return summary


def _retention(run: Run) -> Retention:
    settings = load_settings()
    return Retention(settings, open_storage(settings.storage), datetime.fromisoformat(run["at"]),
                     run["run_id"], run["dry_run"])


def start_retention(dry_run: bool) -> Run:
    """The retention run, with the topics that have a limit."""
    now = datetime.now(UTC)
    run: Run = {"run_id": new_run_id(now), "at": now.isoformat(), "dry_run": dry_run}
    return {**run, "topics": _retention(run).topics()}


def plan_topic(run: Run, topic: str) -> dict[str, Any]:
    """The expired hours of one topic."""
    return asdict(asyncio.run(_retention(run).plan(topic)))


def ready_hours(run: Run, plans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The hours to delete, one item per hour (none in a dry run)."""
    if run["dry_run"]:
        return []
    return [{"topic": p["topic"], **h} for p in plans for h in p["hours"] if not h["waiting"]]


def delete_hour(run: Run, item: dict[str, Any]) -> dict[str, Any]:
    """Delete one hour's files with every version."""
    return asdict(_retention(run).delete_hour(item["topic"], item["hour"], item["files"]))


def finish_retention(run: Run, plans: list[dict[str, Any]],
                     outcomes: list[dict[str, Any]]) -> dict[str, Any]:
    """The ledger and the summary; raises if a deletion did not verify."""
    return _retention(run).finish(
        [RetentionPlan(p["topic"], p["keep_days"], [HourPlan(**h) for h in p["hours"]])
         for p in plans], [HourOutcome(**o) for o in outcomes])
