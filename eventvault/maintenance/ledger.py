"""The maintenance ledger: what each erasure and retention run did, PII-free, in the archive.

One Parquet file per run, ``_erasure/ledger/<job>/<run id>.parquet``, with the schema
``eventvault.format.LEDGER_SCHEMA``; ``eventvault query`` shows them all as the view
``maintenance_ledger``.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from eventvault import format as fmt
from eventvault.layout import LEDGER
from eventvault.storage import Storage


def new_run_id(now: datetime) -> str:
    """A fresh run id: UTC start time and random hex."""
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def write_ledger(storage: Storage, job: str, run_id: str, rows: Sequence[dict[str, Any]]) -> str:
    """Store a run's ledger rows (missing columns are null); the key written."""
    columns = {name: [row.get(name) for row in rows] for name in fmt.LEDGER_SCHEMA.names}
    key = f"{LEDGER}{job}/{run_id}.parquet"
    storage.put(key, fmt.encode_rows(fmt.LEDGER_SCHEMA, columns))
    return key
