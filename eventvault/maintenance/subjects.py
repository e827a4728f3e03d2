"""Data subjects in records: where their id is, its keyed hash, and redaction. Pure functions.

A subject id is compared only by its keyed hash, HMAC-SHA256 under ``erasure.hmac_key``: the
index, the request store and the ledger hold hashes, never ids, and a hash cannot be turned
back into an id without the key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import orjson

from eventvault.settings import SubjectSettings

Header = tuple[str, bytes | None]
_MISSING = object()


@dataclass(frozen=True)
class SubjectSpec:
    """Where a topic's subject id is, and what erasure does (see SubjectSettings)."""

    location: Literal["key", "value", "header"]
    field: str | None = None
    action: Literal["drop", "redact"] = "drop"
    redact: tuple[str, ...] = ()

    @classmethod
    def of(cls, settings: SubjectSettings) -> SubjectSpec:
        """The spec of a topic's settings."""
        return cls(settings.location, settings.field, settings.action, tuple(settings.redact))

    @property
    def fingerprint(self) -> str:
        """Where the id is, as text: an index built for one place is no use for another."""
        return f"{self.location}:{self.field or ''}"

    @property
    def columns(self) -> tuple[str, ...]:
        """The archive columns that hold the id."""
        return {"key": ("key",), "value": ("value",), "header": ("headers",)}[self.location]


def keyed_hash(key: bytes, subject: bytes) -> bytes:
    """HMAC-SHA256 of a subject id: what eventvault stores instead of the id."""
    return hmac.new(key, subject, hashlib.sha256).digest()


def key_fingerprint(key: bytes) -> str:
    """A short name for an HMAC key (indexes built under another key are not used)."""
    return keyed_hash(key, b"eventvault index key")[:6].hex()


def parse_json(value: bytes | None, exact: bool = False) -> object:
    """A JSON value as producers write it; ``_MISSING`` when it is not JSON.

    orjson first (fast); Python's json where orjson refuses (NaN, Infinity, a UTF-8
    byte-order mark) or, with ``exact``, always (integers beyond 64 bits stay exact).
    """
    if not value:
        return _MISSING
    if not exact:
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            pass
    try:
        return json.loads(value.removeprefix(b"\xef\xbb\xbf").decode())
    except (UnicodeDecodeError, ValueError, RecursionError):
        return _MISSING


def _json_lookup(value: bytes | None, path: str) -> object:
    found = _walk(parse_json(value), path)
    if isinstance(found, float):  # orjson reads integers beyond 64 bits as floats
        found = _walk(parse_json(value, exact=True), path)
    return found


def _walk(node: object, path: str) -> object:
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _as_id(raw: object) -> bytes | None:
    """The id as text: a number as it is written, ``12345.0`` and ``1.2345e4`` as ``12345``."""
    if isinstance(raw, str):
        return raw.encode()
    if isinstance(raw, float) and raw.is_integer():
        return str(int(raw)).encode()
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return str(raw).encode()
    return None


def subjects_of(spec: SubjectSpec, key: bytes | None, value: bytes | None,
                headers: Sequence[Header]) -> tuple[bytes, ...]:
    """The subject ids one record names (none, one, or one per header of that name)."""
    if spec.location == "key":
        return () if key is None else (key,)
    if spec.location == "header":
        return tuple(v for k, v in headers if k == spec.field and v is not None)
    assert spec.field is not None
    found = _as_id(_json_lookup(value, spec.field))
    return () if found is None else (found,)


def _null_paths(document: object, paths: Iterable[str]) -> bool:
    """Set each dotted path that exists in ``document`` to None; whether any did."""
    changed = False
    for path in paths:
        *parents, last = path.split(".")
        node = document
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and last in node and node[last] is not None:
            node[last] = None
            changed = True
    return changed


def redact(spec: SubjectSpec, key: bytes | None, value: bytes | None,
           headers: Sequence[Header]) -> tuple[bytes | None, bytes | None, list[Header]]:
    """The record with its subject id and the ``redact`` fields removed.

    A JSON value is parsed and written again compactly with those fields set to null;
    a value that is not a JSON object is kept as it is when only the key or a header names
    the subject.
    """
    new_headers = list(headers)
    if spec.location == "key":
        key = None
    elif spec.location == "header":
        new_headers = [(k, v) for k, v in headers if k != spec.field]
    paths = list(spec.redact) + ([spec.field] if spec.location == "value" and spec.field
                                 else [])
    if paths and value:
        document = parse_json(value)
        if isinstance(document, dict) and _null_paths(document, paths):
            value = json.dumps(document, separators=(",", ":"), ensure_ascii=False,
                               allow_nan=True).encode()
    return key, value, new_headers
