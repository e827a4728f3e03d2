"""The subject index: a Bloom filter of subject hashes beside each archive file.

Erasure must find the files that hold a subject without reading the archive. Each archive file
gets a small index object, a Bloom filter of the keyed hashes (HMAC) of the subject ids in it,
stored under ``_erasure/index/``:

    _erasure/index/<key fingerprint>/<subject location>/<archive key>.<etag>.bloom

The name carries the archive file's etag, so one LIST of the index prefix tells which files
have an index of their current content; a file rewritten by erasure gets a new etag and a new
index. An index holds no subject id, only bits (at 14.4 bits per subject, one false positive
in a thousand). Indexes are built by erasure itself for files that have none (files written
before, or since its last run), reading only the column that holds the id.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import pyarrow.parquet as pq

from eventvault.maintenance.subjects import SubjectSpec, keyed_hash, subjects_of
from eventvault.storage import ObjectVersion, Storage

ROOT = "_erasure/index/"
_MAGIC = b"EVB1\n"
_FALSE_POSITIVES = 0.001


def _etag_text(etag: str) -> str:
    return etag.strip('"').replace("/", "_")


def index_prefix(key_fingerprint: str, spec: SubjectSpec) -> str:
    """Where the indexes of files under one HMAC key and subject location are."""
    location = hashlib.sha256(spec.fingerprint.encode()).hexdigest()[:8]
    return f"{ROOT}{key_fingerprint}/{location}/"


def index_key(prefix: str, archive: ObjectVersion) -> str:
    """The index object of one archive file version."""
    return f"{prefix}{archive.key}.{_etag_text(archive.etag)}.bloom"


def archive_key_of(key: str) -> str | None:
    """The archive file an index object is of (None: not an index object)."""
    if not key.startswith(ROOT) or not key.endswith(".bloom"):
        return None
    parts = key[len(ROOT):].split("/", 2)
    return parts[2].rsplit(".", 2)[0] if len(parts) == 3 else None


@dataclass(frozen=True)
class Bloom:
    """A Bloom filter over 32-byte hashes (double hashing from two 64-bit halves)."""

    bits: bytes
    hashes: int

    @classmethod
    def build(cls, digests: Iterable[bytes]) -> Bloom:
        """A filter holding ``digests``, sized for one false positive in a thousand."""
        unique = set(digests)
        size = max(64, math.ceil(-len(unique) * math.log(_FALSE_POSITIVES) / math.log(2) ** 2))
        count = max(1, round(size / max(1, len(unique)) * math.log(2)))
        bits = bytearray((size + 7) // 8)
        nbits = len(bits) * 8
        for digest in unique:
            for position in _positions(digest, count, nbits):
                bits[position >> 3] |= 1 << (position & 7)
        return cls(bytes(bits), count)

    def __contains__(self, digest: object) -> bool:
        if not isinstance(digest, bytes):
            return False
        nbits = len(self.bits) * 8
        return all(self.bits[p >> 3] >> (p & 7) & 1
                   for p in _positions(digest, self.hashes, nbits))

    def encode(self, rows: int) -> bytes:
        """The index object: a JSON header line (the name says which file it is of), bits."""
        header = {"rows": rows, "hashes": self.hashes}
        return _MAGIC + json.dumps(header).encode() + b"\n" + self.bits

    @classmethod
    def decode(cls, data: bytes) -> Bloom:
        """The filter of an index object."""
        if not data.startswith(_MAGIC):
            raise ValueError("not an eventvault subject index")
        header, _, bits = data[len(_MAGIC):].partition(b"\n")
        return cls(bits, int(json.loads(header)["hashes"]))


def _positions(digest: bytes, count: int, nbits: int) -> Iterator[int]:
    first = int.from_bytes(digest[:8], "little")
    step = int.from_bytes(digest[8:16], "little") | 1
    for i in range(count):
        yield (first + i * step) % nbits


def file_digests(storage: Storage, key: str, spec: SubjectSpec,
                 hmac_key: bytes) -> tuple[set[bytes], int]:
    """The keyed hashes of the subject ids in one archive file, and its row count.

    Reads the file's footer and only the column that holds the id.
    """
    with storage.reader(key) as source:
        table = pq.ParquetFile(source).read(columns=list(spec.columns))
    columns = {name: table.column(name).to_pylist() for name in spec.columns}
    rows = table.num_rows
    keys = columns.get("key", [None] * rows)
    values = columns.get("value", [None] * rows)
    headers = columns.get("headers", [[]] * rows)
    digests = set()
    for k, v, h in zip(keys, values, headers, strict=True):
        for subject in subjects_of(spec, k, v, [(e["key"], e["value"]) for e in h]):
            digests.add(keyed_hash(hmac_key, subject))
    return digests, rows


def build_index(storage: Storage, prefix: str, archive: ObjectVersion, spec: SubjectSpec,
                hmac_key: bytes) -> Bloom:
    """Index one archive file version and store the index; the filter."""
    digests, rows = file_digests(storage, archive.key, spec, hmac_key)
    bloom = Bloom.build(digests)
    storage.put(index_key(prefix, archive), bloom.encode(rows))
    return bloom
