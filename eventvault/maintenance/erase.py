"""Running erasure: register requests, find their files, rewrite each file, verify, record.

The steps, which ``eventvault erase`` runs in turn and the DAG ``eventvault_erasure`` runs as
tasks (one per topic, one per file), pass only PII-free, JSON-ready values between them:

1. :meth:`Erasure.register` stores new requests (keyed hashes only) and returns every open one;
2. :meth:`Erasure.find` (per topic) indexes files that have no index, asks every index for the
   open subjects, adds files found by earlier runs and not yet verified clean, and splits them
   into those the archiver has finished and those it may still write (eventvault.maintenance
   .guard): the latter wait for a later run;
3. :meth:`Erasure.erase_files` rewrites files under the same name without the subjects,
   checks that nobody else's records went, deletes every other version of the object, and
   verifies the object (and that no other version remains);
4. :meth:`Erasure.finish` names the recipients (replays that delivered the records), writes
   the ledger, closes requests past their deadline, and fails loudly if anything did not verify.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from eventvault import format as fmt
from eventvault import kafka
from eventvault.errors import ConfigError, MaintenanceError
from eventvault.layout import parse_file_key, topic_prefix
from eventvault.maintenance import index, requests
from eventvault.maintenance.erasure import erase_rows, leftovers, offsets_kept
from eventvault.maintenance.guard import read_guard
from eventvault.maintenance.ledger import write_ledger
from eventvault.maintenance.recipients import delivered
from eventvault.maintenance.report import FileOutcome, TopicFindings, erasure_report
from eventvault.maintenance.subjects import SubjectSpec, key_fingerprint, keyed_hash
from eventvault.observe import ProgressBar
from eventvault.settings import Settings
from eventvault.storage import ObjectVersion, Storage


@dataclass(frozen=True)
class Submission:
    """A subject to erase, as asked: request id and the subject's id (PII: kept in memory)."""

    request_id: str
    subject: str


def submissions(items: Iterable[Mapping[str, Any]]) -> list[Submission]:
    """Requests given as ``{"request_id": ..., "subject": ...}`` (or ``"subjects": [...]``)."""
    found = []
    for item in items:
        request_id = requests.check_request_id(str(item.get("request_id", "")))
        subjects = item.get("subjects") or [item.get("subject")]
        for subject in subjects:
            if not isinstance(subject, str) or not subject:
                raise ConfigError(f"request {request_id}: a subject id must be non-empty text",
                                  setting="subject")
            found.append(Submission(request_id, subject))
    return found


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Erasure:
    """One erasure run over ``storage``'s archive (see the module docstring)."""

    def __init__(self, settings: Settings, storage: Storage, now: datetime, run_id: str,
                 dry_run: bool) -> None:
        config = settings.erasure
        if config.hmac_key is None:
            raise ConfigError("erasure needs erasure.hmac_key (EVENTVAULT_ERASURE__HMAC_KEY): "
                              "subjects are kept only as keyed hashes", setting="erasure.hmac_key")
        if not config.topics:
            raise ConfigError("no topics configured for erasure: set erasure.topics.<topic>",
                              setting="erasure.topics")
        self.settings, self.storage, self.now, self.run_id = settings, storage, now, run_id
        self.dry_run = dry_run
        self.hmac_key = config.hmac_key.get_secret_value().encode()
        self.specs = {topic: SubjectSpec.of(s) for topic, s in config.topics.items()}

    def _prefix(self, topic: str) -> str:
        return index.index_prefix(key_fingerprint(self.hmac_key), self.specs[topic])

    # -- step 1 ----------------------------------------------------------------------------
    def register(self, asked: Sequence[Submission]) -> list[requests.Request]:
        """Store the requests of ``asked`` (merged into known ones); every open request."""
        known = requests.load_requests(self.storage)
        by_id: dict[str, list[str]] = {}
        for item in asked:
            by_id.setdefault(item.request_id, []).append(
                keyed_hash(self.hmac_key, item.subject.encode()).hex())
        fingerprint = key_fingerprint(self.hmac_key)
        for request in known.values():
            if request.status == "open" and request.key not in ("", fingerprint):
                raise ConfigError(f"request {request.request_id} was registered under another "
                                  "erasure.hmac_key: with this one its subjects match nothing; "
                                  "restore the key", setting="erasure.hmac_key")
        for request_id, hashes in by_id.items():
            request = requests.merged(known.get(request_id), request_id, hashes, self.now,
                                      self.settings.erasure.deadline_days, fingerprint)
            known[request_id] = request
            if not self.dry_run:
                requests.save_request(self.storage, request)
        return sorted((r for r in known.values() if r.status == "open"),
                      key=lambda r: r.request_id)

    # -- step 2 ----------------------------------------------------------------------------
    async def find(self, topic: str, open_requests: Sequence[requests.Request]) -> TopicFindings:
        """The files of ``topic`` that hold (or held) an open request's subject."""
        hashes = {bytes.fromhex(h) for r in open_requests for h in r.subjects}
        findings = TopicFindings(topic)
        files = [v for v in self.storage.stat(topic_prefix(topic)) if parse_file_key(v.key)]
        findings.files = len(files)
        findings.archive_bytes = sum(v.size for v in files)
        candidates = {v.key for v in self._ask_indexes(topic, files, hashes, findings)}
        intents = requests.load_intents(self.storage, topic)
        candidates |= set(intents)
        refs = {key: ref for key in candidates if (ref := parse_file_key(key)) is not None}
        guard = await read_guard(self.settings, topic, {r.partition for r in refs.values()})
        ready, waiting = guard.split(refs.values())
        findings.ready = sorted(r.key for r in ready)
        findings.waiting = {r.key: why for r, why in sorted(waiting.items())}
        if not self.dry_run and (candidates or intents):
            request_ids = [r.request_id for r in open_requests]
            requests.save_intents(self.storage, topic, {
                key: sorted(set(intents.get(key, [])) | set(request_ids)) for key in candidates})
        info = await kafka.describe_topic(self.settings.kafka, topic)
        findings.retention_ms = info.retention_ms if info else None
        return findings

    def _ask_indexes(self, topic: str, files: Sequence[ObjectVersion], hashes: set[bytes],
                     findings: TopicFindings) -> list[ObjectVersion]:
        """The files whose index may hold one of ``hashes``; indexes the files without one."""
        prefix = self._prefix(topic)
        indexed = set(self.storage.list(prefix + topic_prefix(topic)))
        current = {index.index_key(prefix, version): version for version in files}
        found = []
        unindexed = sum(1 for key in current if key not in indexed)
        with ProgressBar(unindexed > 0, f"indexing {topic}", unindexed) as bar:
            for key, version in current.items():
                before = self.storage.bytes_read
                if key in indexed:
                    bloom = index.Bloom.decode(self.storage.get(key))
                    findings.indexed += 1
                    findings.index_bytes_read += self.storage.bytes_read - before
                else:
                    bloom = self._index(prefix, version, topic)
                    findings.scanned += 1
                    findings.scan_bytes_read += self.storage.bytes_read - before
                    bar.advance(1)
                if any(h in bloom for h in hashes):
                    found.append(version)
        if not self.dry_run:
            for stale in indexed - set(current):  # indexes of content rewritten since
                self.storage.delete_version(stale, None)
        return found

    def _index(self, prefix: str, version: ObjectVersion, topic: str) -> index.Bloom:
        if self.dry_run:  # a dry run writes nothing, not even an index
            digests, _ = index.file_digests(self.storage, version.key, self.specs[topic],
                                            self.hmac_key)
            return index.Bloom.build(digests)
        return index.build_index(self.storage, prefix, version, self.specs[topic],
                                 self.hmac_key)

    # -- step 3 ----------------------------------------------------------------------------
    def erase_files(self, topic: str, keys: Sequence[str],
                    open_requests: Sequence[requests.Request],
                    raw_ids: Sequence[str] = ()) -> list[FileOutcome]:
        """Rewrite files of ``topic`` without the subjects; delete their other versions; verify.

        ``raw_ids``: subject ids known to this run, looked for as bytes too. The versions of
        all ``keys`` are listed once before and once after (S3 lists the versions of a
        prefix, not of one key).
        """
        if not keys:
            return []
        hashes = {bytes.fromhex(h) for r in open_requests for h in r.subjects}
        prefix = keys[0] if len(keys) == 1 else topic_prefix(topic)
        before = self.storage.all_versions(prefix)
        outcomes = [self._rewrite(topic, key, before.get(key, ()), hashes) for key in keys]
        if self.dry_run:
            return outcomes
        after = self.storage.all_versions(prefix)
        for outcome in outcomes:
            remaining = after.get(outcome.key, ())
            outcome.verified, outcome.detail = self._verify(outcome.key, remaining,
                                                            self.specs[topic], hashes, raw_ids)
            if outcome.verified and remaining:
                index.build_index(self.storage, self._prefix(topic), remaining[0],
                                  self.specs[topic], self.hmac_key)
        return outcomes

    def _rewrite(self, topic: str, key: str, versions: Sequence[ObjectVersion],
                 hashes: set[bytes]) -> FileOutcome:
        """One file without the subjects, under the same name; its other versions deleted."""
        outcome = FileOutcome(topic, key)
        current = next((v for v in versions if v.latest and not v.delete_marker), None)
        others = [v for v in versions if v is not current]
        if current is not None:
            data = self.storage.get(key, current.version_id)
            table = fmt.decode(data)
            erased = erase_rows(table, self.specs[topic], hashes, self.hmac_key)
            outcome.rows, outcome.dropped, outcome.redacted = (table.num_rows, erased.dropped,
                                                               erased.redacted)
            outcome.found = {h.hex(): [list(p) for p in places]
                             for h, places in erased.found.items()}
            outcome.version_before, outcome.sha256_before = current.version_id, _sha256(data)
            outcome.bytes_before = len(data)
        if self.dry_run:
            outcome.noncurrent_deleted = len(others)
            outcome.detail = "dry run: nothing written"
            return outcome
        if current is not None and erased.changed:
            rewritten = fmt.encode(erased.table, zstd_level=self.settings.archive.zstd_level,
                                   metadata={**fmt.file_metadata(data),
                                             "erasure_run": self.run_id})
            if not offsets_kept(table, fmt.decode(rewritten), erased):
                raise MaintenanceError(f"erasure of {key} would lose other records; nothing "
                                       "was written", key=key)
            outcome.version_after = self.storage.put(key, rewritten)
            outcome.sha256_after, outcome.bytes_after = _sha256(rewritten), len(rewritten)
            if outcome.version_after is not None:  # the replaced version is now an old one
                others.append(current)
        for version in others:  # older versions and delete markers: every one goes
            if version.version_id is not None:
                self.storage.delete_version(key, version.version_id)
        outcome.noncurrent_deleted = sum(1 for v in others if v.version_id is not None)
        return outcome

    def _verify(self, key: str, remaining: Sequence[ObjectVersion], spec: SubjectSpec,
                hashes: set[bytes], raw_ids: Sequence[str]) -> tuple[bool, str]:
        """Whether no version of ``key`` but one remains, and it names no subject."""
        if not remaining:
            return True, "the object is gone (deleted by retention), with every version"
        if len(remaining) > 1 or remaining[0].delete_marker:
            return False, f"{len(remaining)} versions remain"
        table = fmt.decode(self.storage.get(key, remaining[0].version_id))
        left = leftovers(table, spec, hashes, self.hmac_key, [r.encode() for r in raw_ids])
        if left:
            return False, f"{len(left)} records still name a subject, e.g. {left[0]}"
        return True, "verified: one version, no subject"

    # -- step 4 ----------------------------------------------------------------------------
    def finish(self, open_requests: Sequence[requests.Request],
               findings: Sequence[TopicFindings],
               outcomes: Sequence[FileOutcome]) -> dict[str, Any]:
        """Recipients, ledger, request states and intents; the run's summary.

        Raises MaintenanceError, after recording everything, if a file did not verify or a
        request is past its deadline with files still waiting.
        """
        summary = erasure_report(self.run_id, self.now, self.dry_run, open_requests, findings,
                                 outcomes, self._recipients(outcomes))
        if not self.dry_run:
            self._record(open_requests, findings, outcomes, summary)
        problems = summary["problems"]
        if problems:
            raise MaintenanceError(f"erasure run {self.run_id}: {problems[0]}"
                                   + (f" (and {len(problems) - 1} more)"
                                      if len(problems) > 1 else ""), run_id=self.run_id)
        return summary

    def _recipients(self, outcomes: Sequence[FileOutcome]) -> dict[str, list[dict[str, Any]]]:
        """Subject hash -> the replays that delivered any of its records found in this run."""
        places: dict[tuple[str, str], set[tuple[int, int]]] = {}
        for outcome in outcomes:
            for digest, found in outcome.found.items():
                places.setdefault((digest, outcome.topic), set()).update(
                    (p, o) for p, o in found)
        result: dict[str, list[dict[str, Any]]] = {}
        for (digest, topic), at in sorted(places.items()):
            result.setdefault(digest, []).extend(
                {**asdict(r), "topic": topic} for r in delivered(self.storage, topic, at))
        return result

    def _record(self, open_requests: Sequence[requests.Request],
                findings: Sequence[TopicFindings], outcomes: Sequence[FileOutcome],
                summary: dict[str, Any]) -> None:
        write_ledger(self.storage, "erasure", self.run_id, summary["ledger"])
        for request in open_requests:
            status = next(r["status"] for r in summary["requests"]
                          if r["request_id"] == request.request_id)
            if status == "closed":
                requests.save_request(self.storage, requests.Request(
                    request.request_id, request.subjects, request.received, request.deadline,
                    "closed"))
        clean = {o.key for o in outcomes if o.verified}
        for found in findings:
            intents = requests.load_intents(self.storage, found.topic)
            kept = {k: v for k, v in intents.items() if k not in clean}
            if kept != intents:
                requests.save_intents(self.storage, found.topic, kept)


async def run_erasure(settings: Settings, storage: Storage, asked: Sequence[Submission],
                      now: datetime, run_id: str, dry_run: bool) -> dict[str, Any]:
    """All four steps in one process (``eventvault erase``); the summary."""
    erasure = Erasure(settings, storage, now, run_id, dry_run)
    open_requests = erasure.register(asked)
    archived = set(storage.topics())
    findings = [await erasure.find(topic, open_requests)
                for topic in sorted(erasure.specs) if topic in archived]
    raw_ids = [item.subject for item in asked]
    outcomes = [outcome for found in findings
                for outcome in erasure.erase_files(found.topic, found.ready, open_requests,
                                                   raw_ids)]
    return erasure.finish(open_requests, findings, outcomes)
