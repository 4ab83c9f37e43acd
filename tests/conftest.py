"""Shared test setup: real PostgreSQL (tests/pg.py), real S3 via moto server and real archives
(tests/realarchives/plugin.py). No mocks of our own storage layers."""
from __future__ import annotations

import os

import pytest

pytest_plugins = ["tests.pg", "tests.realarchives.plugin"]

# Guard: a client created without an explicit endpoint must never reach real AWS.
os.environ.setdefault("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
for var in ("CATALOG_DSN", "S3_ENDPOINT_URL"):
    os.environ.pop(var, None)


@pytest.fixture(autouse=True)
def _no_real_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
