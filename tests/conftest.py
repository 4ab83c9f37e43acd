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


# The suite runs on several workers (pytest-xdist, `--dist loadfile`: a file's tests stay on one worker, so
# module fixtures are built once). Files are handed out in collection order: the long ones (real restores,
# real archives built, the kill test) go first, so that no worker starts one of them when the others are done.
LONG_FIRST = (    # by their measured time on one worker, longest first
    "tests/test_pitr_e2e.py", "tests/usecases/test_events_e2e.py", "tests/test_purge.py", "tests/test_undo_e2e.py",
    "tests/test_drills_e2e.py", "tests/test_changes_e2e.py", "tests/api/test_routes.py", "tests/test_wal_cuts_e2e.py",
    "tests/api/test_contract_fuzz.py", "tests/test_kill.py", "tests/test_restore.py", "tests/test_realarchives.py",
    "tests/scheduler/test_reliability_faults.py", "tests/test_fleet_coverage.py", "tests/test_cli.py",
    "tests/test_readme_after_demo.py", "tests/scheduler/test_scan.py", "tests/scheduler/test_jobs.py",
    "tests/test_iam_least_privilege.py", "tests/test_tracing.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {path: i for i, path in enumerate(LONG_FIRST)}

    def key(item: pytest.Item) -> int:
        return rank.get(item.nodeid.split("::", 1)[0], len(rank))
    items.sort(key=key)     # stable: every file's tests stay together and in their order


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
