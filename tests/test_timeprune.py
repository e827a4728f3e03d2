"""Time pruning: rewritten queries return the rows of the query as written, and read fewer files.

The archive here is written by the archiver's own file writer from made-up records (no
broker): a record-time topic, one whose event time is a JSON field (its files are placed
five hours away from the record timestamps), and records in the Hive null partition.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import duckdb
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from eventvault import format as fmt
from eventvault.archiver.batching import Roll
from eventvault.archiver.encoder import write_file
from eventvault.layout import hour_of
from eventvault.progress import Cut
from eventvault.query import timeprune
from eventvault.query.engine import connect, pruned
from eventvault.settings import StorageSettings
from eventvault.storage.local import LocalStorage
from eventvault.times import EPOCH, MS_PER_HOUR, timestamp_us

H0 = 494_000  # an hour in 2026
HOUR_MS = MS_PER_HOUR
TIMES_MS = sorted({(H0 + h) * HOUR_MS + d for h in range(4) for d in (0, 1, HOUR_MS - 1)}
                  | {0, -5_000, HOUR_MS})
TOPICS = {"t.x": 0, "json-time": 5}  # event time = record time + this many hours


def _rows() -> Iterator[tuple[str, int, int, int]]:
    """(topic, partition, offset, timestamp ms) of every archived record."""
    for topic in TOPICS:
        for i, ts in enumerate(TIMES_MS):
            yield topic, i % 2, i // 2, ts


def _write(root: Path) -> None:
    storage = LocalStorage(root)
    files: dict[tuple[str, int, int | None], fmt.Columns] = {}
    for topic, partition, offset, ts in _rows():
        event_us = None if ts < 0 else (ts + TOPICS[topic] * HOUR_MS) * 1000
        cols = files.setdefault((topic, partition, hour_of(event_us)), fmt.Columns(partition))
        cols.append(offset, timestamp_us(ts), "CreateTime", None, b"{}", ())
    for (topic, partition, hour), cols in files.items():
        cut = Cut(cols.offsets[0], cols.offsets[-1], hour)
        write_file(storage, Roll(topic, partition, cut, cols, rebuilt=False), 1)


VIEWS = timeprune.views_for(list(TOPICS), lambda topic: TOPICS[topic] == 0)


@pytest.fixture(scope="module")
def con(tmp_path_factory: pytest.TempPathFactory) -> Iterator[duckdb.DuckDBPyConnection]:
    root = tmp_path_factory.mktemp("arch")
    _write(root)
    connection = connect(StorageSettings(url=str(root)), list(TOPICS))
    yield connection
    connection.close()


def _iso(ms: int) -> str:
    return (EPOCH + timedelta(milliseconds=ms)).isoformat()


def _literal(ms: int, form: int) -> str:
    return [f"'{_iso(ms)}'", f"TIMESTAMPTZ '{_iso(ms)}'",
            f"make_timestamp({ms * 1000})"][form]


points = st.sampled_from(TIMES_MS).flatmap(lambda t: st.sampled_from([t - 1, t, t + 1]))
comparisons = st.sampled_from([">=", ">", "<", "<=", "="])


@st.composite
def predicates(draw: st.DrawFn) -> str:
    """A WHERE clause with one or two time bounds in the forms pruning recognises."""
    column = draw(st.sampled_from(["timestamp", "v.timestamp", '"TimeStamp"']))
    parts = []
    for _ in range(draw(st.integers(1, 2))):
        value = _literal(draw(points), draw(st.integers(0, 2)))
        if draw(st.booleans()):
            parts.append(f"{value} BETWEEN {column} AND {column}"  # not a bound: kept as is
                         if draw(st.booleans()) else
                         f"{column} BETWEEN {value} AND {_literal(draw(points), 1)}")
        else:
            op = draw(comparisons)
            flipped = {">": "<", "<": ">", ">=": "<=", "<=": ">=", "=": "="}[op]
            parts.append(f"{column} {op} {value}" if draw(st.booleans())
                         else f"{value} {flipped} {column}")
    if draw(st.booleans()):
        parts.append("partition = 0")
    return " AND ".join(parts)


@settings(max_examples=200, deadline=None)
@example(view='"t.x"', where="timestamp BETWEEN '1969-12-31 23:59:50' AND '1970-01-01 00:00:10'")
@example(view="events", where="v.timestamp > '1969-12-31 23:00:00' AND timestamp <= '1970-01-01'")
@given(view=st.sampled_from(['"t.x"', "events", '"json-time"']), where=predicates())
def test_rewritten_queries_return_the_same_rows(con: duckdb.DuckDBPyConnection, view: str,
                                                where: str) -> None:
    sql = f'SELECT topic, partition, "offset" FROM {view} v WHERE {where}'
    rewritten = pruned(con, sql, VIEWS)
    assert sorted(con.execute(rewritten).fetchall()) == sorted(con.execute(sql).fetchall())
    if view == '"json-time"':
        assert rewritten == sql


def _files_read(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    plan = con.sql(f"EXPLAIN ANALYZE {sql}").fetchall()[0][1]
    return sum(int(n) for n in re.findall(r"Total Files Read:\s*(\d+)", plan))


def test_a_one_hour_timestamp_filter_reads_that_hours_files(
        con: duckdb.DuckDBPyConnection, tmp_path_factory: pytest.TempPathFactory) -> None:
    start, end = _iso((H0 + 1) * HOUR_MS), _iso((H0 + 2) * HOUR_MS)
    sql = (f"SELECT count(*) FROM \"t.x\" WHERE timestamp >= '{start}' "
           f"AND timestamp < '{end}'")
    rewritten = pruned(con, sql, VIEWS)
    # the hour's two partitions' files (the bounds rule out the null partition)
    assert _files_read(con, sql) == 11
    assert _files_read(con, rewritten) == 2
    assert con.execute(rewritten).fetchall() == con.execute(sql).fetchall() == [(3,)]
    # events: the JSON-time topic's files are all read, the record-time topic's are pruned
    events = sql.replace('"t.x"', "events")
    assert _files_read(con, pruned(con, events, VIEWS)) == 2 + _files_read(
        con, "SELECT count(*) FROM \"json-time\"")


@pytest.mark.parametrize("sql", [
    'WITH "t.x" AS (SELECT 1 AS timestamp) SELECT * FROM "t.x" WHERE timestamp > 0',
    "SELECT * FROM (SELECT * FROM \"t.x\") WHERE timestamp > '2026-01-01'",
    "SELECT * FROM \"t.x\" WHERE timestamp > ?",
    "SELECT * FROM \"t.x\" WHERE timestamp > (SELECT max(timestamp) FROM events)",
    "SELECT * FROM \"t.x\" a, \"json-time\" b WHERE timestamp > '2026-01-01'",
    "SELECT * FROM \"t.x\" WHERE CAST(timestamp AS DATE) = DATE '2026-01-01'",
    "SELECT * FROM \"t.x\" WHERE timestamp > '2026-01-01' OR partition = 1",
    "COPY (SELECT 1) TO '/dev/null'",
    "SELECT 1; SELECT 2",
    "SELEC nonsense",
])
def test_other_sql_is_left_as_written(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    assert pruned(con, sql, VIEWS) == sql


def test_joins_prune_by_qualified_columns(con: duckdb.DuckDBPyConnection) -> None:
    sql = ("SELECT count(*) FROM \"t.x\" a JOIN events b ON a.\"offset\" = b.\"offset\" "
           f"WHERE a.timestamp >= '{_iso((H0 + 3) * HOUR_MS)}'")
    rewritten = pruned(con, sql, VIEWS)
    assert "a.date" in rewritten
    assert "b.date" not in rewritten
    assert con.execute(rewritten).fetchall() == con.execute(sql).fetchall()


MIDDLE = (H0 + 2) * HOUR_MS  # a record's time; hours before and after it hold files too
RECOGNISED = {  # every form the module docstring names, each side of the comparison
    ">=": "{c} >= {x}", ">": "{c} > {x}", "<": "{c} < {x}", "<=": "{c} <= {x}", "=": "{c} = {x}",
    "flipped <=": "{x} <= {c}", "flipped >": "{x} > {c}", "flipped <": "{x} < {c}",
    "flipped =": "{x} = {c}", "BETWEEN": "{c} BETWEEN {x} AND {y}",
}


@pytest.mark.parametrize("literal", [0, 1, 2], ids=["string", "timestamptz", "make_timestamp"])
@pytest.mark.parametrize("form", list(RECOGNISED))
def test_every_recognised_form_is_rewritten_and_reads_fewer_files(
        con: duckdb.DuckDBPyConnection, form: str, literal: int) -> None:
    where = RECOGNISED[form].format(c="timestamp", x=_literal(MIDDLE, literal),
                                    y=_literal(MIDDLE + HOUR_MS - 1, literal))
    sql = f'SELECT partition, "offset" FROM "t.x" WHERE {where}'
    rewritten = pruned(con, sql, VIEWS)
    assert '"t.x".date' in rewritten  # the implied date/hour bound
    assert sorted(con.execute(rewritten).fetchall()) == sorted(con.execute(sql).fetchall())
    assert con.execute(sql).fetchall(), "the bound selects some records"
    assert _files_read(con, rewritten) < _files_read(con, sql)


@pytest.mark.parametrize("column", ["v.timestamp", '"TimeStamp"', '"v"."timestamp"'])
def test_every_spelling_of_the_column_is_rewritten(con: duckdb.DuckDBPyConnection,
                                                   column: str) -> None:
    sql = f"SELECT count(*) FROM events v WHERE {column} >= '{_iso(MIDDLE)}'"
    rewritten = pruned(con, sql, VIEWS)
    assert "v.date" in rewritten
    assert con.execute(rewritten).fetchall() == con.execute(sql).fetchall()
    assert _files_read(con, rewritten) < _files_read(con, sql)
