"""Use case: the instance lifecycle (register, rename, delete, list), for the CLI's ``instances`` and
the broker/operator routes ``PUT/PATCH/DELETE /instances/{guid}``, ``GET /instances``."""
from __future__ import annotations

import asyncpg

from catalog import repo, spaces
from catalog.errors import Conflict
from catalog.rows import InstanceRecord
from recovery.model import InstanceRef, Storage


async def register(pool: asyncpg.Pool, ref: InstanceRef, storage: Storage, *,
                   service_plan_guid: str | None = None) -> tuple[bool, InstanceRecord]:
    """Register the instance or update its storage (and the CF service plan it was created with, when
    given); returns (newly created, the stored record)."""
    created = await repo.register_instance(pool, ref, storage)
    await spaces.set_service_plan(pool, ref.instance_guid, service_plan_guid)
    return created, await repo.get_instance(pool, ref.instance_guid)


async def rename(pool: asyncpg.Pool, guid: str, name: str) -> InstanceRecord:
    """Give a live instance a new name (the old one stays in its name history). A deleted instance keeps
    its last name: renaming it is a conflict."""
    if (await repo.get_instance(pool, guid)).ref.deleted_at is not None:
        raise Conflict(f"instance {guid} is deleted: it keeps its last name")
    await repo.rename_instance(pool, guid, name)
    return await repo.get_instance(pool, guid)


async def delete(pool: asyncpg.Pool, guid: str) -> bool:
    """Mark the instance deleted (its catalog data and last name are kept); True if newly deleted."""
    return await repo.delete_instance(pool, guid)


async def list_all(pool: asyncpg.Pool) -> list[InstanceRecord]:
    return await repo.list_instances(pool)


async def get(pool: asyncpg.Pool, guid: str) -> InstanceRecord:
    """The instance's record; UnknownInstance if it was never registered."""
    return await repo.get_instance(pool, guid)
