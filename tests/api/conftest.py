"""API test fixtures: the app on the real test catalog (tests/pg.py), an aiohttp test client, seeds."""
from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from backup_catalog.service.app import create_app
from backup_catalog.settings import Settings
from tests.support.fixtures import BROKER, OPERATOR
from tests.support.fixtures import make_settings as _make_settings


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
    """tests.support.fixtures.make_settings with the API tests' scan deadline."""
    return _make_settings(**({"scan_deadline_seconds": 60} | kw))


@pytest.fixture
def settings() -> Settings:
    return make_settings()


@pytest_asyncio.fixture
async def client(pool: asyncpg.Pool, settings: Settings) -> AsyncIterator[TestClient]:
    """The app (no scheduler) on the emptied test catalog."""
    app = create_app(settings, pool=pool, start_scheduler=False, holder="test-replica")
    async with TestClient(TestServer(app)) as c:
        yield c


