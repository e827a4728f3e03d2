"""eventvault's one settings model, built once at the edge (the CLI) and passed down.

Sources, strongest first: environment variables ``EVENTVAULT_<SECTION>__<KEY>`` (lists and
tables as JSON), then ``eventvault.toml`` in the working directory or ``--config PATH``, then
defaults. :func:`load_settings` turns every validation problem into one
:class:`~eventvault.errors.ConfigError` line that names the setting.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from eventvault.errors import ConfigError
from eventvault.eventtime import EventTimeSpec, TimeFormat

DEFAULT_CONFIG = Path("eventvault.toml")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaSettings(_Section):
    """How to reach the Kafka cluster (TLS and SASL PLAIN/SCRAM for MSK, Confluent, Event Hubs)."""

    bootstrap_servers: str = "127.0.0.1:9092"
    client_id: str = "eventvault"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_key_password: SecretStr | None = None
    ssl_check_hostname: bool = True
    request_timeout_ms: int = Field(40_000, gt=0)

    @model_validator(mode="after")
    def _sasl_needs_credentials(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL") and not (
                self.sasl_username and self.sasl_password):
            raise ValueError("SASL needs kafka.sasl_username and kafka.sasl_password")
        return self


class StorageSettings(_Section):
    """Where the archive lives: ``s3://bucket/prefix``, ``file:///path`` or a plain path."""

    url: str = "file://./eventvault-archive"
    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    sse: Literal["AES256", "aws:kms"] | None = None
    sse_kms_key_id: str | None = None
    max_attempts: int = Field(10, ge=1, le=100)

    @property
    def scheme(self) -> str:
        """The URL scheme, ``s3`` or ``file`` (a plain path is a ``file`` URL)."""
        return self.url.split("://", 1)[0] if "://" in self.url else "file"

    @property
    def is_s3(self) -> bool:
        """Whether the archive is in S3 (or a server that speaks its API)."""
        return self.scheme == "s3"

    def bucket_and_prefix(self) -> tuple[str, str]:
        """For ``s3://bucket/prefix/``: the bucket and the prefix without slashes around it."""
        bucket, _, prefix = self.url.removeprefix("s3://").partition("/")
        return bucket, prefix.strip("/")

    def local_root(self) -> Path:
        """For a ``file://`` URL or a plain path: the directory, absolute."""
        return Path(self.url.removeprefix("file://")).expanduser().absolute()

    @model_validator(mode="after")
    def _check(self) -> StorageSettings:
        scheme = self.scheme
        if scheme not in ("s3", "file"):
            raise ValueError(f"storage.url scheme {scheme!r} is not s3:// or file://")
        if scheme == "s3" and not re.match(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$",
                                           self.url):
            raise ValueError(f"storage.url {self.url!r} does not name an S3 bucket")
        if self.endpoint_url is not None and not re.match(r"^https?://[^/\s]+", self.endpoint_url):
            raise ValueError(f"storage.endpoint_url {self.endpoint_url!r} is not an http:// or "
                             "https:// URL")
        if self.sse == "aws:kms" and not self.sse_kms_key_id:
            raise ValueError("storage.sse = 'aws:kms' needs storage.sse_kms_key_id")
        return self


class EventTimeSettings(_Section):
    """A topic's event time from a JSON field of the value instead of the record timestamp."""

    field: str = Field(min_length=1)
    format: TimeFormat = "auto"

    def spec(self) -> EventTimeSpec:
        """The pure spec the archiver uses."""
        return EventTimeSpec(self.field, self.format)


class ArchiveSettings(_Section):
    """What to archive and how files roll (see docs/EXACTLY_ONCE.md for the cut limits)."""

    topics: list[str] = Field(default_factory=list)
    topics_regex: str | None = None
    group_id: str = Field("eventvault-archiver", min_length=1)
    isolation_level: Literal["read_committed", "read_uncommitted"] = "read_committed"
    max_file_records: int = Field(1_000_000, gt=0)
    max_file_bytes: int = Field(128 << 20, gt=0)
    idle_seconds: float = Field(120.0, gt=0)
    max_file_age_seconds: float = Field(900.0, gt=0)
    hour_grace_hours: int | None = Field(1, ge=0)
    memory_budget_bytes: int = Field(512 << 20, ge=16 << 20)
    max_cuts_per_partition: int = Field(64, ge=2, le=100)
    upload_concurrency: int = Field(4, ge=1, le=64)
    zstd_level: int = Field(1, ge=1, le=22)
    commit_interval_seconds: float = Field(5.0, gt=0)
    session_timeout_ms: int = Field(10_000, ge=1000)
    event_time: dict[str, EventTimeSettings] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> ArchiveSettings:
        if self.topics_regex is not None:
            try:
                re.compile(self.topics_regex)
            except re.error as exc:
                raise ValueError(f"archive.topics_regex is not a regular expression: {exc}") \
                    from None
        return self

    def event_time_spec(self, topic: str) -> EventTimeSpec:
        """The event-time spec of ``topic`` (the record timestamp unless configured)."""
        conf = self.event_time.get(topic)
        return conf.spec() if conf else EventTimeSpec()


class MetricsSettings(_Section):
    """Prometheus metrics of long-running processes (off unless a port is set)."""

    port: int | None = Field(None, ge=0, le=65535)
    host: str = "127.0.0.1"


class ReplaySettings(_Section):
    """Where and how ``eventvault replay`` produces (see docs/REPLAY.md)."""

    target: KafkaSettings | None = None  # another cluster; default: the [kafka] one
    transaction_records: int = Field(50_000, gt=0)
    transaction_bytes: int = Field(64 << 20, gt=0)
    # a transaction is committed once open this long, so that slow (paced) replays never
    # reach the broker's transaction timeout, which aborts it (at most half that timeout)
    transaction_seconds: float = Field(30.0, gt=0)
    transaction_timeout_ms: int = Field(120_000, ge=1000)  # the producer's transaction.timeout.ms
    batch_bytes: int = Field(1 << 20, ge=1024)

    @model_validator(mode="after")
    def _check(self) -> ReplaySettings:
        if self.transaction_seconds * 1000 > self.transaction_timeout_ms / 2:
            raise ValueError(f"transaction_seconds ({self.transaction_seconds}) must be at most "
                             f"half of transaction_timeout_ms ({self.transaction_timeout_ms})")
        return self


class SubjectSettings(_Section):
    """Where a topic's data-subject id is, and what erasure does to that subject's records.

    ``location`` is ``key`` (the record key), ``value`` (``field``: a dotted path into a JSON
    value) or ``header`` (``field``: the header name). ``drop`` removes the records; ``redact``
    keeps them (offsets and history keep their shape) and sets the subject's id and the
    ``redact`` fields (dotted JSON paths) to null: the key becomes null for a key subject, the
    header is removed for a header subject.
    """

    location: Literal["key", "value", "header"]
    field: str | None = None
    action: Literal["drop", "redact"] = "drop"
    redact: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> SubjectSettings:
        if self.location != "key" and not self.field:
            raise ValueError(f"a subject in the {self.location} needs its field")
        if self.location == "key" and self.field:
            raise ValueError("a subject in the key has no field")
        if self.redact and self.action != "redact":
            raise ValueError("redact fields go with action = 'redact'")
        return self


class ErasureSettings(_Section):
    """PII erasure (docs/ERASURE.md): the key of the ledger's subject hashes, deadlines, topics."""

    hmac_key: SecretStr | None = None
    deadline_days: int = Field(30, ge=1, le=90)
    topics: dict[str, SubjectSettings] = Field(default_factory=dict)


class RetentionSettings(_Section):
    """Retention by event time: whole hours older than ``keep_days[topic]`` days are deleted.

    Topics without an entry are kept forever.
    """

    keep_days: dict[str, int] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> RetentionSettings:
        for topic, days in self.keep_days.items():
            if days < 1:
                raise ValueError(f"retention.keep_days for {topic} must be at least 1 (got "
                                 f"{days})")
        return self


class Settings(BaseSettings):
    """All of eventvault's settings."""

    model_config = SettingsConfigDict(
        env_prefix="EVENTVAULT_", env_nested_delimiter="__", extra="forbid", frozen=True,
        toml_file=DEFAULT_CONFIG,
    )

    kafka: KafkaSettings = KafkaSettings()
    storage: StorageSettings = StorageSettings()
    archive: ArchiveSettings = ArchiveSettings()
    metrics: MetricsSettings = MetricsSettings()
    replay: ReplaySettings = ReplaySettings()
    erasure: ErasureSettings = ErasureSettings()
    retention: RetentionSettings = RetentionSettings()

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Init arguments, then environment, then the TOML file."""
        return init_settings, env_settings, TomlConfigSettingsSource(settings_cls)


CONFIG_VARIABLE = "EVENTVAULT_CONFIG"
"""Names the TOML file where no ``--config`` can be given (Airflow tasks)."""
ENV_PREFIX, ENV_DELIMITER = "EVENTVAULT_", "__"
TEST_PREFIX = "EVENTVAULT_TEST_"
"""Variables of the test harness (``EVENTVAULT_TEST_KAFKA_VERSION``, ``..._SEED``), not settings."""


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The settings model a field holds (also through ``X | None``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return next(filter(None, map(_model_of, typing.get_args(annotation))), None)
    return None


def _setting_paths(model: type[BaseModel], prefix: str) -> Iterator[tuple[str, bool]]:
    """Every setting's environment name below ``prefix``, and whether it takes nested keys."""
    for name, field in model.model_fields.items():
        path = f"{prefix}{name.upper()}"
        inner = _model_of(field.annotation)
        if inner is not None:  # a whole section as JSON, or its keys one by one
            yield path, False
            yield from _setting_paths(inner, path + ENV_DELIMITER)
        else:
            yield path, typing.get_origin(field.annotation) is dict


def check_environment(environ: Mapping[str, str]) -> None:
    """Refuse an ``EVENTVAULT_*`` variable that names no setting (a typo, one underscore).

    pydantic-settings ignores such variables, and the default would be used unseen. Valid:
    ``EVENTVAULT_<SECTION>__<KEY>`` (nested deeper for a table or a section inside a
    section), ``EVENTVAULT_CONFIG`` and the test harness's ``EVENTVAULT_TEST_*``.
    """
    paths = dict(_setting_paths(Settings, ENV_PREFIX))
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper == CONFIG_VARIABLE or \
                upper.startswith(TEST_PREFIX) or upper in paths:
            continue
        if any(upper.startswith(path + ENV_DELIMITER) for path, table in paths.items() if table):
            continue
        section, _, key = upper.removeprefix(ENV_PREFIX).lower().partition(ENV_DELIMITER)
        close = difflib.get_close_matches(upper, [*paths, CONFIG_VARIABLE], n=1, cutoff=0.6)
        problem = (f"there is no setting {section}.{key.replace(ENV_DELIMITER, '.')}" if key
                   else "settings are EVENTVAULT_<SECTION>__<KEY>, with two underscores")
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ConfigError(f"unknown environment variable {name}: {problem}{hint}",
                          setting=name)


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings once; raise ConfigError naming the first bad setting.

    The file is ``config``, else the one ``EVENTVAULT_CONFIG`` names, else ``eventvault.toml``
    in the working directory if there is one.
    """
    check_environment(os.environ)
    given = "--config"
    if config is None and os.environ.get(CONFIG_VARIABLE):
        config, given = Path(os.environ[CONFIG_VARIABLE]), CONFIG_VARIABLE
    path = config or DEFAULT_CONFIG
    if config is not None and not config.is_file():
        raise ConfigError(f"{given} {config}: no such file", setting=given)
    if path.is_file():
        try:
            tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}", setting=str(path)) from None
    cls = type("Settings", (Settings,), {"model_config": {**Settings.model_config,
                                                          "toml_file": path}})
    try:
        return cls(**overrides)  # type: ignore[no-any-return]
    except ValidationError as exc:
        raise _config_error(exc) from None
    except SettingsError as exc:
        raise _json_env_error(exc) from None


def _json_env_error(exc: SettingsError) -> ConfigError:
    """Name the environment variable whose list or table value is not JSON."""
    for name, value in sorted(os.environ.items()):
        if not name.startswith("EVENTVAULT_") or "__" not in name:
            continue
        try:
            json.loads(value)
        except ValueError:
            section, _, key = name.removeprefix("EVENTVAULT_").lower().partition("__")
            model = Settings.model_fields.get(section)
            field = model and getattr(model.annotation, "model_fields", {}).get(key)
            if field and getattr(field.annotation, "__origin__", None) in (list, dict):
                return ConfigError(
                    f"invalid setting {section}.{key}: {name} must be JSON, "
                    f"for example {name}='[\"a\", \"b\"]' (got {value!r})",
                    setting=f"{section}.{key}")
    return ConfigError(f"invalid configuration from the environment: {exc}")


def _config_error(exc: ValidationError) -> ConfigError:
    first = exc.errors()[0]
    setting = ".".join(str(p) for p in first["loc"] if not str(p).startswith("function-"))
    msg = first["msg"].removeprefix("Value error, ")
    given = first.get("input")
    detail = "" if isinstance(given, dict) or given is None else f" (got {given!r})"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return ConfigError(f"invalid setting {setting or 'configuration'}: {msg}{detail}{more}",
                       setting=setting)
