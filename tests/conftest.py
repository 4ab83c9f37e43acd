"""Shared test setup: real PostgreSQL (tests/pg.py), real S3 via moto server and real archives
(tests/realarchives/plugin.py). No mocks of our own storage layers."""
from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from backup_catalog.settings import Settings
from scheduler.clients import s3_client
from tests.support.fixtures import make_settings

pytest_plugins = ["tests.pg", "tests.realarchives.plugin"]

# Guard: a client created without an explicit endpoint must never reach real AWS.
os.environ.setdefault("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
# Scheduled restore drills are on by default where PostgreSQL is installed; a test's `serve` must not
# start restores of its instances unless the test asks (DRILL_ENABLED=true, tests/test_drills_e2e.py).
os.environ["DRILL_ENABLED"] = "false"
for var in ("CATALOG_DSN", "S3_ENDPOINT_URL"):
    os.environ.pop(var, None)


@pytest.fixture(autouse=True)
def _no_real_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")


@pytest.fixture
def settings(s3_endpoint: Any, catalog_dsn: str) -> Settings:
    """Settings reaching the session's moto S3 and private catalog (tests/api and test_cfsync override it)."""
    return make_settings(s3_endpoint, catalog_dsn)


@pytest_asyncio.fixture(loop_scope="session")
async def client(settings: Settings) -> AsyncIterator[Any]:
    """An aioboto3 S3 client on the session's moto (tests/api overrides ``client`` with its HTTP client)."""
    async with s3_client(settings) as c:
        yield c
