"""pytest plugin: the session's S3 endpoint and the real archives in it (on top of :mod:`sandbox`).

Enable with ``pytest_plugins = ["tests.realarchives.plugin"]`` in tests/conftest.py. Fixtures:

- ``s3_endpoint`` (session): a started :class:`sandbox.s3.MotoEndpoint` (``.url``, ``.tls_port`` started
  lazily, ``.client()``, ``.env()``).
- ``real_archives`` (session): :class:`sandbox.archives.RealArchives`; ``real_archives["pgbackrest"]`` etc.
  give bucket, prefix, stanza and truth, after uploading the cached objects (building the cache first if
  absent, about 1.5 minutes once per machine).

``fresh_bucket(s3_endpoint, tool)`` / ``fresh_archive(s3_endpoint, tool)`` (from sandbox.archives) copy one
tool's archive into a new unique bucket, for tests that delete or alter objects.
"""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from sandbox.archives import (
    RealArchive,
    RealArchives,
    fresh_archive,
    fresh_bucket,
    load_real_archives,
)
from sandbox.s3 import MotoEndpoint

__all__ = ["RealArchive", "RealArchives", "fresh_archive", "fresh_bucket", "load_real_archives"]


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[MotoEndpoint]:
    with MotoEndpoint() as ep:
        yield ep


@pytest.fixture(scope="session")
def real_archives(s3_endpoint: MotoEndpoint) -> RealArchives:
    return load_real_archives(s3_endpoint)

