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

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Any

from eventvault import kafka
from eventvault.errors import ConfigError, MaintenanceError, ObjectChanged, StorageError
from eventvault.layout import parse_file_key, topic_prefix
from eventvault.maintenance import index, requests, rewrite
from eventvault.maintenance.guard import read_guard
from eventvault.maintenance.ledger import write_ledger
from eventvault.maintenance.recipients import delivered
from eventvault.maintenance.report import FileOutcome, TopicFindings, erasure_report
from eventvault.maintenance.rewrite import current_of
from eventvault.maintenance.subjects import SubjectSpec, key_fingerprint, keyed_hash
from eventvault.observe import ProgressBar
from eventvault.settings import Settings
from eventvault.storage import ObjectVersion, Storage, delete_all_versions


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
        listed = self.storage.all_versions(topic_prefix(topic))
        files = [current for key, versions in listed.items()
                 if parse_file_key(key) and (current := current_of(versions)) is not None]
        deleted = [key for key, versions in listed.items()
                   if parse_file_key(key) and current_of(versions) is None and versions]
        findings.files = len(files)
        findings.archive_bytes = sum(v.size for v in files)
        intents = requests.load_intents(self.storage, topic)
        candidates = {v.key for v in self._ask_indexes(topic, files, hashes, findings)}
        candidates |= set(intents) | set(deleted)
        info = await kafka.describe_topic(self.settings.kafka, topic)
        partitions = range(info.partitions) if info else sorted(
            {r.partition for k in listed if (r := parse_file_key(k)) is not None})
        guard = await read_guard(self.settings, topic, partitions)
        refs = [ref for key in sorted(candidates) if (ref := parse_file_key(key)) is not None]
        ready, waiting = guard.split(refs)
        findings.ready = [r.key for r in ready]
        findings.waiting = {r.key: why for r, why in sorted(waiting.items())}
        findings.committed = {str(p): progress.offset for p, progress in guard.progress.items()}
        if info:
            findings.retention_ms = info.retention_ms
            findings.ends = await self._ends(topic, info.partitions)
        if not self.dry_run:
            request_ids = [r.request_id for r in open_requests]
            for key in sorted(candidates - set(intents)):
                requests.save_intent(self.storage, topic, requests.Intent(key, request_ids))
        return findings

    async def _ends(self, topic: str, partitions: int) -> dict[str, int]:
        """The topic's end offsets now: what the archiver must read before requests close."""
        _, ends = await kafka.log_offsets(
            self.settings.kafka, [kafka.TopicPartition(topic, p) for p in range(partitions)],
            self.settings.archive.isolation_level)
        return {str(tp.partition): offset for tp, offset in ends.items()}

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
                    try:
                        bloom = self._index(prefix, version, topic)
                    except (StorageError, ValueError, OSError) as exc:  # pyarrow: ArrowInvalid
                        findings.unreadable[version.key] = f"{type(exc).__name__}: {exc}"
                        continue
                    findings.scanned += 1
                    findings.scan_bytes_read += self.storage.bytes_read - before
                    bar.advance(1)
                if any(h in bloom for h in hashes):
                    found.append(version)
        if not self.dry_run:
            for stale in indexed - set(current):  # indexes of content rewritten since
                delete_all_versions(self.storage, stale)
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
        all ``keys`` are listed together (S3 lists the versions of a prefix, not of one key):
        before the rewrites, after them (to delete all but the latest), and to verify.
        """
        if not keys:
            return []
        spec = self.specs[topic]
        hashes = {bytes.fromhex(h) for r in open_requests for h in r.subjects}
        prefix = keys[0] if len(keys) == 1 else topic_prefix(topic)
        intents = requests.load_intents(self.storage, topic)
        before = self.storage.all_versions(prefix)
        outcomes = [self._rewrite(topic, key, before.get(key, ()), hashes, intents)
                    for key in keys]
        if self.dry_run:
            return outcomes
        rewritten = self.storage.all_versions(prefix)
        for outcome in outcomes:
            rewrite.drop_others(self.storage, outcome, rewritten.get(outcome.key, ()))
        after = self.storage.all_versions(prefix)
        for outcome in outcomes:
            remaining = after.get(outcome.key, ())
            rewrite.verify(self.storage, outcome, remaining, spec, hashes, self.hmac_key,
                           raw_ids)
            self._settle_intent(topic, outcome, intents, bool(raw_ids))
            if outcome.verified and remaining:
                self._reindex(topic, remaining[0])
        return outcomes

    def _rewrite(self, topic: str, key: str, versions: Sequence[ObjectVersion],
                 hashes: set[bytes], intents: dict[str, requests.Intent]) -> FileOutcome:
        """One file rewritten; retried from a fresh listing if it changed meanwhile."""
        def before_write(outcome: FileOutcome) -> None:  # the places survive a kill
            if outcome.found:
                known = intents.setdefault(key, requests.Intent(key))
                for digest, places in outcome.found.items():
                    both = {tuple(p) for p in known.found.get(digest, []) + places}
                    known.found[digest] = [list(p) for p in sorted(both)]
                requests.save_intent(self.storage, topic, known)

        for attempt in range(3):
            outcome = FileOutcome(topic, key)
            if attempt:
                versions = self.storage.versions(key)
            try:
                rewrite.rewrite(self.storage, outcome, versions, self.specs[topic], hashes,
                                self.hmac_key, zstd_level=self.settings.archive.zstd_level,
                                metadata={"erasure_run": self.run_id}, dry_run=self.dry_run,
                                before_write=before_write)
            except ObjectChanged:
                continue  # another writer replaced it after the read: read it again
            return outcome
        raise MaintenanceError(f"{key} kept changing while erasure rewrote it", key=key)

    def _settle_intent(self, topic: str, outcome: FileOutcome,
                       intents: dict[str, requests.Intent], with_ids: bool) -> None:
        """Keep what a later run needs: a failed check by id bytes stays until a run with ids."""
        known = intents.get(outcome.key)
        if known is not None and known.needs_ids and not with_ids and outcome.verified:
            outcome.verified = False
            outcome.detail = ("an earlier run found a subject's id outside its field here; "
                              "only a run given the ids can verify it")
        if outcome.ids_outside_field:
            known = intents.setdefault(outcome.key, requests.Intent(outcome.key))
            known.needs_ids = True
            requests.save_intent(self.storage, topic, known)

    def _reindex(self, topic: str, version: ObjectVersion) -> None:
        """The index of a verified file's current version (unless it has one already)."""
        key = index.index_key(self._prefix(topic), version)
        if not self.storage.exists(key):
            index.build_index(self.storage, self._prefix(topic), version, self.specs[topic],
                              self.hmac_key)

    # -- step 4 ----------------------------------------------------------------------------
    def finish(self, open_requests: Sequence[requests.Request],
               findings: Sequence[TopicFindings], outcomes: Sequence[FileOutcome],
               topics: Sequence[str] | None = None) -> dict[str, Any]:
        """Recipients, ledger, request states and intents; the run's summary.

        ``topics``: every topic the run meant to search (a missing one is a problem, as is a
        file found and not erased). Raises MaintenanceError, after recording everything, if
        anything did not verify or a request is past its deadline with work left.
        """
        missing = [t for t in (topics or []) if t not in {f.topic for f in findings}]
        done = {(o.topic, o.key) for o in outcomes}
        missing += [f"{f.topic}: {k}" for f in findings for k in f.ready
                    if (f.topic, k) not in done]
        summary = erasure_report(self.run_id, self.now, self.dry_run, open_requests, findings,
                                 outcomes, self._recipients(findings, outcomes), missing)
        if not self.dry_run:
            self._record(open_requests, findings, outcomes, summary)
        problems = summary["problems"]
        if problems:
            raise MaintenanceError(f"erasure run {self.run_id}: {problems[0]}"
                                   + (f" (and {len(problems) - 1} more)"
                                      if len(problems) > 1 else ""), run_id=self.run_id)
        return summary

    def _recipients(self, findings: Sequence[TopicFindings],
                    outcomes: Sequence[FileOutcome]) -> dict[str, list[dict[str, Any]]]:
        """Subject hash -> the replays that delivered its records.

        Those found in this run, and those a killed run wrote down before rewriting.
        """
        places: dict[tuple[str, str], set[tuple[int, int]]] = {}
        for outcome in outcomes:
            for digest, found in outcome.found.items():
                places.setdefault((digest, outcome.topic), set()).update(
                    (p, o) for p, o in found)
        for topic in {f.topic for f in findings}:
            for intent in requests.load_intents(self.storage, topic).values():
                for digest, found in intent.found.items():
                    places.setdefault((digest, topic), set()).update((p, o) for p, o in found)
        result: dict[str, list[dict[str, Any]]] = {}
        for (digest, topic), at in sorted(places.items()):
            result.setdefault(digest, []).extend(
                {**asdict(r), "topic": topic} for r in delivered(self.storage, topic, at))
        return result

    def _record(self, open_requests: Sequence[requests.Request],
                findings: Sequence[TopicFindings], outcomes: Sequence[FileOutcome],
                summary: dict[str, Any]) -> None:
        write_ledger(self.storage, "erasure", self.run_id, summary["ledger"])
        ends = {f.topic: f.ends for f in findings if f.ends}
        for request, state in zip(open_requests, summary["requests"], strict=True):
            new_ends = {**{t: e for t, e in ends.items() if t not in request.ends},
                        **request.ends}
            if state["status"] == "closed" or new_ends != request.ends:
                requests.save_request(self.storage, replace(
                    request, ends=new_ends,
                    status="closed" if state["status"] == "closed" else request.status))
        for outcome in outcomes:
            if outcome.verified:
                requests.drop_intent(self.storage, outcome.topic, outcome.key)


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
    return erasure.finish(open_requests, findings, outcomes, [f.topic for f in findings])
