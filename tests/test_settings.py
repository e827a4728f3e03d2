"""Settings: environment beats TOML beats defaults; secrets stay secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventvault.errors import ConfigError
from eventvault.settings import load_settings


def test_precedence_and_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "ev.toml"
    cfg.write_text('[kafka]\nbootstrap_servers = "toml:1"\nsecurity_protocol = "SASL_SSL"\n'
                   'sasl_mechanism = "SCRAM-SHA-512"\nsasl_username = "u"\n'
                   'sasl_password = "hunter2"\n[archive]\ntopics = ["a"]\n')
    monkeypatch.setenv("EVENTVAULT_KAFKA__BOOTSTRAP_SERVERS", "env:1")
    monkeypatch.setenv("EVENTVAULT_ARCHIVE__TOPICS", '["x.y", "z"]')
    monkeypatch.setenv("EVENTVAULT_STORAGE__SECRET_ACCESS_KEY", "s3cret")
    s = load_settings(cfg)
    assert s.kafka.bootstrap_servers == "env:1"
    assert s.archive.topics == ["x.y", "z"]
    assert s.kafka.sasl_mechanism == "SCRAM-SHA-512"
    assert "hunter2" not in repr(s)
    assert "s3cret" not in repr(s)
    assert s.kafka.sasl_password is not None
    assert s.kafka.sasl_password.get_secret_value() == "hunter2"


def test_sse_kms_needs_a_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EVENTVAULT_STORAGE__URL", "s3://bucket-name/p")
    monkeypatch.setenv("EVENTVAULT_STORAGE__SSE", "aws:kms")
    with pytest.raises(ConfigError, match="sse_kms_key_id"):
        load_settings()
    monkeypatch.setenv("EVENTVAULT_STORAGE__SSE_KMS_KEY_ID", "alias/archive")
    assert load_settings().storage.sse_kms_key_id == "alias/archive"


@pytest.mark.parametrize(("name", "closest"), [
    ("EVENTVAULT_KAFKA_BOOTSTRAP_SERVERS", "EVENTVAULT_KAFKA__BOOTSTRAP_SERVERS"),  # one _
    ("EVENTVAULT_KAFAK__BOOTSTRAP_SERVERS", "EVENTVAULT_KAFKA__BOOTSTRAP_SERVERS"),  # section
    ("EVENTVAULT_STORAGE__ENDPOINT", "EVENTVAULT_STORAGE__ENDPOINT_URL"),  # key
    ("EVENTVAULT_REPLAY__TARGET__BOOTSTRAP_SERVER", "EVENTVAULT_REPLAY__TARGET__BOOTSTRAP_SERVERS"),
    ("EVENTVAULT_CONFIG_FILE", "EVENTVAULT_CONFIG"),
])
def test_unknown_environment_variables_are_refused(name: str, closest: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(name, "127.0.0.1:1")
    with pytest.raises(ConfigError) as raised:
        load_settings()
    assert f"unknown environment variable {name}" in str(raised.value)
    assert str(raised.value).endswith(f"did you mean {closest}?")
    assert raised.value.attrs["setting"] == name


def test_every_valid_environment_variable_is_accepted(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ev.toml").write_text("")
    for name, value in {
        "EVENTVAULT_CONFIG": str(tmp_path / "ev.toml"),
        "EVENTVAULT_TEST_SEED": "7",  # the test harness's own
        "eventvault_kafka__client_id": "lower-case",  # names are case-insensitive
        "EVENTVAULT_REPLAY__TARGET__BOOTSTRAP_SERVERS": "other:9092",  # a section in a section
        "EVENTVAULT_ARCHIVE__EVENT_TIME__shop.orders__FIELD": "occurred_at",  # a table's entry
        "EVENTVAULT_RETENTION__KEEP_DAYS": '{"a": 3}',
        "EVENTVAULT_METRICS": '{"port": 9102}',  # a whole section as JSON
    }.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.kafka.client_id == "lower-case"
    assert settings.replay.target is not None
    assert settings.replay.target.bootstrap_servers == "other:9092"
    assert settings.archive.event_time["shop.orders"].field == "occurred_at"
    assert settings.retention.keep_days == {"a": 3}
    assert settings.metrics.port == 9102
