"""The boto3 S3 client built from eventvault's settings, its credentials, its errors' meaning.

Whether an error is retriable, and what it says in a few words.
With :mod:`eventvault.storage.s3` the only modules that import boto3 or botocore.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConfigParseError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
)

from eventvault.errors import StorageError
from eventvault.settings import StorageSettings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = ["Credentials", "cause_of", "error_code", "is_retriable", "s3_client",
           "s3_credentials"]

_RETRIABLE_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout",
                    "RequestTimeTooSkewed", "InternalError", "ServiceUnavailable", "503", "500",
                    "ConditionalRequestConflict"}
# Trying again cannot help these: the credentials or the AWS configuration are missing or bad.
_FINAL = (NoCredentialsError, PartialCredentialsError, ProfileNotFound, ConfigParseError)


def error_code(exc: ClientError) -> str | None:
    """The S3 error code of a failed request (``NoSuchKey``, ``SlowDown``, ...)."""
    return exc.response.get("Error", {}).get("Code")


def cause_of(exc: Exception) -> str:
    """What failed, in a few words: the S3 error code and message, or botocore's message."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
        return f"{error.get('Code', status)} (HTTP {status}): {error.get('Message', '')}".rstrip(
            ": ")
    if isinstance(exc, NoCredentialsError):
        return ("no credentials: set storage.access_key_id and storage.secret_access_key, "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or an AWS profile or role")
    return f"{type(exc).__name__}: {exc}"


def is_retriable(exc: Exception) -> bool:
    """Whether trying ``exc``'s request again may help (a brown-out, not a bad setup)."""
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return error_code(exc) in _RETRIABLE_CODES or status >= 500 or status == 429
    return not isinstance(exc, _FINAL)  # connection resets, timeouts, incomplete reads


def s3_client(settings: StorageSettings) -> S3Client:
    """A boto3 S3 client for eventvault's settings (credentials fall back to boto3's chain)."""
    secret = settings.secret_access_key.get_secret_value() if settings.secret_access_key \
        else None
    try:
        return boto3.client(
            "s3", endpoint_url=settings.endpoint_url, region_name=settings.region,
            aws_access_key_id=settings.access_key_id, aws_secret_access_key=secret,
            config=Config(retries={"mode": "standard", "total_max_attempts": 1},
                          connect_timeout=10, read_timeout=60,
                          s3={"addressing_style": "path"} if settings.endpoint_url else None),
        )
    except (BotoCoreError, ValueError) as exc:  # a bad AWS config file or profile, endpoint
        raise StorageError(f"S3 {settings.url}: {exc}", url=settings.url) from exc


class Credentials(NamedTuple):
    """What DuckDB needs to read S3 as eventvault does."""

    key_id: str | None
    secret: str | None
    token: str | None  # temporary credentials (a role, SSO) have a session token
    region: str | None


def s3_credentials(settings: StorageSettings) -> Credentials:
    """The credentials and region eventvault uses: from settings, else boto3's chain."""
    try:
        session = boto3.Session()
        region = settings.region or session.region_name
        if settings.access_key_id:
            secret = settings.secret_access_key
            return Credentials(settings.access_key_id,
                               secret.get_secret_value() if secret else None, None, region)
        found = session.get_credentials()
        frozen = found.get_frozen_credentials() if found else None
    except BotoCoreError as exc:
        raise StorageError(f"S3 {settings.url}: {exc}", url=settings.url) from exc
    if frozen is None:
        return Credentials(None, None, None, region)
    return Credentials(frozen.access_key, frozen.secret_key, frozen.token, region)
