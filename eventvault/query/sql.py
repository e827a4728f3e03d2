"""SQL that makes the archive queryable in DuckDB: pure functions, no connection.

The same text serves ``eventvault query`` and ``eventvault query --print-setup``, which prints
it for the plain ``duckdb`` CLI. Every topic becomes a view named after it, quoted; ``events``
spans all topics. Views add ``key_text``, ``value_text`` (NULL where not UTF-8) and
``value_json`` (NULL where not JSON), and type ``date`` as DATE and ``hour`` as INTEGER.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from eventvault.layout import LEDGER
from eventvault.settings import StorageSettings

HIVE_TYPES = "{'topic': VARCHAR, 'date': DATE, 'hour': INTEGER}"
# value_json builds on value_text (a lateral alias): with decode() written twice, DuckDB 1.5.5
# shares the subexpression outside TRY and a non-UTF-8 value fails the whole query.
CONVENIENCE = ("TRY(decode(key)) AS key_text, TRY(decode(value)) AS value_text, "
               "CASE WHEN json_valid(value_text) THEN CAST(value_text AS JSON) END AS value_json")


def quote_ident(name: str) -> str:
    """A DuckDB identifier for any name."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    """A DuckDB string literal."""
    return "'" + text.replace("'", "''") + "'"


def root_url(storage: StorageSettings) -> str:
    """The archive root as DuckDB reads it: ``s3://bucket/prefix`` or a local path."""
    if storage.is_s3:
        return storage.url.rstrip("/")
    return str(storage.local_root())


def glob(storage: StorageSettings, topic: str | None = None) -> str:
    """The Parquet files of one topic, or of all."""
    folder = f"topic={topic}" if topic else "topic=*"
    return f"{root_url(storage)}/{folder}/*/*/*.parquet"


def file_urls(storage: StorageSettings, keys: Sequence[str]) -> list[str]:
    """The URLs DuckDB reads for archive object keys."""
    root = root_url(storage)
    return [f"{root}/{key}" for key in keys]


def select_sql(files: str | Sequence[str]) -> str:
    """``SELECT`` of the view columns over a glob or a list of archive files."""
    source = (quote_literal(files) if isinstance(files, str)
              else "[" + ", ".join(map(quote_literal, files)) + "]")
    return (f"SELECT *, {CONVENIENCE} FROM read_parquet({source}, "  # noqa: S608 (quoted)
            f"hive_partitioning = true, hive_types = {HIVE_TYPES})")


def view_sql(name: str, files: str) -> str:
    """``CREATE VIEW`` over the archive files ``files``."""
    return f"CREATE OR REPLACE VIEW {quote_ident(name)} AS {select_sql(files)};"


@dataclass(frozen=True)
class S3Access:
    """The credentials and region DuckDB reads S3 with (``reveal``: print the secrets)."""

    key_id: str | None = None
    secret: str | None = None
    token: str | None = None
    region: str | None = None
    reveal: bool = True


_HIDDEN = "<{} (eventvault query --print-setup --show-secrets prints it)>"


def secret_sql(storage: StorageSettings, access: S3Access) -> str | None:
    """``CREATE SECRET`` for S3 storage (None for local storage).

    Key id and secret are given (DuckDB's own credential chain needs its ``aws`` extension,
    which eventvault does not install); unless ``access.reveal``, the secret and session token
    are placeholders.
    """
    if not storage.is_s3:
        return None

    def hidden(value: str | None, what: str) -> str:
        return quote_literal(value if value and access.reveal else _HIDDEN.format(what))

    parts = ["TYPE s3",
             f"KEY_ID {quote_literal(access.key_id or '<access key id>')}",
             f"SECRET {hidden(access.secret, 'secret access key')}"]
    if access.token:
        parts.append(f"SESSION_TOKEN {hidden(access.token, 'session token')}")
    parts.append(f"REGION {quote_literal(access.region or 'us-east-1')}")
    if storage.endpoint_url:
        scheme, _, host = storage.endpoint_url.partition("://")
        parts += [f"ENDPOINT {quote_literal(host.rstrip('/'))}", "URL_STYLE 'path'",
                  f"USE_SSL {'true' if scheme == 'https' else 'false'}"]
    return f"CREATE OR REPLACE SECRET eventvault ({', '.join(parts)});"


LOAD_COMMENT = ("-- httpfs, from the duckdb-extension-httpfs package eventvault installs "
                "(never downloaded). DuckDB loads an extension by name only from its extension "
                "directory (~/.duckdb/extensions, where INSTALL httpfs downloads it), so this "
                "loads the installed file by its path; after INSTALL of that path once, "
                "LOAD httpfs works anywhere.")


def setup_sql(storage: StorageSettings, topics: Sequence[str], httpfs_path: str | None,
              access: S3Access | None = None, ledger: bool = False) -> list[str]:
    """Every statement that makes ``topics`` and ``events`` queryable.

    ``ledger``: the archive has a maintenance ledger, shown as the view ``maintenance_ledger``.
    """
    out = []
    if storage.is_s3:
        out.append(f"LOAD {quote_literal(httpfs_path)};" if httpfs_path else "LOAD httpfs;")
        secret = secret_sql(storage, access or S3Access())
        if secret:
            out.append(secret)
    out += [view_sql(topic, glob(storage, topic)) for topic in topics]
    if topics:
        out.append(view_sql("events", glob(storage)))
    if ledger:
        files = quote_literal(f"{root_url(storage)}/{LEDGER}*/*.parquet")
        out.append(f"CREATE OR REPLACE VIEW maintenance_ledger AS SELECT * FROM "  # noqa: S608
                   f"read_parquet({files}, union_by_name = true);")
    return out


RECORD_BYTES_SQL = ("coalesce(octet_length(key), 0) + coalesce(octet_length(value), 0) + "
                    "coalesce(list_sum(list_transform(headers, lambda h: "
                    "octet_length(encode(h.key)) + coalesce(octet_length(h.value), 0))), 0)")
"""A record's size as Kafka counts it: key, value, and header names and values."""
