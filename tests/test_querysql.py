"""The SQL that makes the archive queryable is a pure function of the settings."""

from __future__ import annotations

from pathlib import Path

from eventvault.query.sql import glob, quote_ident, secret_sql, setup_sql
from eventvault.settings import StorageSettings


def test_identifiers_and_globs() -> None:
    assert quote_ident('we"ird.topic-1') == '"we""ird.topic-1"'
    s3 = StorageSettings(url="s3://bucket-a/some/prefix/")
    assert glob(s3, "a.b") == "s3://bucket-a/some/prefix/topic=a.b/*/*/*.parquet"
    assert glob(s3) == "s3://bucket-a/some/prefix/topic=*/*/*/*.parquet"
    local = StorageSettings(url="file://relative/dir")
    assert glob(local, "t") == f"{Path('relative/dir').absolute()}/topic=t/*/*/*.parquet"


def test_secret_for_an_s3_compatible_endpoint() -> None:
    s = StorageSettings(url="s3://bucket-a/p", endpoint_url="http://127.0.0.1:9000",
                        region="eu-west-1")
    assert secret_sql(s, "AKIA", "sec'ret") == (
        "CREATE OR REPLACE SECRET eventvault (TYPE s3, KEY_ID 'AKIA', SECRET 'sec''ret', "
        "REGION 'eu-west-1', ENDPOINT '127.0.0.1:9000', URL_STYLE 'path', USE_SSL false);")
    assert "PROVIDER credential_chain" in (secret_sql(s, None, None) or "")
    assert secret_sql(StorageSettings(url="file:///x"), "a", "b") is None


def test_setup_has_a_view_per_topic_and_events() -> None:
    statements = setup_sql(StorageSettings(url="file:///arch"), ["a.b", "c-d"], None)
    assert [s.split(" AS ")[0] for s in statements] == [
        'CREATE OR REPLACE VIEW "a.b"', 'CREATE OR REPLACE VIEW "c-d"',
        'CREATE OR REPLACE VIEW "events"']
    assert setup_sql(StorageSettings(url="s3://bucket-a/p"), [], "/x/httpfs.duckdb_extension",
                     "k", "s")[0] == "LOAD '/x/httpfs.duckdb_extension';"
