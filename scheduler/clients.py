"""S3 client lifecycle from the settings (the only place that touches credentials): the read-only client
of the scanner and the API, and the purge's own write client.

The product's Settings satisfy :class:`S3Settings`; this module does not import them.
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

from botocore.config import Config

from catalog import tracing
from recovery.config import S3Access, Secret
from recovery.errors import PitrError
from scheduler.sqs import endpoint_for, region_for
from scheduler.storage import make_session, s3_config


class S3Settings(S3Access, Protocol):
    """What building an S3 client reads (AWS_*, PURGE_AWS_*, S3_*)."""

    @property
    def purge_aws_access_key_id(self) -> Secret | None: ...
    @property
    def purge_aws_secret_access_key(self) -> Secret | None: ...
    @property
    def events_aws_access_key_id(self) -> Secret | None: ...
    @property
    def events_aws_secret_access_key(self) -> Secret | None: ...
    @property
    def s3_max_attempts(self) -> int: ...
    @property
    def s3_connect_timeout_seconds(self) -> float: ...
    @property
    def s3_read_timeout_seconds(self) -> float: ...


def _secret(v: Any) -> str | None:
    return v.get_secret_value() if v is not None else None


@asynccontextmanager
async def s3_client(settings: S3Settings) -> AsyncIterator[Any]:
    """The read-only client of the scanner and the API (AWS_*): nothing built on it ever deletes."""
    async with _client(settings, _secret(settings.aws_access_key_id), _secret(settings.aws_secret_access_key)) as c:
        yield c


class PurgeNotConfigured(PitrError):
    code = "purge_not_configured"


@asynccontextmanager
async def purge_s3_client(settings: S3Settings) -> AsyncIterator[Any]:
    """The purge's own write client (PURGE_AWS_*), the only credentials that ever delete.
    :raises PurgeNotConfigured: they are not set."""
    key, secret = _secret(settings.purge_aws_access_key_id), _secret(settings.purge_aws_secret_access_key)
    if not key or not secret:
        raise PurgeNotConfigured(
            "purge run needs its own write credentials: set PURGE_AWS_ACCESS_KEY_ID and "
            "PURGE_AWS_SECRET_ACCESS_KEY (the scanner's read-only AWS_* credentials never delete); "
            "`purge plan` shows what would be deleted without them")
    async with _client(settings, key, secret) as c:
        yield c


@asynccontextmanager
async def _client(settings: S3Settings, key: str | None, secret: str | None) -> AsyncIterator[Any]:
    session = make_session(key, secret, settings.aws_default_region)
    cfg = s3_config(max_attempts=settings.s3_max_attempts, connect_timeout=settings.s3_connect_timeout_seconds,
                    read_timeout=settings.s3_read_timeout_seconds)
    # TLS verification is on unless S3_VERIFY_TLS=false; S3_CA_BUNDLE trusts a private endpoint's CA
    verify: bool | str = settings.s3_verify_tls and (settings.s3_ca_bundle or True)
    async with session.client("s3", endpoint_url=settings.s3_endpoint_url, config=cfg, verify=verify) as client:
        tracing.instrument_s3(client)
        yield client


@asynccontextmanager
async def sqs_client(settings: S3Settings, queue_url: str, *, consumer: bool = False) -> AsyncIterator[Any]:
    """An SQS client for the endpoint and region the queue URL implies (``scheduler.sqs.endpoint_for``).
    ``consumer``: the events consumer's (receive, delete, change visibility, get attributes), with the
    EVENTS_AWS_* credentials when they are set (deploy/iam/events-consumer.json), else AWS_*; otherwise
    (``events setup``, run by an administrator) AWS_*."""
    key, secret = settings.aws_access_key_id, settings.aws_secret_access_key
    if consumer and settings.events_aws_access_key_id is not None:
        key, secret = settings.events_aws_access_key_id, settings.events_aws_secret_access_key
    session = make_session(_secret(key), _secret(secret), region_for(queue_url, settings.aws_default_region))
    cfg = Config(retries={"mode": "standard", "total_max_attempts": settings.s3_max_attempts},
                 connect_timeout=settings.s3_connect_timeout_seconds,
                 read_timeout=max(settings.s3_read_timeout_seconds, 30.0))   # above the 20 s long poll
    verify: bool | str = settings.s3_verify_tls and (settings.s3_ca_bundle or True)
    async with session.client("sqs", endpoint_url=endpoint_for(queue_url), config=cfg, verify=verify) as client:
        tracing.instrument_s3(client)
        yield client
