"""The SQL that makes the archive queryable is a pure function of the settings."""

from __future__ import annotations

from pathlib import Path

from eventvault.query.sql import S3Access, glob, quote_ident, secret_sql, setup_sql
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
    assert secret_sql(s, S3Access("AKIA", "sec'ret", region="eu-west-1")) == (
        "CREATE OR REPLACE SECRET eventvault (TYPE s3, KEY_ID 'AKIA', SECRET 'sec''ret', "
        "REGION 'eu-west-1', ENDPOINT '127.0.0.1:9000', URL_STYLE 'path', USE_SSL false);")
    assert secret_sql(StorageSettings(url="file:///x"), S3Access("a", "b")) is None


def test_printed_secret_needs_no_aws_extension_and_hides_the_secret() -> None:
    s = StorageSettings(url="s3://bucket-a/p")
    printed = secret_sql(s, S3Access("AKIA", "s3cret", "t0ken", None, reveal=False)) or ""
    assert "PROVIDER" not in printed  # credential_chain needs the aws extension
    assert "s3cret" not in printed
    assert "t0ken" not in printed
    assert "KEY_ID 'AKIA'" in printed
    assert "SECRET '<secret access key (eventvault query --print-setup --show-secrets" in printed
    assert "SESSION_TOKEN '<session token" in printed
    assert "REGION 'us-east-1'" in printed  # DuckDB's default, said
    assert "USE_SSL" not in printed  # real S3: DuckDB's defaults
    shown = secret_sql(s, S3Access("AKIA", "s3cret", "t0ken", "eu-west-1")) or ""
    assert "SECRET 's3cret', SESSION_TOKEN 't0ken', REGION 'eu-west-1'" in shown
    nothing = secret_sql(s, S3Access(reveal=False)) or ""
    assert "KEY_ID '<access key id>'" in nothing


def test_setup_has_a_view_per_topic_and_events() -> None:
    statements = setup_sql(StorageSettings(url="file:///arch"), ["a.b", "c-d"], None)
    assert [s.split(" AS ")[0] for s in statements] == [
        'CREATE OR REPLACE VIEW "a.b"', 'CREATE OR REPLACE VIEW "c-d"',
        'CREATE OR REPLACE VIEW "events"']
    assert setup_sql(StorageSettings(url="s3://bucket-a/p"), [], "/x/httpfs.duckdb_extension",
                     S3Access("k", "s"))[0] == "LOAD '/x/httpfs.duckdb_extension';"
