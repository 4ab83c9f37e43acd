"""Cloud Foundry name sync against a real catalog, moto server S3 and a Cloud Controller + UAA double."""
from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from pydantic import SecretStr

from backup_catalog.cloudfoundry import namesync as cfsync
from backup_catalog.cloudfoundry.client import CloudController, CloudControllerError
from backup_catalog.cloudfoundry.namesync import discover, sync_once
from backup_catalog.settings import Settings
from catalog import repo, spaces
from catalog.errors import UnknownService
from sandbox.s3 import ACCESS_KEY, REGION, SECRET_KEY, MotoEndpoint
from scheduler.clients import s3_client
from scheduler.storage import S3Store
from tests.support.ccdouble import CloudControllerDouble
from tests.support.fixtures import make_settings

pytestmark = pytest.mark.asyncio(loop_scope="session")

BUCKET = "cf-archives"
SPACE = "5f6a7b8c-0000-4000-8000-00000000aaaa"
G1 = "1a2b3c4d-0000-4000-8000-000000000001"
G2 = "1a2b3c4d-0000-4000-8000-000000000002"
G3 = "1a2b3c4d-0000-4000-8000-000000000003"


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoEndpoint]:
    with MotoEndpoint() as ep:
        ep.ensure_bucket(BUCKET)
        yield ep


@pytest.fixture
def root(moto: MotoEndpoint) -> str:
    """A fresh discovery root per test, with nothing under it yet."""
    return f"cf-{uuid.uuid4().hex[:8]}"


def put(moto: MotoEndpoint, root: str, *guids_or_keys: str) -> None:
    """Empty objects that look like an archive under ``root/<guid>/`` (or the given relative keys)."""
    c = moto.client()
    for g in guids_or_keys:
        keys = [g] if "/" in g or "." in g else [f"{g}/archive/main/archive.info", f"{g}/backup/main/backup.info"]
        for k in keys:
            c.put_object(Bucket=BUCKET, Key=f"{root}/{k}", Body=b"")


@pytest.fixture
def settings(moto: MotoEndpoint) -> Settings:
    return make_settings(moto, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                         aws_default_region=REGION)


@pytest_asyncio.fixture(loop_scope="session")
async def s3(settings: Settings) -> AsyncIterator[Any]:
    async with s3_client(settings) as client:
        yield client


@pytest_asyncio.fixture(loop_scope="session")
async def ccd() -> AsyncIterator[CloudControllerDouble]:
    async with CloudControllerDouble() as d:
        yield d
    assert d.unexpected == [], f"unexpected requests to the Cloud Controller double: {d.unexpected}"


@pytest_asyncio.fixture(loop_scope="session")
async def cc(ccd: CloudControllerDouble) -> AsyncIterator[CloudController]:
    async with CloudController(ccd.url, ccd.client_id, ccd.client_secret, timeout=2.0, attempts=4,
                               backoff=0.01, backoff_cap=0.05) as client:
        yield client


async def run(pool: asyncpg.Pool, settings: Settings, s3: Any, root: str, cc: CloudController) -> cfsync.SyncReport:
    return await sync_once(pool, settings, s3, BUCKET, root, cc=cc)


async def test_discover_lists_guid_prefixes_only(moto: MotoEndpoint, s3: Any, root: str) -> None:
    put(moto, root, G2, G1, "README.txt", "tmp/x", "not-a-guid/y", f"{G3.upper()}/z")
    put(moto, root + "-other", "1a2b3c4d-0000-4000-8000-0000000000ff")
    found = await discover(S3Store(s3, BUCKET), BUCKET, root + "/")
    assert found == [G1, G2, G3.lower()]
    with pytest.raises(ValueError):
        await discover(S3Store(s3, BUCKET), "another-bucket", root)


async def test_new_guid_registered_with_cc_name(pool: asyncpg.Pool, settings: Settings, s3: Any, moto: MotoEndpoint,
                                                root: str, ccd: CloudControllerDouble, cc: CloudController) -> None:
    put(moto, root, G1, G2)
    ccd.add(G1, "orders", SPACE, org_guid="org-42")        # G2: a prefix with no CC instance (orphan)
    rep = await run(pool, settings, s3, root, cc)
    assert [c.guid for c in rep.registered] == [G1] and rep.orphans == (G2,) and rep.ok
    rec = await repo.get_instance(pool, G1)
    assert (rec.ref.name, rec.ref.space_guid, rec.ref.org_guid) == ("orders", SPACE, "org-42")
    assert (rec.storage.bucket, rec.storage.prefix, rec.storage.layout) == (BUCKET, f"{root}/{G1}/", "auto")
    assert rec.created_at is None, "existed before the catalog learned of it"
    assert (await repo.resolve_name(pool, SPACE, "orders", datetime(2000, 1, 1, tzinfo=UTC))).record.guid == G1
    assert ccd.requests["token"] == 1 and ccd.requests["root"] == 1

    assert (await spaces.service_plans(pool, [G1])) == {G1: "plan-1"}, "the plan cf-undo clones with"

    again = await run(pool, settings, s3, root, cc)   # idempotent
    assert again.unchanged == (G1,) and again.registered == () and again.renamed == ()
    assert ccd.requests["token"] == 1, "the token is reused while valid"
    ccd.instances[G1].plan_guid = "plan-2"            # a plan update in CF is recorded on the next round
    await run(pool, settings, s3, root, cc)
    assert (await spaces.service_plans(pool, [G1])) == {G1: "plan-2"}


async def test_rename_in_cc_is_a_rename_in_catalog(pool: asyncpg.Pool, settings: Settings, s3: Any,
                                                   moto: MotoEndpoint, root: str, ccd: CloudControllerDouble,
                                                   cc: CloudController) -> None:
    put(moto, root, G1)
    ccd.add(G1, "orders", SPACE)
    await run(pool, settings, s3, root, cc)
    before = datetime.now(UTC)
    await asyncio.sleep(0.01)
    ccd.instances[G1].name = "orders-v2"
    rep = await run(pool, settings, s3, root, cc)
    assert [(c.guid, c.detail) for c in rep.renamed] == [(G1, "'orders' -> 'orders-v2'")]
    assert (await repo.get_instance(pool, G1)).ref.name == "orders-v2"
    old = await repo.resolve_name(pool, SPACE, "orders", at=before)
    assert old.record.guid == G1 and old.rule == "held_at_time"
    assert (await repo.resolve_name(pool, SPACE, "orders-v2", None)).record.guid == G1
    with pytest.raises(UnknownService):
        await repo.resolve_name(pool, "another-space", "orders", None)


async def test_name_swap_resolved_in_second_pass(pool: asyncpg.Pool, settings: Settings, s3: Any,
                                                 moto: MotoEndpoint, root: str, ccd: CloudControllerDouble,
                                                 cc: CloudController) -> None:
    put(moto, root, G1, G2)
    ccd.add(G1, "a", SPACE)
    ccd.add(G2, "b", SPACE)
    await run(pool, settings, s3, root, cc)
    ccd.instances[G1].name, ccd.instances[G2].name = "b", "c"   # G1 takes G2's old name
    rep = await run(pool, settings, s3, root, cc)
    assert rep.ok and sorted(c.guid for c in rep.renamed) == [G1, G2]
    assert (await repo.resolve_name(pool, SPACE, "b", None)).record.guid == G1


async def test_404_marks_deleted_keeping_the_name(pool: asyncpg.Pool, settings: Settings, s3: Any,
                                                  moto: MotoEndpoint, root: str, ccd: CloudControllerDouble,
                                                  cc: CloudController) -> None:
    put(moto, root, G1, G2)
    ccd.add(G1, "orders", SPACE)
    ccd.add(G2, "billing", SPACE)
    await run(pool, settings, s3, root, cc)
    del ccd.instances[G1]
    del ccd.instances[G2]
    moto.client().delete_object(Bucket=BUCKET, Key=f"{root}/{G2}/archive/main/archive.info")
    moto.client().delete_object(Bucket=BUCKET, Key=f"{root}/{G2}/backup/main/backup.info")
    rep = await run(pool, settings, s3, root, cc)
    assert sorted(c.guid for c in rep.deleted) == [G1, G2], "a catalogued instance is checked even if its prefix went"
    for guid, name in ((G1, "orders"), (G2, "billing")):
        rec = await repo.get_instance(pool, guid)
        assert rec.ref.deleted_at is not None and rec.ref.name == name
        res = await repo.resolve_name(pool, SPACE, name, None)
        assert res.record.guid == guid and res.rule == "most_recent_holder"
    calls = ccd.requests["instance"]
    rep = await run(pool, settings, s3, root, cc)
    assert rep.deleted == () and rep.unchanged == (G1,) and ccd.requests["instance"] == calls


async def test_expired_token_is_refreshed_once(pool: asyncpg.Pool, settings: Settings, s3: Any,
                                               moto: MotoEndpoint, root: str, ccd: CloudControllerDouble,
                                               cc: CloudController) -> None:
    put(moto, root, G1)
    ccd.add(G1, "orders", SPACE)
    await run(pool, settings, s3, root, cc)
    ccd.expire_tokens()                       # the server revokes; the client still thinks it valid
    ccd.instances[G1].name = "orders-2"
    rep = await run(pool, settings, s3, root, cc)
    assert [c.guid for c in rep.renamed] == [G1] and rep.ok
    assert cc.token_fetches == 2 and ccd.requests["token"] == 2
    assert [s for m, p, s in ccd.log if p.startswith("/v3/")].count(401) == 1

    ccd.token_lifetime = 1                    # an announced short lifetime is honoured without a 401
    ccd.expire_tokens()
    await run(pool, settings, s3, root, cc)   # 401 -> token with 1 s lifetime
    await asyncio.sleep(1.0)
    await run(pool, settings, s3, root, cc)
    assert cc.token_fetches == 4
    assert [s for m, p, s in ccd.log if p.startswith("/v3/")].count(401) == 2


async def test_bad_credentials_are_a_clear_error(pool: asyncpg.Pool, settings: Settings, s3: Any,
                                                 moto: MotoEndpoint, root: str, ccd: CloudControllerDouble) -> None:
    put(moto, root, G1)
    ccd.add(G1, "orders", SPACE)
    async with CloudController(ccd.url, ccd.client_id, "wrong", backoff=0.01) as bad:
        rep = await run(pool, settings, s3, root, bad)
    assert rep.registered == () and not rep.ok
    assert "UAA refused the client credentials (401): Bad credentials" in rep.failed[0].detail
    with pytest.raises(CloudControllerError, match="CF_API_URL"):
        CloudController.from_settings(Settings())


async def test_cc_outage_retried_and_no_names_lost(pool: asyncpg.Pool, settings: Settings, s3: Any,
                                                   moto: MotoEndpoint, root: str, ccd: CloudControllerDouble,
                                                   cc: CloudController) -> None:
    put(moto, root, G1, G2)
    ccd.add(G1, "orders", SPACE)
    ccd.add(G2, "billing", SPACE)
    await run(pool, settings, s3, root, cc)

    ccd.fail_next(2)                                     # a blip: retried, then fine
    ccd.instances[G1].name = "orders-2"
    rep = await run(pool, settings, s3, root, cc)
    assert rep.ok and [c.guid for c in rep.renamed] == [G1] and cc.retries >= 2

    ccd.instances[G1].name = "orders-3"                  # an outage: CC renamed one and deleted another
    del ccd.instances[G2]
    ccd.fail_next(1000)
    before = ccd.total_requests
    rep = await run(pool, settings, s3, root, cc)
    assert sorted(c.guid for c in rep.failed) == [G1, G2] and rep.renamed == rep.deleted == ()
    assert "failed 4 times; last: 503" in rep.failed[0].detail
    assert ccd.total_requests - before == 8, "4 attempts per instance"
    for guid, name in ((G1, "orders-2"), (G2, "billing")):
        rec = await repo.get_instance(pool, guid)
        assert rec.ref.name == name and rec.ref.deleted_at is None

    ccd._fail.clear()                                    # recovered: the next sync catches up
    ccd.stall_next(1, 3.0)                               # ... through one request slower than the timeout
    rep = await run(pool, settings, s3, root, cc)
    assert [c.guid for c in rep.renamed] == [G1] and [c.guid for c in rep.deleted] == [G2] and rep.ok
    assert (await repo.resolve_name(pool, SPACE, "orders-2", datetime.now(UTC) - timedelta(milliseconds=500)))\
        .record.guid == G1


async def test_service_scheduler_runs_name_sync(pool: asyncpg.Pool, settings: Settings, s3: Any, moto: MotoEndpoint,
                                                root: str, ccd: CloudControllerDouble, catalog_dsn: str) -> None:
    """`backup-catalog serve`'s scheduler discovers new GUIDs and names them from the Cloud Controller."""
    from aiohttp.test_utils import TestServer

    from backup_catalog.service.app import create_app

    put(moto, root, G3)
    ccd.add(G3, "billing", SPACE)
    served = settings.model_copy(update={"cf_api_url": ccd.url, "cf_client_id": ccd.client_id,
                                         "cf_client_secret": SecretStr(ccd.client_secret),
                                         "cf_discovery_bucket": BUCKET, "cf_discovery_root": root,
                                         "cf_sync_interval_seconds": 3600, "scan_interval_seconds": 3600})
    server = TestServer(create_app(served, pool=pool, s3=s3))
    await server.start_server()
    try:
        for _ in range(100):
            try:
                rec = await repo.get_instance(pool, G3)
                break
            except Exception:
                await asyncio.sleep(0.1)
        else:
            pytest.fail("the scheduled name sync never registered the discovered instance")
    finally:
        await server.close()
    assert (rec.ref.name, rec.ref.space_guid) == ("billing", SPACE)
    assert await pool.fetchval("SELECT count(*) FROM scan_leases WHERE key = 'cf-sync'") == 1
