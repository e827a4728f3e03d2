"""`eventvault query` over local and S3 archives: results equal what was produced."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from eventvault.query.engine import connect
from eventvault.query.sql import quote_ident
from eventvault.settings import StorageSettings
from tests.cliutil import run_cli
from tests.kafkautil import Rec, archive_once, create_topic, produce, settings

pytestmark = pytest.mark.integration

RECORDS = [
    Rec(0, b"order-1", b'{"type": "OrderPlaced", "amount": 10}', (("h", b"1"),), 1_767_225_600_000),
    Rec(1, None, b"\xff\xfe not utf-8", (), 1_767_229_200_000),
    Rec(0, b"order-1", None, (), 1_767_232_800_000),
    Rec(1, b"\x00bin", b"[1, 2]", (("dup", None), ("dup", b"x")), 1_767_232_800_001),
    Rec(0, b"\xc3\x28", b"plain text, not JSON", (), 1_767_232_800_002),  # key not UTF-8
]


Produced = dict[tuple[int, int], Rec]


def _archive(kafka_bootstrap: str, url: str, endpoint: str | None = None) -> tuple[str, Produced]:
    topic = f"q.orders-{uuid.uuid4().hex[:6]}_v1"
    create_topic(kafka_bootstrap, topic, partitions=2)
    produced = produce(kafka_bootstrap, topic, RECORDS)
    archive_once(settings(kafka_bootstrap, url, [topic], f"g-{topic}", endpoint=endpoint))
    return topic, produced


def _csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def _check(topic: str, produced: Produced, env: dict[str, str], tmp_path: Path) -> None:
    sql = (f'select partition, "offset", hex(key) k, hex(value) v, key_text, '
           f"value_json->>'$.type' t, date, hour, len(headers) nh "
           f'from {quote_ident(topic)} order by partition, "offset"')
    res = run_cli("query", sql, "--format", "csv", env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    rows = _csv(res.stdout)
    assert [(int(r["partition"]), int(r["offset"])) for r in rows] == sorted(produced)
    for r in rows:
        rec = produced[(int(r["partition"]), int(r["offset"]))]
        assert r["k"] == (rec.key.hex().upper() if rec.key is not None else "")
        assert r["v"] == (rec.value.hex().upper() if rec.value is not None else "")
        assert int(r["nh"]) == len(rec.headers)
    by_type = {r["t"] for r in rows}
    assert "OrderPlaced" in by_type
    assert {r["date"] for r in rows} == {"2026-01-01"}
    assert {r["hour"] for r in rows} == {"0", "1", "2"}
    _check_convenience_columns(topic, produced, env, tmp_path)
    res = run_cli("query", "select topic, count(*) n from events group by all", "--format",
                  "json", env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    assert {"topic": topic, "n": len(produced)} in lines


def _text(data: bytes | None) -> str | None:
    try:
        return None if data is None else data.decode()
    except UnicodeDecodeError:
        return None


def _json(text: str | None) -> object:
    try:
        return None if text is None else json.loads(text)
    except ValueError:
        return None


def _check_convenience_columns(topic: str, produced: Produced, env: dict[str, str],
                               tmp_path: Path) -> None:
    """key_text, value_text: NULL where not UTF-8; value_json: NULL where not JSON."""
    sql = (f'select partition, "offset", key_text, value_text, value_json '
           f'from {quote_ident(topic)} order by partition, "offset"')
    res = run_cli("query", sql, "--format", "json", env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(rows) == len(produced)
    for row in rows:
        rec = produced[(row["partition"], row["offset"])]
        assert row["key_text"] == _text(rec.key)
        assert row["value_text"] == _text(rec.value)
        assert row["value_json"] == _json(_text(rec.value))
    # every case is there: non-UTF-8 key and value, UTF-8 that is not JSON, JSON, null
    assert {None, "order-1"} <= {row["key_text"] for row in rows}
    assert sum(row["value_text"] is None for row in rows) == 2  # not UTF-8, and a tombstone
    assert "plain text, not JSON" in {row["value_text"] for row in rows}
    assert [1, 2] in [row["value_json"] for row in rows]


def test_query_local(kafka_bootstrap: str, tmp_path: Path) -> None:
    url = f"file://{tmp_path}/arch"
    topic, produced = _archive(kafka_bootstrap, url)
    env = {"EVENTVAULT_STORAGE__URL": url}
    _check(topic, produced, env, tmp_path)
    out = tmp_path / "out.parquet"
    res = run_cli("query", f"select * from {quote_ident(topic)}", "--format", "parquet",
                  "--output", str(out), env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert pq.read_table(out).num_rows == len(produced)
    table = run_cli("query", f"select count(*) as n from {quote_ident(topic)}", env=env,
                    cwd=tmp_path)
    assert re.search(rf"│\s+{len(produced)}\s+│", table.stdout), table.stdout


def test_query_s3_through_httpfs(kafka_bootstrap: str, s3_endpoint: str, s3_bucket: str,
                                 tmp_path: Path) -> None:
    url = f"s3://{s3_bucket}/archive"
    topic, produced = _archive(kafka_bootstrap, url, s3_endpoint)
    _check(topic, produced, {"EVENTVAULT_STORAGE__URL": url,
                             "EVENTVAULT_STORAGE__ENDPOINT_URL": s3_endpoint}, tmp_path)


def test_print_setup_gives_plain_duckdb_the_same_views(kafka_bootstrap: str,
                                                        tmp_path: Path) -> None:
    url = f"file://{tmp_path}/arch"
    topic, produced = _archive(kafka_bootstrap, url)
    res = run_cli("query", "--print-setup", env={"EVENTVAULT_STORAGE__URL": url}, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    con = duckdb.connect()
    for statement in res.stdout.splitlines():
        con.execute(statement)
    assert con.sql(f"select count(*) from {quote_ident(topic)}").fetchone() == (len(produced),)


PLAIN_DUCKDB = """
import sys

import duckdb

con = duckdb.connect()
con.execute(sys.stdin.read())
con.execute(f"COPY ({sys.argv[1]}) TO '{sys.argv[2]}' (FORMAT json)")
"""
# A process that imports only duckdb, without AWS_* variables: the printed setup is all it has.


def test_print_setup_on_s3_works_in_plain_duckdb_row_by_row(kafka_bootstrap: str,
                                                            s3_endpoint: str, s3_bucket: str,
                                                            tmp_path: Path) -> None:
    url = f"s3://{s3_bucket}/archive"
    topic, produced = _archive(kafka_bootstrap, url, s3_endpoint)
    env = {"EVENTVAULT_STORAGE__URL": url, "EVENTVAULT_STORAGE__ENDPOINT_URL": s3_endpoint}
    hidden = run_cli("query", "--print-setup", env=env, cwd=tmp_path)
    assert hidden.returncode == 0, hidden.stderr
    secret = os.environ["AWS_SECRET_ACCESS_KEY"]
    assert f"SECRET '{secret}'" not in hidden.stdout
    assert "SECRET '<secret access key" in hidden.stdout
    assert "credential_chain" not in hidden.stdout
    shown = run_cli("query", "--print-setup", "--show-secrets", env=env, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert f"SECRET '{secret}'" in shown.stdout
    plain_env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "EVENTVAULT_"))}
    columns = ('topic, partition, "offset", timestamp, timestamp_type, hex(key) AS k, '
               "hex(value) AS v, key_text, value_text, value_json, headers, date, hour")
    for sql in [f'SELECT {columns} FROM {quote_ident(topic)} ORDER BY partition, "offset"',
                f"SELECT {columns} FROM events WHERE topic = '{topic}' AND timestamp >= "
                f"'2026-01-01 01:00:00' ORDER BY partition, \"offset\""]:
        ours, theirs = tmp_path / "ours.json", tmp_path / "theirs.json"
        res = run_cli("query", sql, "--format", "json", "--output", str(ours), env=env,
                      cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        plain = subprocess.run([sys.executable, "-c", PLAIN_DUCKDB, sql, str(theirs)],
                               input=shown.stdout, env=plain_env, capture_output=True,
                               text=True, timeout=120, check=False)
        assert plain.returncode == 0, plain.stderr
        our_rows = [json.loads(line) for line in ours.read_text().splitlines()]
        assert len(our_rows) == len(produced) - ("01:00" in sql)
        assert our_rows == [json.loads(line) for line in theirs.read_text().splitlines()]


def test_bad_sql_is_duckdbs_message_and_exit_1(tmp_path: Path) -> None:
    res = run_cli("query", "select nope from nowhere", env={
        "EVENTVAULT_STORAGE__URL": f"file://{tmp_path}/empty"}, cwd=tmp_path)
    assert res.returncode == 1
    assert res.stderr.count("\n") == 1
    assert res.stderr.startswith("eventvault: error: Catalog Error: Table with name nowhere")


def test_show_prints_records_for_people(kafka_bootstrap: str, tmp_path: Path) -> None:
    url = f"file://{tmp_path}/arch"
    topic, _ = _archive(kafka_bootstrap, url)
    env = {"EVENTVAULT_STORAGE__URL": url}
    res = run_cli("show", topic, "--key", "order-1", env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert out.count("── ") == 2
    assert '"type": "OrderPlaced"' in out  # pretty-printed JSON
    assert "(tombstone: null value)" in out
    assert "2026-01-01T00:00:00+00:00  partition 0" in out
    assert "   h: \"1\"" in out
    res = run_cli("show", topic, "--start", "2026-01-01T01:00:00Z", "--end",
                  "2026-01-01T02:00:00Z", env=env, cwd=tmp_path)
    assert res.stdout.count("── ") == 1
    assert "key null" in res.stdout
    assert "fffe 206e" in res.stdout  # not UTF-8: hex
    res = run_cli("show", topic, "--key", "hex:00" + b"bin".hex(), env=env, cwd=tmp_path)
    assert res.stdout.count("── ") == 1
    assert 'dup: null' in res.stdout
    assert 'dup: "x"' in res.stdout
    res = run_cli("show", "no.such.topic", env=env, cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.startswith("eventvault: error: topic no.such.topic is not in the archive")


def test_show_refuses_nonsensical_arguments_in_one_line(kafka_bootstrap: str,
                                                        tmp_path: Path) -> None:
    """--start after --end, a key that is not hex, a negative limit: exit 2, one line."""
    url = f"file://{tmp_path}/arch"
    topic, _ = _archive(kafka_bootstrap, url)
    env = {"EVENTVAULT_STORAGE__URL": url}
    for args, says in [
            (["--start", "2026-01-02T00:00Z", "--end", "2026-01-01T00:00Z"], "is not before --end"),
            (["--start", "2026-01-01T00:00Z", "--end", "2026-01-01T00:00Z"], "is not before --end"),
            (["--key", "hex:zz"], "'hex:zz' is not hex: followed by pairs of hex digits"),
            (["--limit", "-1"], "want a whole number, 1 or more"),
            (["--partition", "-2"], "want a whole number")]:
        res = run_cli("show", topic, *args, env=env, cwd=tmp_path)
        assert res.returncode == 2, (args, res.stderr)
        assert res.stderr.count("\n") == 1, res.stderr
        assert res.stderr.startswith("eventvault: error: "), res.stderr
        assert says in res.stderr, res.stderr


def test_show_selects_a_json_time_topic_by_its_event_time(kafka_bootstrap: str,
                                                          tmp_path: Path) -> None:
    """--start/--end are event times, as for replay: the JSON field, not the record timestamp."""
    url = f"file://{tmp_path}/arch"
    topic = f"q.json-time-{uuid.uuid4().hex[:6]}"
    create_topic(kafka_bootstrap, topic)
    hours = [5, 1, 1, 9, 1, 2]  # event hours of 2026-01-01, record timestamps all 10:00
    produce(kafka_bootstrap, topic, [
        Rec(0, f"k{i}".encode(), json.dumps({"at": f"2026-01-01T0{h}:30:00Z"}).encode(), (),
            1_767_261_600_000) for i, h in enumerate(hours)])
    event_time = json.dumps({topic: {"field": "at"}})
    archive_once(settings(kafka_bootstrap, url, [topic], f"g-{topic}",
                          event_time={topic: {"field": "at"}}))
    env = {"EVENTVAULT_STORAGE__URL": url, "EVENTVAULT_ARCHIVE__EVENT_TIME": event_time}
    res = run_cli("show", topic, "--start", "2026-01-01T01:00Z", "--end", "2026-01-01T03:00Z",
                  env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert re.findall(r'key "(k\d)"', res.stdout) == ["k1", "k2", "k4", "k5"]
    res = run_cli("show", topic, "--start", "2026-01-01T01:00Z", "--end", "2026-01-01T03:00Z",
                  "--limit", "2", env=env, cwd=tmp_path)
    assert re.findall(r'key "(k\d)"', res.stdout) == ["k1", "k2"]


def _files_read(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    plan = con.sql(f"EXPLAIN ANALYZE {sql}").fetchall()[0][1]
    match = re.search(r"Total Files Read:\s*(\d+)", plan)
    assert match, plan
    return int(match[1])


def test_hour_filters_read_only_that_hours_files(kafka_bootstrap: str, tmp_path: Path) -> None:
    url = f"file://{tmp_path}/arch"
    topic, _ = _archive(kafka_bootstrap, url)
    files = sorted((tmp_path / "arch").rglob("*.parquet"))
    in_hour_1 = [f for f in files if "hour=01" in str(f)]
    assert 0 < len(in_hour_1) < len(files)
    con = connect(StorageSettings(url=url))
    view = quote_ident(topic)
    assert _files_read(con, f"SELECT count(*) FROM {view}") == len(files)
    assert _files_read(con, f"SELECT count(*) FROM {view} WHERE date = DATE '2026-01-01' "
                            f"AND hour = 1") == len(in_hour_1)
    # a timestamp filter alone prunes too, through `eventvault query` (EXPLAIN ANALYZE shows it)
    explain = (f"EXPLAIN ANALYZE SELECT count(*) FROM {view} "
               f"WHERE timestamp >= '2026-01-01 01:00:00' AND timestamp < '2026-01-01 02:00:00'")
    env = {"EVENTVAULT_STORAGE__URL": url}
    for event_time, expected in (({}, len(in_hour_1)),
                                 ({topic: {"field": "at"}}, len(files))):
        res = run_cli("query", explain, cwd=tmp_path, env={
            **env, "EVENTVAULT_ARCHIVE__EVENT_TIME": json.dumps(event_time)})
        assert res.returncode == 0, res.stderr
        assert sum(map(int, re.findall(r"Total Files Read:\s*(\d+)", res.stdout))) == expected
