"""Instance registration and name history: rename, delete, re-create, resolution at a time."""
from __future__ import annotations

import pytest

from catalog import repo
from catalog.errors import Conflict, UnknownInstance, UnknownService
from tests.catalog.factories import SPACE, ref, storage, t

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_register_creates_then_updates(pool) -> None:
    assert await repo.register_instance(pool, ref(org_guid="org-1"), storage(), at=t(0)) is True
    assert await repo.register_instance(pool, ref(), storage(bucket="other", layout="pgbackrest"), at=t(1)) is False
    rec = await repo.get_instance(pool, "inst-1")
    assert rec.storage.bucket == "other" and rec.storage.layout == "pgbackrest"
    assert rec.ref.org_guid == "org-1"          # not erased by an update without org
    assert rec.ref.name == "production" and rec.created_at == t(0) and rec.ref.deleted_at is None
    assert [r.guid for r in await repo.list_instances(pool)] == ["inst-1"]


async def test_unknown_instance(pool) -> None:
    with pytest.raises(UnknownInstance):
        await repo.get_instance(pool, "nope")
    with pytest.raises(UnknownInstance):
        await repo.rename_instance(pool, "nope", "x")
    with pytest.raises(UnknownInstance):
        await repo.delete_instance(pool, "nope")


async def test_rename_keeps_history(pool) -> None:
    await repo.register_instance(pool, ref(name="prod"), storage(), at=t(0))
    await repo.rename_instance(pool, "inst-1", "prod-old", at=t(10))
    assert (await repo.get_instance(pool, "inst-1")).ref.name == "prod-old"
    assert (await repo.resolve_name(pool, SPACE, "prod", t(5))).record.guid == "inst-1"
    assert (await repo.resolve_name(pool, SPACE, "prod-old", t(15))).rule == "held_at_time"
    # register with a different name = rename
    await repo.register_instance(pool, ref(name="prod-new"), storage(), at=t(20))
    assert (await repo.get_instance(pool, "inst-1")).ref.name == "prod-new"
    assert [h.guid for h in await repo.name_holders(pool, SPACE, "prod-old")] == ["inst-1"]
    rows = await pool.fetch("SELECT name FROM instance_names ORDER BY valid_from")
    assert [r["name"] for r in rows] == ["prod", "prod-old", "prod-new"]


async def test_name_cannot_be_taken_from_a_live_instance(pool) -> None:
    await repo.register_instance(pool, ref("a", "prod"), storage(), at=t(0))
    with pytest.raises(Conflict):
        await repo.register_instance(pool, ref("b", "prod"), storage(), at=t(1))
    await repo.register_instance(pool, ref("b", "other"), storage(), at=t(1))
    with pytest.raises(Conflict):
        await repo.rename_instance(pool, "b", "prod", at=t(2))
    assert await repo.table_counts(pool) == await repo.table_counts(pool)
    assert (await repo.table_counts(pool))["instances"] == 2


async def test_delete_keeps_name_and_recreate_takes_over(pool) -> None:
    await repo.register_instance(pool, ref("old", "prod"), storage(), at=t(0))
    assert await repo.delete_instance(pool, "old", at=t(10)) is True
    assert await repo.delete_instance(pool, "old", at=t(11)) is False   # idempotent, keeps first time
    old = await repo.get_instance(pool, "old")
    assert old.ref.name == "prod" and old.ref.deleted_at == t(10)
    # deleted: still the holder of its last name
    res = await repo.resolve_name(pool, SPACE, "prod", None)
    assert res.record.guid == "old" and res.rule == "most_recent_holder" and "deleted" in res.reason

    await repo.register_instance(pool, ref("new", "prod"), storage(), at=t(20))
    assert [h.guid for h in await repo.name_holders(pool, SPACE, "prod")] == ["new", "old"]
    assert (await repo.resolve_name(pool, SPACE, "prod", None)).record.guid == "new"
    assert (await repo.resolve_name(pool, SPACE, "prod", t(5))).record.guid == "old"     # before delete
    assert (await repo.resolve_name(pool, SPACE, "prod", t(15))).record.guid == "old"    # deleted, not yet replaced
    assert (await repo.resolve_name(pool, SPACE, "prod", t(25))).record.guid == "new"
    with pytest.raises(Conflict):
        await repo.rename_instance(pool, "old", "zombie", at=t(30))
    assert [r.guid for r in await repo.list_instances(pool, include_deleted=False)] == ["new"]


async def test_resolution_before_any_holder_uses_most_recent(pool) -> None:
    await repo.register_instance(pool, ref("a", "prod"), storage(), at=t(10))
    res = await repo.resolve_name(pool, SPACE, "prod", t(0))
    assert res.record.guid == "a" and res.rule == "most_recent_holder"
    assert "no instance held" in res.reason


async def test_existed_before_holds_the_name_from_the_beginning(pool) -> None:
    await repo.register_instance(pool, ref("a", "prod"), storage(), at=t(10), existed_before=True)
    res = await repo.resolve_name(pool, SPACE, "prod", t(-1000))
    assert res.record.guid == "a" and res.rule == "held_at_time"
    assert (await repo.get_instance(pool, "a")).created_at is None


async def test_existed_before_after_a_deleted_holder_starts_at_its_deletion(pool) -> None:
    await repo.register_instance(pool, ref("old", "prod"), storage(), at=t(0))
    await repo.delete_instance(pool, "old", at=t(5))
    await repo.register_instance(pool, ref("new", "prod"), storage(), at=t(10), existed_before=True)
    assert (await repo.resolve_name(pool, SPACE, "prod", t(3))).record.guid == "old"
    assert (await repo.resolve_name(pool, SPACE, "prod", t(6))).record.guid == "new"


async def test_same_name_in_two_spaces(pool) -> None:
    await repo.register_instance(pool, ref("a", "prod", space="s1"), storage(), at=t(0))
    await repo.register_instance(pool, ref("b", "prod", space="s2"), storage(), at=t(0))
    assert (await repo.resolve_name(pool, "s1", "prod", t(1))).record.guid == "a"
    assert (await repo.resolve_name(pool, "s2", "prod", None)).record.guid == "b"
    with pytest.raises(UnknownService) as exc:
        await repo.resolve_name(pool, "s3", "prod", None)
    assert exc.value.code == "unknown_service"


async def test_name_only_in_another_space_is_unknown(pool) -> None:
    await repo.register_instance(pool, ref("a", "prod", space="s1"), storage(), at=t(0))
    with pytest.raises(UnknownService):
        await repo.resolve_name(pool, "s2", "prod", t(1))


async def test_rename_back_and_forth(pool) -> None:
    await repo.register_instance(pool, ref("a", "x"), storage(), at=t(0))
    await repo.rename_instance(pool, "a", "y", at=t(1))
    await repo.register_instance(pool, ref("b", "x"), storage(), at=t(2))
    await repo.delete_instance(pool, "b", at=t(3))
    await repo.rename_instance(pool, "a", "x", at=t(4))
    assert [h.guid for h in await repo.name_holders(pool, SPACE, "x")] == ["a", "b"]
    assert (await repo.resolve_name(pool, SPACE, "x", t(0.5))).record.guid == "a"
    assert (await repo.resolve_name(pool, SPACE, "x", t(2.5))).record.guid == "b"
    assert (await repo.resolve_name(pool, SPACE, "x", t(3.5))).record.guid == "b"   # deleted, still holds
    assert (await repo.resolve_name(pool, SPACE, "x", t(5))).record.guid == "a"


async def test_rename_not_after_current_start_is_conflict(pool) -> None:
    await repo.register_instance(pool, ref("a", "x"), storage(), at=t(10))
    with pytest.raises(Conflict):
        await repo.rename_instance(pool, "a", "y", at=t(5))
    assert (await repo.get_instance(pool, "a")).ref.name == "x"
