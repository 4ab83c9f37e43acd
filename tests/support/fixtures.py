"""Helpers shared by the end-to-end tests: settings for the session's moto and catalog, registering
and scanning one real archive under a chosen GUID/space/name, and the truth's expected rows.

The truth comes from tests/realarchives (``RealArchive.truth``): ``commits`` [{id, tl, commit_time,
commit_lsn}], ``restored_ids_at_fork`` (the TL1 rows on timeline 2's path) and ``scenario_backups``.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from pydantic import SecretStr

from backup_catalog.settings import Settings
from catalog import repo
from recovery.lsn import Lsn
from recovery.model import InstanceRef, Storage
from scheduler import runner

Row = tuple[int, int]   # (id, tl) of the ``ticks`` table


# Sentinel credentials: tests assert they never show up in bodies, logs or metrics.
BROKER = ("broker-user", "br0ker-SENTINEL-pw")
OPERATOR = ("op-user", "0perator-SENTINEL-pw")


def make_settings(s3_endpoint: Any = None, catalog_dsn: str | None = None, **kw: Any) -> Settings:
    """The tests' one Settings builder: the sentinel broker/operator users, S3 credentials moto accepts,
    two S3 attempts; ``s3_endpoint`` (a MotoEndpoint, a proxy or a URL) and ``catalog_dsn`` when the test
    reaches them (else S3 points at a closed port). ``kw`` overrides any setting."""
    base: dict[str, Any] = dict(
        broker_username=BROKER[0], broker_password=SecretStr(BROKER[1]),
        operator_username=OPERATOR[0], operator_password=SecretStr(OPERATOR[1]),
        aws_access_key_id=SecretStr("testing"), aws_secret_access_key=SecretStr("testing"),
        s3_endpoint_url="http://127.0.0.1:9", s3_max_attempts=2)
    if s3_endpoint is not None:
        base["s3_endpoint_url"] = s3_endpoint if isinstance(s3_endpoint, str) else s3_endpoint.url
    if catalog_dsn is not None:
        base["catalog_dsn"] = SecretStr(catalog_dsn)
    return Settings(**(base | kw))


async def register(pool: asyncpg.Pool, arch: Any, guid: str, *, space: str, name: str,
                   at: datetime | None = None) -> None:
    """Register ``arch``'s bucket/prefix as instance ``guid`` named ``name`` in ``space`` (layout auto)."""
    await repo.register_instance(pool, InstanceRef(guid, space, name),
                                 Storage(arch.bucket, arch.prefix, "auto", arch.stanza), at=at)


async def register_and_scan(pool: asyncpg.Pool, client: Any, settings: Settings, arch: Any, guid: str, *,
                            space: str, name: str, at: datetime | None = None) -> None:
    await register(pool, arch, guid, space=space, name=name, at=at)
    await scan(pool, client, settings, guid, full=True)


async def scan(pool: asyncpg.Pool, client: Any, settings: Settings, guid: str, *, full: bool) -> None:
    outcome = await runner.scan_instance(pool, client, guid, full=full, settings=settings)
    assert outcome.ok, f"scan of {guid} failed: {outcome.code}: {outcome.message}"


@dataclass(frozen=True, slots=True)
class Commit:
    id: int
    tl: int
    time: datetime
    lsn: Lsn

    @property
    def row(self) -> Row:
        return (self.id, self.tl)


def commits(arch: Any) -> dict[int, Commit]:
    """The fixture builder's commits by id (times are the commit records' timestamps)."""
    return {c["id"]: Commit(c["id"], c["tl"], datetime.fromisoformat(c["commit_time"]), Lsn.parse(c["commit_lsn"]))
            for c in arch.truth["commits"]}


def on_path(arch: Any, path: Iterable[int]) -> list[Commit]:
    """Commits on a timeline path, in id order: (1,) = all TL1 commits; (1, 2) = the TL1 commits that
    were restored at the fork plus every TL2 commit."""
    p = tuple(path)
    restored = set(arch.truth["restored_ids_at_fork"])
    every = sorted(commits(arch).values(), key=lambda c: c.id)
    if p == (1,):
        return [c for c in every if c.tl == 1]
    if p == (1, 2):
        return [c for c in every if (c.tl == 1 and c.id in restored) or c.tl == 2]
    raise ValueError(f"the fixtures have no timeline path {p}")


def rows_until_time(arch: Any, path: Iterable[int], t: datetime, *, inclusive: bool = True) -> list[Row]:
    """Rows PostgreSQL must end with for recovery_target_time ``t`` on ``path`` (LAYOUTS §8.1)."""
    return [c.row for c in on_path(arch, path) if (c.time <= t if inclusive else c.time < t)]


def rows_until_lsn(arch: Any, path: Iterable[int], lsn: Lsn) -> list[Row]:
    """Rows whose commit ended at or before ``lsn`` (commit_lsn is the insert position after the commit)."""
    return [c.row for c in on_path(arch, path) if c.lsn <= lsn]
