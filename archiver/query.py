"""``eventvault query``: DuckDB over the archive (the only module that touches duckdb).

httpfs is loaded from the ``duckdb-extension-httpfs`` package's installed path; DuckDB never
downloads anything. S3 credentials are those the archiver uses (settings, else boto3's chain).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import boto3
import duckdb

from archiver import timeprune
from archiver.errors import EventVaultError
from archiver.querysql import quote_literal, setup_sql
from archiver.settings import ArchiveSettings, StorageSettings
from archiver.storage import open_storage

Format = Literal["table", "csv", "json", "parquet"]


class QueryError(EventVaultError):
    """DuckDB refused the query; the message is DuckDB's."""

    exit_code = 1


def httpfs_path() -> str:
    """Where the installed httpfs extension file is."""
    import duckdb_extension_httpfs  # noqa: PLC0415  (located on demand, S3 only)

    files = sorted(Path(duckdb_extension_httpfs.__file__).parent.rglob("httpfs.duckdb_extension"))
    if not files:
        raise QueryError("the duckdb-extension-httpfs package holds no httpfs extension")
    return str(files[-1])


def _credentials(storage: StorageSettings) -> tuple[str | None, str | None]:
    if storage.access_key_id:
        secret = storage.secret_access_key
        return storage.access_key_id, secret.get_secret_value() if secret else None
    found = boto3.Session().get_credentials()
    if found is None:
        return None, None
    frozen = found.get_frozen_credentials()
    return frozen.access_key, frozen.secret_key


def setup(storage: StorageSettings, *, for_print: bool = False,
          topics: Sequence[str] | None = None) -> list[str]:
    """The setup statements for ``storage``'s archive (``topics``: listed if not given)."""
    if topics is None:
        topics = open_storage(storage).topics()
    is_s3 = storage.url.startswith("s3://")
    key_id, secret = (None, None)
    if is_s3 and not for_print:
        key_id, secret = _credentials(storage)
    elif is_s3 and storage.access_key_id:
        key_id = storage.access_key_id  # printed with a placeholder for the secret
    return setup_sql(storage, topics, httpfs_path() if is_s3 else None, key_id, secret)


def connect(storage: StorageSettings,
            topics: Sequence[str] | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the archive's views."""
    con = duckdb.connect(config={"autoinstall_known_extensions": False,
                                 "autoload_known_extensions": False})
    try:
        con.execute("SET TimeZone = 'UTC'")  # times print in UTC, whatever the machine's zone
        for statement in setup(storage, topics=topics):
            con.execute(statement)
    except duckdb.Error as exc:
        raise QueryError(f"cannot open the archive at {storage.url}: {exc}") from exc
    return con


def fetch(storage: StorageSettings, sql: str, params: list[Any],
          topics: Sequence[str] | None = None) -> list[tuple[Any, ...]]:
    """Rows of a parameterised query over the archive (``topics``: if already listed)."""
    con = connect(storage, topics)
    try:
        return con.execute(sql, params).fetchall()
    except duckdb.Error as exc:
        raise QueryError(str(exc).splitlines()[0]) from exc
    finally:
        con.close()


_EXPLAIN = re.compile(r"\s*EXPLAIN(\s+ANALYZE)?\s+", re.IGNORECASE)


def _parser(con: duckdb.DuckDBPyConnection) -> Callable[[str], dict[str, Any]]:
    def parse(sql: str) -> dict[str, Any]:
        row = con.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()
        tree: dict[str, Any] = json.loads(row[0]) if row else {"error": True}
        if tree["error"] or len(tree["statements"]) != 1:
            raise ValueError(tree.get("error_message", "not one SELECT statement"))
        return tree

    return parse


def pruned(con: duckdb.DuckDBPyConnection, sql: str, views: timeprune.Views) -> str:
    """``sql`` with ``timestamp`` filters also given as ``date``/``hour`` filters (if any).

    Only a single SELECT statement, or its ``EXPLAIN [ANALYZE]``, is rewritten; any other SQL
    is returned as written.
    """
    explain = _EXPLAIN.match(sql)
    prefix, select = (explain[0], sql[explain.end():]) if explain else ("", sql)
    parse = _parser(con)

    def evaluate(node: dict[str, Any]) -> tuple[str, int] | None:
        tree = {"error": False, "statements": [{"node": node, "named_param_map": []}]}
        try:
            text = con.execute("SELECT json_deserialize_sql(?)", [json.dumps(tree)]).fetchone()
            row = con.execute(text[0]).fetchone() if text else None
        except duckdb.Error:
            return None
        return (str(row[0]), int(row[1])) if row and None not in row else None

    try:
        tree = parse(select)
        if not timeprune.prune(tree["statements"][0]["node"], views,
                               lambda text: parse(text)["statements"][0]["node"], evaluate):
            return sql
        row = con.execute("SELECT json_deserialize_sql(?)", [json.dumps(tree)]).fetchone()
    except (ValueError, duckdb.Error):
        return sql
    return prefix + str(row[0]) if row else sql


def record_time(archive: ArchiveSettings) -> Callable[[str], bool]:
    """Whether a topic's files are partitioned by the record timestamp."""
    return lambda topic: archive.event_time_spec(topic).field is None


def run(storage: StorageSettings, sql: str, fmt: Format, output: Path | None,
        archive: ArchiveSettings | None = None) -> None:
    """Run ``sql`` and write its result to ``output`` (stdout by default).

    ``archive`` says which topics take their event time from a JSON field: ``timestamp``
    filters do not prune those topics' files.
    """
    topics = open_storage(storage).topics()
    con = connect(storage, topics)
    sql = pruned(con, sql, timeprune.views_for(topics, record_time(archive or ArchiveSettings())))
    try:
        _write(con, sql, fmt, output)
    except duckdb.Error as exc:
        raise QueryError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from exc
    finally:
        con.close()


def _write(con: duckdb.DuckDBPyConnection, sql: str, fmt: Format, output: Path | None) -> None:
    if fmt == "table" or _EXPLAIN.match(sql):
        if _EXPLAIN.match(sql):  # the plan as text, as the duckdb CLI prints it
            text = "".join(row[1] + "\n" for row in con.execute(sql).fetchall())
        else:
            rel = con.sql(sql)
            if rel is None:  # a statement without a result
                return
            text = str(rel)  # DuckDB's box rendering, columns elided to fit
        if output:
            output.write_text(text)
        else:
            sys.stdout.write(text)
        return
    if fmt == "parquet" and output is None:
        raise QueryError("--format parquet needs --output PATH")
    target = str(output) if output else "/dev/stdout"
    options = {"csv": "FORMAT csv, HEADER true", "json": "FORMAT json",
               "parquet": "FORMAT parquet, COMPRESSION zstd"}[fmt]
    sys.stdout.flush()
    con.execute(f"COPY ({sql.strip().rstrip(';')}) TO {quote_literal(target)} ({options})")
