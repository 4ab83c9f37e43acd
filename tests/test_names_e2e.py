"""``clone-from`` name resolution through ``plan_doc`` on real, scanned archives: renames, deletes, a name
taken over by a new instance, the same name in two spaces, and a deleted instance cloned by its old name.

Two different archives stand for two instances, so the plan's backup label shows which one was chosen
(pgBackRest labels look like ``20261125-115003F``, barman-cloud ones like ``20261125T115038``). Name
changes happen at chosen times between the archives' commits, so a time target picks the holder at
that time (DESIGN.md, "Resolution of clone-from NAME").
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest

from backup_catalog.settings import Settings
from backup_catalog.usecases import backups
from backup_catalog.usecases import plan as plans
from catalog import repo
from catalog.errors import UnknownService
from recovery.timefmt import iso
from tests.realarchives.plugin import RealArchive, RealArchives
from tests.support.clones import clone_request
from tests.support.fixtures import commits, register_and_scan

pytestmark = pytest.mark.realtools


def between(arch: RealArchive, a: int, b: int) -> datetime:
    cs = commits(arch)
    return cs[a].time + (cs[b].time - cs[a].time) / 2


def labels(arch: RealArchive) -> set[str]:
    return set(arch.truth["scenario_backups"].values())


async def plan(pool: asyncpg.Pool, settings: Settings, space: str, name: str, **target: Any) -> dict[str, Any]:
    body = {"clone-from": name, **{k.replace("_", "-"): v for k, v in target.items()}}
    return (await plans.plan_doc(pool, settings, space, clone_request(body))).to_json()


@pytest.fixture
def pb(real_archives: RealArchives) -> RealArchive:
    return real_archives["pgbackrest"]


@pytest.fixture
def bm(real_archives: RealArchives) -> RealArchive:
    return real_archives["barman"]


def long_before(arch: RealArchive) -> datetime:
    return min(c.time for c in commits(arch).values()) - timedelta(hours=1)


async def test_rename_keeps_old_name_resolvable_before_the_rename(pool: asyncpg.Pool, client: Any,
                                                                  settings: Settings, pb: RealArchive) -> None:
    await register_and_scan(pool, client, settings, pb, "g-a", space="s1", name="orders", at=long_before(pb))
    renamed_at = between(pb, 9, 13)       # after the fork, before the TL2 commits
    await repo.rename_instance(pool, "g-a", "billing", at=renamed_at)

    before = await plan(pool, settings, "s1", "orders", point_in_time=iso(between(pb, 7, 8)))
    assert before["source"]["instance_guid"] == "g-a"
    assert "held the name 'orders'" in before["source"]["resolution"]
    assert (await repo.resolve_name(pool, "s1", "orders", between(pb, 7, 8))).rule == "held_at_time"
    assert before["source"]["name"] == "billing"          # its name now
    assert before["backup"]["label"] == pb.truth["scenario_backups"]["B2"]

    # the new name works for a time after the rename, and with no time at all
    after = await plan(pool, settings, "s1", "billing", point_in_time=iso(between(pb, 14, 15)))
    assert after["source"]["instance_guid"] == "g-a" and "held the name 'billing'" in after["source"]["resolution"]
    latest = await plan(pool, settings, "s1", "billing", latest=True)
    assert latest["source"]["instance_guid"] == "g-a"
    assert latest["backup"]["label"] == pb.truth["scenario_backups"]["B3"]

    # the old name after the rename: nobody held it then, so its most recent holder is used (and said so)
    late = await plan(pool, settings, "s1", "orders", point_in_time=iso(between(pb, 14, 15)))
    assert late["source"]["instance_guid"] == "g-a"
    assert "most recent holder" in late["source"]["resolution"]
    assert (await repo.resolve_name(pool, "s1", "orders", between(pb, 14, 15))).rule == "most_recent_holder"


async def test_delete_then_recreate_under_the_same_name(pool: asyncpg.Pool, client: Any, settings: Settings,
                                                        pb: RealArchive, bm: RealArchive) -> None:
    # the pgBackRest archive's commits all precede the barman archive's: delete in between
    deleted_at = max(c.time for c in commits(pb).values()) + (min(c.time for c in commits(bm).values())
                                                              - max(c.time for c in commits(pb).values())) / 2
    await register_and_scan(pool, client, settings, pb, "g-old", space="s1", name="prod", at=long_before(pb))
    assert await repo.delete_instance(pool, "g-old", at=deleted_at)
    await register_and_scan(pool, client, settings, bm, "g-new", space="s1", name="prod",
                            at=deleted_at + timedelta(milliseconds=10))

    old = await plan(pool, settings, "s1", "prod", point_in_time=iso(between(pb, 14, 15)))
    assert old["source"]["instance_guid"] == "g-old"
    assert old["source"]["deleted_at"] is not None
    assert old["backup"]["label"] in labels(pb)

    new = await plan(pool, settings, "s1", "prod", point_in_time=iso(between(bm, 7, 8)))
    assert new["source"]["instance_guid"] == "g-new" and new["source"]["deleted_at"] is None
    assert new["backup"]["label"] == bm.truth["scenario_backups"]["B2"]

    for target in ({"latest": True}, {"immediate": True}, {"lsn": str(commits(bm)[5].lsn)}):
        doc = await plan(pool, settings, "s1", "prod", **target)
        assert doc["source"]["instance_guid"] == "g-new", target     # no time: the most recent holder

    doc = await backups.backups_doc(pool, "s1", "prod")
    assert [i["instance_guid"] for i in doc["instances"]] == ["g-new", "g-old"]


async def test_same_name_in_two_spaces_and_other_spaces_unknown(pool: asyncpg.Pool, client: Any,
                                                                settings: Settings, pb: RealArchive,
                                                                bm: RealArchive) -> None:
    await register_and_scan(pool, client, settings, pb, "g-s1", space="s1", name="shared", at=long_before(pb))
    await register_and_scan(pool, client, settings, bm, "g-s2", space="s2", name="shared", at=long_before(pb))
    await register_and_scan(pool, client, settings, pb, "g-only", space="s1", name="only-in-s1",
                            at=long_before(pb))

    a = await plan(pool, settings, "s1", "shared", latest=True)
    b = await plan(pool, settings, "s2", "shared", latest=True)
    assert (a["source"]["instance_guid"], a["source"]["space_guid"]) == ("g-s1", "s1")
    assert (b["source"]["instance_guid"], b["source"]["space_guid"]) == ("g-s2", "s2")
    assert a["backup"]["label"] in labels(pb) and b["backup"]["label"] in labels(bm)

    with pytest.raises(UnknownService) as ei:
        await plan(pool, settings, "s2", "only-in-s1", latest=True)
    assert (ei.value.space, ei.value.name, ei.value.code) == ("s2", "only-in-s1", "unknown_service")
    with pytest.raises(UnknownService):
        await plan(pool, settings, "s3", "shared", point_in_time=iso(between(pb, 7, 8)))
    with pytest.raises(UnknownService):
        await backups.backups_doc(pool, "s2", "only-in-s1")


async def test_clone_of_a_deleted_instance_by_its_old_name(pool: asyncpg.Pool, client: Any, settings: Settings,
                                                           pb: RealArchive) -> None:
    await register_and_scan(pool, client, settings, pb, "g-gone", space="s1", name="staging", at=long_before(pb))
    await repo.rename_instance(pool, "g-gone", "legacy", at=between(pb, 7, 8))
    gone_at = max(c.time for c in commits(pb).values()) + timedelta(seconds=1)
    assert await repo.delete_instance(pool, "g-gone", at=gone_at)

    # by its last name, with and without a time (a time after the delete too)
    for target in ({"latest": True}, {"point-in-time": iso(between(pb, 14, 15))},
                   {"point-in-time": iso(gone_at + timedelta(seconds=5))}):
        doc = (await plans.plan_doc(pool, settings, "s1", clone_request({"clone-from": "legacy", **target}))).to_json()
        assert doc["source"]["instance_guid"] == "g-gone", target
        assert doc["source"]["deleted_at"] == iso(gone_at)
        assert "deleted at" in doc["source"]["resolution"]
    assert (await repo.resolve_name(pool, "s1", "legacy")).rule == "most_recent_holder"
    # and by the name it had before the rename, at a time it held it
    doc = await plan(pool, settings, "s1", "staging", point_in_time=iso(between(pb, 5, 6)))
    assert doc["source"]["instance_guid"] == "g-gone" and doc["source"]["name"] == "legacy"
    assert doc["backup"]["label"] == pb.truth["scenario_backups"]["B1"]
