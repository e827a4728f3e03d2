"""The exception root of eventvault and its structured subclasses.

Every error the package raises on purpose is an :class:`EventVaultError`. Each carries an
``exit_code`` (the CLI maps it to the process exit status), a ``retriable`` flag (as aiokafka's
errors do: true when trying the same thing again may succeed) and keyword attributes that
say what failed, so that logs and callers need not parse messages.
"""

from __future__ import annotations

from typing import Any


class EventVaultError(Exception):
    """Root of all eventvault errors."""

    exit_code: int = 1
    retriable: bool = False

    def __init__(self, message: str, *, retriable: bool | None = None, **attrs: Any) -> None:
        super().__init__(message)
        self.message = message
        if retriable is not None:
            self.retriable = retriable
        self.attrs = attrs
        for name, value in attrs.items():
            setattr(self, name, value)

    def __str__(self) -> str:
        return self.message


class ConfigError(EventVaultError):
    """Invalid configuration or arguments; ``setting`` names the offending setting."""

    exit_code = 2


class StorageError(EventVaultError):
    """A storage operation failed; ``url`` and ``key`` say where."""

    exit_code = 3


class ObjectChanged(StorageError):
    """An object was changed by someone else between reading it and replacing it."""

    retriable = True


class AccessDenied(StorageError):
    """S3 answered a HEAD with 403.

    That is a real denial, or a missing key asked by a role without ``s3:ListBucket`` (S3 then
    hides whether the key exists). Only a write can tell them apart.
    """


class BrokerError(EventVaultError):
    """Talking to Kafka failed, or Kafka refused what we asked (a missing topic, a group).

    Named apart from aiokafka's own ``KafkaError``, which the Kafka adapter turns into this.
    """

    exit_code = 4


class ArchiveStateError(EventVaultError):
    """The archiver's recorded progress cannot be used safely (see docs/EXACTLY_ONCE.md)."""

    exit_code = 5


class MaintenanceError(EventVaultError):
    """Erasure or retention could not finish what it must.

    A verification found a subject, or a deadline passed with files still waiting;
    ``request_id`` or ``key`` say where.
    """

    exit_code = 8


class QueryError(EventVaultError):
    """DuckDB refused a query over the archive; the message is DuckDB's."""

    exit_code = 1
