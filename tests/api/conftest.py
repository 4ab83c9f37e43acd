"""API test fixtures: the app on the real test catalog (tests/pg.py), an aiohttp test client, seeds."""
from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from api.app import create_app
from backup_catalog.settings import Settings

# Sentinel credentials: tests assert they never show up in bodies, logs or metrics.
BROKER = ("broker-user", "br0ker-SENTINEL-pw")
OPERATOR = ("op-user", "0perator-SENTINEL-pw")


def pytest_configure(config: pytest.Config) -> None:
    for plugin in ("tests.pg", "tests.realarchives.plugin"):
        if not config.pluginmanager.has_plugin(plugin):
            config.pluginmanager.import_plugin(plugin)


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


AS_BROKER = basic(*BROKER)
AS_OPERATOR = basic(*OPERATOR)


def make_settings(**kw: Any) -> Settings:
    base: dict[str, Any] = dict(
        broker_username=BROKER[0], broker_password=SecretStr(BROKER[1]),
        operator_username=OPERATOR[0], operator_password=SecretStr(OPERATOR[1]),
        aws_access_key_id=SecretStr("testing"), aws_secret_access_key=SecretStr("testing"),
        s3_endpoint_url="http://127.0.0.1:9", s3_max_attempts=2, scan_deadline_seconds=60,
    )
    return Settings(**(base | kw))


@pytest.fixture
def settings() -> Settings:
    return make_settings()


@pytest_asyncio.fixture
async def client(pool: asyncpg.Pool, settings: Settings) -> AsyncIterator[TestClient]:
    """The app (no scheduler) on the emptied test catalog."""
    app = create_app(settings, pool=pool, start_scheduler=False, holder="test-replica")
    async with TestClient(TestServer(app)) as c:
        yield c


