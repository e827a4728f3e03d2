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
