"""Erasure requests, kept open in the archive storage until their deadline. PII-free.

A request is stored as ``_erasure/requests/<request id>.json`` with the keyed hashes of its
subjects, never their ids, so that every later run can look for records that arrived after
the first (late events, records still on the topic) until the deadline. Files found to hold a
subject are written down before they are rewritten
(``_erasure/intents/<topic>/<archive key>.json``), so that a run killed half way is
finished by the next one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta

from eventvault.errors import ConfigError
from eventvault.storage import Storage

REQUESTS = "_erasure/requests/"
INTENTS = "_erasure/intents/"
_ID = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class Request:
    """One erasure request: its subjects (as keyed hashes, hex), when it came, its deadline."""

    request_id: str
    subjects: tuple[str, ...]
    received: datetime
    deadline: datetime
    status: str = "open"  # open, closed
    key: str = ""  # fingerprint of the HMAC key the subjects are hashed under
    ends: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    """Topic -> partition -> end offset at the first run: what the archiver must have read
    before the request can close."""

    def to_json(self) -> str:
        """The stored form."""
        return json.dumps({"request_id": self.request_id, "subjects": list(self.subjects),
                           "received": self.received.isoformat(),
                           "deadline": self.deadline.isoformat(), "status": self.status,
                           "key": self.key, "ends": self.ends}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> Request:
        """A request from its stored form."""
        data = json.loads(text)
        return cls(data["request_id"], tuple(data["subjects"]),
                   datetime.fromisoformat(data["received"]),
                   datetime.fromisoformat(data["deadline"]), data["status"], data.get("key", ""),
                   data.get("ends", {}))


def check_request_id(request_id: str) -> str:
    """A request id that can name a file: letters, digits, '.', '_', '-' (not first), to 128."""
    if not _ID.match(request_id):
        raise ConfigError(f"request id {request_id!r} must be 1 to 128 letters, digits, '.', "
                          "'_' or '-', not starting with '.'", setting="request_id")
    return request_id


def merged(known: Request | None, request_id: str, subjects: Iterable[str], now: datetime,
           deadline_days: int, key: str) -> Request:
    """A request with ``subjects`` added (a new one if ``known`` is None). Pure.

    A closed request takes no new subjects (they would get its old deadline): give them a
    request id of their own.
    """
    if known is None:
        return Request(request_id, tuple(sorted(set(subjects))), now,
                       now + timedelta(days=deadline_days), key=key)
    added = set(subjects) - set(known.subjects)
    if added and known.status == "closed":
        raise ConfigError(f"request {request_id} was closed on its deadline "
                          f"{known.deadline.isoformat()}; give new subjects a new request id",
                          setting="request_id")
    return replace(known, subjects=tuple(sorted(set(known.subjects) | added)))


def load_requests(storage: Storage) -> dict[str, Request]:
    """Every stored request, by id."""
    found = {}
    for key in storage.list(REQUESTS):
        if key.endswith(".json"):
            request = Request.from_json(storage.get(key).decode())
            found[request.request_id] = request
    return found


def save_request(storage: Storage, request: Request) -> None:
    """Store ``request``."""
    storage.put(f"{REQUESTS}{request.request_id}.json", request.to_json().encode())


@dataclass
class Intent:
    """A file found to hold (or have held) a subject, kept until it verifies clean.

    ``found``: subject hash -> (partition, offset) of its records there, written before the
    file is rewritten, so that a rerun still names the replays that delivered them.
    ``needs_ids``: a run found a subject's id in bytes outside its field; only a run that is
    given the ids can clear it.
    """

    key: str
    requests: list[str] = field(default_factory=list)
    found: dict[str, list[list[int]]] = field(default_factory=dict)
    needs_ids: bool = False


def _intent_key(topic: str, key: str) -> str:
    return f"{INTENTS}{topic}/{key}.json"


def load_intents(storage: Storage, topic: str) -> dict[str, Intent]:
    """The intents of ``topic``, by archive key."""
    found = {}
    for name in storage.list(f"{INTENTS}{topic}/"):
        if name.endswith(".json"):
            intent = Intent(**json.loads(storage.get(name)))
            found[intent.key] = intent
    return found


def save_intent(storage: Storage, topic: str, intent: Intent) -> None:
    """Store one file's intent (each file has its own object: parallel tasks do not race)."""
    storage.put(_intent_key(topic, intent.key), json.dumps(asdict(intent)).encode())


def drop_intent(storage: Storage, topic: str, key: str) -> None:
    """Forget a file that verified clean."""
    storage.delete_version(_intent_key(topic, key), None)
