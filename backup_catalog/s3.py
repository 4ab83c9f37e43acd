"""S3 client lifecycle from settings (the only place that touches credentials)."""
from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from backup_catalog.settings import Settings
from scheduler.storage import make_session, s3_config


def _secret(v: Any) -> str | None:
    return v.get_secret_value() if v is not None else None


@asynccontextmanager
async def s3_client(settings: Settings) -> AsyncIterator[Any]:
    session = make_session(_secret(settings.aws_access_key_id), _secret(settings.aws_secret_access_key),
                           settings.aws_default_region)
    cfg = s3_config(max_attempts=settings.s3_max_attempts, connect_timeout=settings.s3_connect_timeout_seconds,
                    read_timeout=settings.s3_read_timeout_seconds)
    # TLS verification is on unless S3_VERIFY_TLS=false; S3_CA_BUNDLE trusts a private endpoint's CA
    verify: bool | str = settings.s3_verify_tls and (settings.s3_ca_bundle or True)
    async with session.client("s3", endpoint_url=settings.s3_endpoint_url, config=cfg, verify=verify) as client:
        yield client
