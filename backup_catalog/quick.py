"""The terminal-speed path of the read-only commands ``backups`` and ``plan``.

An operator at a terminal runs them one after another, so they start like a small tool: they read the
two settings they use (``CATALOG_DSN`` / ``CATALOG_DSN_FILE``, ``S3_ENDPOINT_URL``) straight from the
environment by the same rules as :class:`~backup_catalog.settings.Settings` (:mod:`backup_catalog.envfiles`),
without importing pydantic, rich (only for the tables, not for ``--json``), aiohttp or botocore; and they
upgrade the catalog schema only when a migration is pending (:func:`catalog.db.ensure_schema`).
``make bench`` measures them beside ``pgbackrest info`` (bench/sidebyside.py).
"""
from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from backup_catalog import envfiles

COMMANDS = ("backups", "plan")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Secret:
    value: str

    def get_secret_value(self) -> str:
        return self.value

    def __repr__(self) -> str:
        return "Secret('**********')"


@dataclass(frozen=True, slots=True)
class QuickSettings:
    """The settings ``backups`` and ``plan`` read (see :class:`backup_catalog.config.PlanConfig`)."""

    catalog_dsn: Secret | None
    s3_endpoint_url: str | None
    deleted_retention_days: float = 30.0
    purge_grace_hours: float = 24.0

    @classmethod
    def from_env(cls) -> QuickSettings:
        """:raises envfiles.SettingsFileError: a ``CATALOG_DSN_FILE`` that cannot be used."""
        dsn = envfiles.setting("catalog_dsn")
        return cls(catalog_dsn=Secret(dsn) if dsn is not None else None,
                   s3_endpoint_url=envfiles.setting("s3_endpoint_url"),
                   deleted_retention_days=_float("deleted_retention_days", 30.0),
                   purge_grace_hours=_float("purge_grace_hours", 24.0))


def _float(name: str, default: float) -> float:
    """A non-negative finite number setting (as Settings validates it); a bad value is a usage error."""
    import math
    raw = envfiles.setting(name)
    if raw is None:
        return default
    try:
        v = float(raw)
    except ValueError:
        v = -1.0
    if not math.isfinite(v) or v < 0:
        raise envfiles.SettingsFileError(f"{name.upper()}: not a non-negative number: {raw!r}")
    return v


async def _on_catalog(settings: QuickSettings, work: Callable[[Any], Awaitable[T]]) -> T:
    from catalog import db as catalog_db
    if settings.catalog_dsn is not None:
        dsn = settings.catalog_dsn.get_secret_value()
    else:
        from catalog import embedded
        dsn = await asyncio.to_thread(embedded.ensure_cluster)
    pool = await catalog_db.open_pool(dsn, min_size=1, max_size=2)
    try:
        await catalog_db.ensure_schema(pool)
        return await work(pool)
    finally:
        await pool.close()


def _show(args: argparse.Namespace, doc: Any, pretty: str) -> int:
    if args.json:
        print(json.dumps(doc.to_json() if hasattr(doc, "to_json") else doc, default=str))
    else:
        from rich.console import Console

        from backup_catalog import documents
        getattr(documents, pretty)(doc, Console())
    return 0


async def cmd_backups(args: argparse.Namespace, settings: QuickSettings) -> int:
    from backup_catalog.usecases import backups
    doc = await _on_catalog(settings, lambda pool: backups.backups_doc(pool, args.space, args.name, settings))
    return _show(args, doc, "print_backups")


async def cmd_plan(args: argparse.Namespace, settings: QuickSettings) -> int:
    from backup_catalog.cli_parsers import clone_request
    from backup_catalog.usecases import plan
    request = clone_request(args)
    doc = await _on_catalog(settings, lambda pool: plan.plan_doc(pool, settings, args.space, request))
    return _show(args, doc, "print_plan")


def dispatch(args: argparse.Namespace) -> Callable[[argparse.Namespace, QuickSettings], Coroutine[Any, Any, int]]:
    return {"backups": cmd_backups, "plan": cmd_plan}[args.cmd]
