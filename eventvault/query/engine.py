"""DuckDB over the archive: the only module that imports duckdb.

``eventvault query``, ``show`` and replay read the archive through these functions. httpfs is
loaded from the ``duckdb-extension-httpfs`` package's installed path; DuckDB never downloads
anything. S3 credentials are those the archiver uses (eventvault.storage finds them).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import duckdb
import pyarrow as pa

from eventvault.errors import ConfigError, EventVaultError, QueryError, StorageError
from eventvault.layout import LEDGER
from eventvault.query import timeprune
from eventvault.query.sql import LOAD_COMMENT, S3Access, quote_literal, setup_sql
from eventvault.settings import ArchiveSettings, StorageSettings
from eventvault.storage import open_storage
from eventvault.storage.s3_client import s3_credentials

Format = Literal["table", "csv", "json", "parquet"]


def httpfs_path() -> str:
    """Where the installed httpfs extension file is."""
    import duckdb_extension_httpfs  # noqa: PLC0415  (located on demand, S3 only)

    files = sorted(Path(duckdb_extension_httpfs.__file__).parent.rglob("httpfs.duckdb_extension"))
    if not files:
        raise QueryError("the duckdb-extension-httpfs package holds no httpfs extension")
    return str(files[-1])


def setup(storage: StorageSettings, *, for_print: bool = False, show_secrets: bool = False,
          topics: Sequence[str] | None = None) -> list[str]:
    """The setup statements for ``storage``'s archive.

    ``topics``: listed if not given; ``()`` for no views at all (not even the ledger's).
    ``for_print``: for the plain duckdb CLI, with comments, and with the S3 secret only if
    ``show_secrets``.
    """
    ledger = False
    if topics is None or len(topics):
        archive = open_storage(storage)
        topics = archive.topics() if topics is None else topics
        ledger = next(iter(archive.list(LEDGER)), None) is not None
    access = None
    if storage.is_s3:
        access = S3Access(*s3_credentials(storage), reveal=show_secrets or not for_print)
        if not (access.key_id and access.secret) and not for_print:
            raise StorageError(f"S3 {storage.url}: no credentials (set storage.access_key_id "
                               "and storage.secret_access_key, AWS_ACCESS_KEY_ID and "
                               "AWS_SECRET_ACCESS_KEY, or an AWS profile)", url=storage.url)
    statements = setup_sql(storage, topics, httpfs_path() if storage.is_s3 else None, access,
                           ledger)
    if for_print and access is not None:
        notes = [LOAD_COMMENT]
        if not access.key_id:
            notes.append("-- no S3 credentials in the settings or the environment: fill in "
                         "KEY_ID and SECRET")
        statements[:1] = [*notes, statements[0]]
    if for_print:  # as eventvault query prints times
        statements.insert(0, _UTC)
    return statements


_UTC = "SET TimeZone = 'UTC';"


def connect(storage: StorageSettings, topics: Sequence[str] | None = None, *,
            memory_limit: str | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the archive's views (``topics``: listed if not given).

    ``memory_limit`` bounds DuckDB's memory (it spills sorts to disk beyond it) and keeps rows
    in insertion order, as streaming readers need.
    """
    con = duckdb.connect(config={"autoinstall_known_extensions": False,
                                 "autoload_known_extensions": False})
    try:
        con.execute(_UTC)  # times print in UTC, whatever the machine's zone
        if memory_limit:
            con.execute(f"SET memory_limit = {quote_literal(memory_limit)}")
            con.execute("SET preserve_insertion_order = true")
        for statement in setup(storage, topics=topics):
            con.execute(statement)
    except duckdb.Error as exc:
        con.close()
        raise failure(exc, f"cannot open the archive at {storage.url}: ") from exc
    return con


_REMOTE = re.compile(r"s3://|https?://|connection|resolve host", re.IGNORECASE)
_S3_CODE = re.compile(r"^\w+: \S.*$")


def failure(exc: Exception, context: str = "") -> EventVaultError:
    """DuckDB's error as one line: a StorageError (exit 3) if reading S3 failed, else a QueryError.

    Reading S3 failed when httpfs answered an HTTP error or could not connect.

    httpfs's message spans lines; S3's error code (``AccessDenied: Access Denied``, on a line
    of its own) is kept, the hints and the SQL excerpt after it are not. Arrow batch readers
    pass DuckDB's errors on as Arrow errors with the same text.
    """
    text = str(exc)
    lines = text.splitlines()
    message = context + (lines[0] if lines else type(exc).__name__)
    if isinstance(exc, duckdb.HTTPException) or text.startswith("HTTP Error") or (
            (isinstance(exc, duckdb.IOException) or text.startswith("IO Error"))
            and _REMOTE.search(text)):
        codes = [line for line in lines[1:4] if _S3_CODE.match(line)]
        return StorageError(message + (f" ({codes[0]})" if codes else ""),
                            retriable=not text.startswith("HTTP Error"))
    return QueryError(message)


def fetch(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any], *,
          context: str = "") -> list[tuple[Any, ...]]:
    """All rows of a parameterised query (``context`` prefixes DuckDB's message on failure)."""
    try:
        return con.execute(sql, params).fetchall()
    except duckdb.Error as exc:
        raise failure(exc, context) from exc


def record_batches(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any], rows: int, *,
                   context: str = "") -> Iterator[pa.RecordBatch]:
    """The rows of a parameterised query as Arrow batches of at most ``rows`` rows."""
    try:
        yield from con.execute(sql, params).fetch_record_batch(rows)
    except (duckdb.Error, pa.ArrowException) as exc:  # reading a batch reads files too
        raise failure(exc, context) from exc


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
        if output is not None and f'"{output}"' in str(exc):  # DuckDB could not write there
            raise ConfigError(f"--output {output}: {failure(exc)}", setting="--output") from exc
        raise failure(exc) from exc
    except OSError as exc:
        raise ConfigError(f"--output {output}: {exc.strerror}", setting="--output") from exc
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
        raise ConfigError("--format parquet needs --output PATH", setting="arguments")
    target = str(output) if output else "/dev/stdout"
    options = {"csv": "FORMAT csv, HEADER true", "json": "FORMAT json",
               "parquet": "FORMAT parquet, COMPRESSION zstd"}[fmt]
    sys.stdout.flush()
    con.execute(f"COPY ({sql.strip().rstrip(';')}) TO {quote_literal(target)} ({options})")
