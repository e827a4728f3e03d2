"""What an erasure run reports: per request, topic and file, the ledger rows, the problems.

Pure: built from the run's findings and outcomes. The same dictionary is printed as JSON
(``--output json``), rendered as text, and stored as ledger rows.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from eventvault.maintenance.requests import Request


@dataclass
class TopicFindings:
    """What step 2 found in one topic."""

    topic: str
    ready: list[str] = field(default_factory=list)
    waiting: dict[str, str] = field(default_factory=dict)
    files: int = 0
    archive_bytes: int = 0
    indexed: int = 0
    scanned: int = 0
    index_bytes_read: int = 0
    scan_bytes_read: int = 0
    retention_ms: int | None = None
    committed: dict[str, int] = field(default_factory=dict)  # partition -> resume offset
    ends: dict[str, int] = field(default_factory=dict)  # partition -> end offset now
    unreadable: dict[str, str] = field(default_factory=dict)  # file -> why it was not indexed


@dataclass
class FileOutcome:
    """What step 3 did to one file (``verified`` None: a dry run)."""

    topic: str
    key: str
    rows: int = 0
    dropped: int = 0
    redacted: int = 0
    found: dict[str, list[list[int]]] = field(default_factory=dict)  # subject hash -> places
    version_before: str | None = None
    version_after: str | None = None
    sha256_before: str | None = None
    sha256_after: str | None = None
    bytes_before: int = 0
    bytes_after: int = 0
    noncurrent_deleted: int = 0
    verified: bool | None = None
    ids_outside_field: bool = False  # the ids' bytes were found outside the subject field
    detail: str = ""


def behind(request: Request, findings: Sequence[TopicFindings]) -> list[str]:
    """Partitions (``topic[partition]``) the archiver has not yet read to their first end.

    That is where they ended at the request's first run: until then records of the subject
    may still be on the way to the archive.
    """
    late = []
    for found in findings:
        ends = request.ends.get(found.topic) or found.ends
        late += [f"{found.topic}[{p}]" for p, end in sorted(ends.items())
                 if found.committed.get(p, -1) < end]
    return late


def _status(now: datetime, request: Request, work_left: bool) -> str:
    if now < request.deadline:
        return "open"  # re-checked by every run until the deadline
    return "overdue" if work_left else "closed"


def erasure_report(run_id: str, now: datetime, dry_run: bool, open_requests: Sequence[Request],
                   findings: Sequence[TopicFindings], outcomes: Sequence[FileOutcome],
                   recipients: dict[str, list[dict[str, Any]]],
                   missing: Sequence[str] = ()) -> dict[str, Any]:
    """The summary of one run (see the module docstring).

    ``missing``: topics or files the run meant to handle and has no result for (a task that
    failed): they are problems, and no request closes.
    """
    failed = [o for o in outcomes if o.verified is False]
    waiting = [key for f in findings for key in f.waiting]
    unreadable = [f"{k}: {why}" for f in findings for k, why in f.unreadable.items()]
    problems = [f"{o.key} did not verify: {o.detail}" for o in failed]
    problems += [f"no result for {m} (a failed task?)" for m in missing]
    problems += [f"could not read, so could not index: {u}" for u in unreadable]
    summary_requests = []
    for request in open_requests:
        late = behind(request, findings)
        status = _status(now, request, bool(waiting or failed or missing or unreadable or late))
        if status == "overdue":
            why = (f"the archiver has not yet read {', '.join(late)} to where it ended when "
                   "the request came" if late else "files are not yet erased")
            problems.append(f"request {request.request_id} is past its deadline "
                            f"{request.deadline.isoformat()}: {why}")
        found = sum(len(o.found.get(h, ())) for o in outcomes for h in request.subjects)
        summary_requests.append({
            "request_id": request.request_id, "subjects": len(request.subjects),
            "received": request.received.isoformat(), "deadline": request.deadline.isoformat(),
            "status": status, "records_found": found,
            "recipients": [r for h in request.subjects for r in recipients.get(h, [])]})
    summary = {
        "run_id": run_id, "dry_run": dry_run, "at": now.isoformat(),
        "requests": summary_requests, "topics": [asdict(f) for f in findings],
        "files": [asdict(o) | {"found": {h: len(p) for h, p in o.found.items()}}
                  for o in outcomes],
        "problems": problems,
    }
    base = {"run_id": run_id, "job": "erasure", "at": now, "dry_run": dry_run}
    summary["ledger"] = list(_ledger_rows(base, open_requests, findings, outcomes,
                                          summary_requests))
    return summary


def _ledger_rows(base: dict[str, Any], open_requests: Sequence[Request],
                 findings: Sequence[TopicFindings], outcomes: Sequence[FileOutcome],
                 summary_requests: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    retention = {f.topic: f.retention_ms for f in findings}
    for request, summary in zip(open_requests, summary_requests, strict=True):
        for subject in request.subjects:
            for topic, retention_ms in sorted(retention.items()):
                yield {**base, "entry": "request", "request_id": request.request_id,
                       "subject_hash": subject, "received": request.received,
                       "deadline": request.deadline, "status": summary["status"],
                       "topic": topic, "topic_retention_ms": retention_ms}
        for recipient in summary["recipients"]:
            yield {**base, "entry": "recipient", "request_id": request.request_id,
                   "topic": recipient["topic"], "replay_id": recipient["replay_id"],
                   "target_topic": recipient["target_topic"], "records": recipient["records"],
                   "detail": f"delivered {recipient['at']}"}
    for found in findings:
        for key, why in found.waiting.items():
            yield {**base, "entry": "waiting", "topic": found.topic, "object_key": key,
                   "detail": why}
    for outcome in outcomes:
        yield {**base, "entry": "file", "topic": outcome.topic, "object_key": outcome.key,
               "version_before": outcome.version_before, "version_after": outcome.version_after,
               "sha256_before": outcome.sha256_before, "sha256_after": outcome.sha256_after,
               "rows_dropped": outcome.dropped, "rows_redacted": outcome.redacted,
               "noncurrent_versions_deleted": outcome.noncurrent_deleted,
               "verified": outcome.verified, "detail": outcome.detail}


def text(summary: dict[str, Any]) -> Iterator[str]:
    """The summary for people."""
    mode = "dry run" if summary["dry_run"] else "run"
    yield f"erasure {mode} {summary['run_id']}:"
    for request in summary["requests"]:
        yield (f"  request {request['request_id']}: {request['subjects']} subject(s), "
               f"{request['records_found']} records found, {request['status']} (deadline "
               f"{request['deadline']})")
        for r in request["recipients"]:
            yield (f"    delivered to {r['target_topic']} by replay {r['replay_id']}: "
                   f"{r['records']} records ({r['at']})")
    for topic in summary["topics"]:
        share = topic["index_bytes_read"] / topic["archive_bytes"] if topic["archive_bytes"] \
            else 0.0
        yield (f"  {topic['topic']}: {topic['files']} files, {len(topic['ready'])} hold a "
               f"subject, {len(topic['waiting'])} waiting; {topic['indexed']} indexes read "
               f"({topic['index_bytes_read']} bytes, {share:.2%} of the archive's "
               f"{topic['archive_bytes']})")
        if topic["scanned"]:
            yield (f"    {topic['scanned']} files had no index: scanned "
                   f"({topic['scan_bytes_read']} bytes read)"
                   + ("" if summary["dry_run"] else ", now indexed"))
        for key, why in topic["waiting"].items():
            yield f"    waiting: {key}: {why}"
    for f in summary["files"]:
        done = [f"{verb} {f[name]}" for verb, name in (("dropped", "dropped"),
                                                       ("redacted", "redacted")) if f[name]]
        what = ", ".join(done) or "nothing to change"
        if summary["dry_run"]:
            yield (f"  {f['key']}: would have {what} of {f['rows']} records, and "
                   f"{f['noncurrent_deleted']} other versions deleted")
            continue
        verdict = "verified" if f["verified"] else f"NOT VERIFIED: {f['detail']}"
        yield (f"  {f['key']}: {what} of {f['rows']} records; {f['noncurrent_deleted']} other "
               f"versions deleted; {verdict}")
    for problem in summary["problems"]:
        yield f"  problem: {problem}"
