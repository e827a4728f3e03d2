"""Rewriting one archive object without the subjects, deleting its other versions, verifying.

The rewrite replaces the object only if it is still the version that was read (``If-Match``):
two erasure runs at once cannot undo each other. Which versions to delete is decided from a
listing taken after the rewrite: every version but the latest (S3 stores differ on what a
write does to older versions when versioning is suspended). An object whose latest version is
a delete marker is not brought back, only checked.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

from eventvault import format as fmt
from eventvault.errors import MaintenanceError
from eventvault.maintenance.erasure import Erased, erase_rows, leftovers, offsets_kept
from eventvault.maintenance.report import FileOutcome
from eventvault.maintenance.subjects import SubjectSpec
from eventvault.storage import ObjectVersion, Storage

BeforeWrite = Callable[[FileOutcome], None]


def sha256(data: bytes) -> str:
    """Hex SHA-256 of an object's bytes, as the ledger records them."""
    return hashlib.sha256(data).hexdigest()


def current_of(versions: Sequence[ObjectVersion]) -> ObjectVersion | None:
    """The version readers see (None: there is none, or the latest is a delete marker)."""
    return next((v for v in versions if v.latest and not v.delete_marker), None)


def _places(erased: Erased) -> dict[str, list[list[int]]]:
    return {h.hex(): [list(p) for p in places] for h, places in erased.found.items()}


def rewrite(storage: Storage, outcome: FileOutcome, versions: Sequence[ObjectVersion],
            spec: SubjectSpec, hashes: set[bytes], hmac_key: bytes, *, zstd_level: int,
            metadata: dict[str, str], dry_run: bool, before_write: BeforeWrite) -> None:
    """Fill ``outcome``: the current version without the subjects, the others deleted."""
    current = current_of(versions)
    if current is None:
        _check_deleted(storage, outcome, versions, spec, hashes, hmac_key)
        return
    data = storage.get(outcome.key, current.version_id)
    table = fmt.decode(data)
    erased = erase_rows(table, spec, hashes, hmac_key)
    outcome.rows, outcome.dropped, outcome.redacted = (table.num_rows, erased.dropped,
                                                       erased.redacted)
    outcome.found = _places(erased)
    outcome.version_before, outcome.sha256_before = current.version_id, sha256(data)
    outcome.bytes_before = len(data)
    outcome.noncurrent_deleted = sum(1 for v in versions
                                     if v is not current and v.version_id is not None)
    if dry_run:
        outcome.detail = "dry run: nothing written"
        return
    before_write(outcome)
    if erased.changed:
        rewritten = fmt.encode(erased.table, zstd_level=zstd_level,
                               metadata={**fmt.file_metadata(data), **metadata})
        if not offsets_kept(table, fmt.decode(rewritten), erased):
            raise MaintenanceError(f"erasure of {outcome.key} would lose other records; "
                                   "nothing was written", key=outcome.key)
        outcome.version_after = storage.replace(outcome.key, rewritten, current.etag)
        outcome.sha256_after, outcome.bytes_after = sha256(rewritten), len(rewritten)


def drop_others(storage: Storage, outcome: FileOutcome,
                versions: Sequence[ObjectVersion]) -> None:
    """Delete every version of the object but the latest, as listed after the rewrite."""
    if outcome.verified is not None or not versions:
        return  # a deleted object is left as it is
    latest = current_of(versions)
    others = [v for v in versions if v is not latest and v.version_id is not None]
    for version in others:
        storage.delete_version(outcome.key, version.version_id)
    outcome.noncurrent_deleted = len(others)


def _check_deleted(storage: Storage, outcome: FileOutcome, versions: Sequence[ObjectVersion],
                   spec: SubjectSpec, hashes: set[bytes], hmac_key: bytes) -> None:
    """An object deleted with a delete marker: its older versions are read, not brought back."""
    named = []
    for version in versions:
        if version.delete_marker or version.version_id is None:
            continue
        table = fmt.decode(storage.get(outcome.key, version.version_id))
        if leftovers(table, spec, hashes, hmac_key):
            named.append(version.version_id)
    if named:
        outcome.verified = False
        outcome.detail = (f"the object was deleted (a delete marker), but {len(named)} older "
                          f"versions still hold a subject ({', '.join(named)}); erasure does "
                          "not restore deleted objects: delete those versions, or restore the "
                          "object, and run again")
    elif versions:
        outcome.verified = True
        outcome.detail = "the object was deleted; no older version names a subject"


def verify(storage: Storage, outcome: FileOutcome, remaining: Sequence[ObjectVersion],
           spec: SubjectSpec, hashes: set[bytes], hmac_key: bytes,
           raw_ids: Sequence[str]) -> None:
    """Set ``outcome.verified``: one version left, and it names no subject."""
    if outcome.verified is not None:
        return  # decided already (a deleted object)
    existed = outcome.version_before is not None or outcome.sha256_before is not None
    if not remaining:
        outcome.verified = not existed
        outcome.detail = ("the object is gone, with every version: it was there when read"
                          if existed else "no such object: nothing to erase")
        return
    if len(remaining) > 1 or remaining[0].delete_marker:
        outcome.verified, outcome.detail = False, f"{len(remaining)} versions remain"
        return
    table = fmt.decode(storage.get(outcome.key, remaining[0].version_id))
    left = leftovers(table, spec, hashes, hmac_key, [r.encode() for r in raw_ids])
    if left:
        outcome.verified = False
        outcome.ids_outside_field = not leftovers(table, spec, hashes, hmac_key)
        where = ("by its id's bytes outside its field: add that field to erasure redact"
                 if outcome.ids_outside_field else "by its field")
        outcome.detail = f"{len(left)} records still name a subject, e.g. {left[0]} ({where})"
        return
    outcome.verified, outcome.detail = True, "verified: one version, no subject"
