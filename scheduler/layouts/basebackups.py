"""What WAL-G and WAL-E share (their layout modules use it): ``basebackups_005/`` with one stop sentinel
per backup and ``wal_005/`` flat, the scan of that tree, the purge prefixes, the one-copy duplicate rule.
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from recovery.errors import ParseError
from recovery.model import Backup, BackupStatus, BackupType, Storage
from recovery.wal import DEFAULT_SEG_SIZE
from scheduler.layouts.spec import EventBackupsFn, Kind, MetaEvent, ScanFn, Target, WalRoot, wal_target
from scheduler.scanning import Acc, LayoutScan, Previous, WalSource, bounded_gather, etag_key, flat_key, list_wal
from scheduler.storage import NotFound, ObjectInfo, ObjectStore


async def scan_005(parse_sentinel: Callable[[bytes, str, str], Backup], classify_wal_key: Callable[[str, int], Any],
                   store: ObjectStore, previous: Previous, root: str, acc: Acc, full: bool,
                   lookback: int) -> LayoutScan:
    """Sentinels under ``basebackups_005/`` (read concurrently with the WAL listing of ``wal_005/``)."""
    bdir = f"{root}basebackups_005/"
    blist = await store.list_dir(bdir)
    prev = {b.metadata_key: b for b in previous.backups if b.metadata_key}
    with_sentinel: set[str] = set()

    async def read_sentinel(o: ObjectInfo, label: str) -> Backup | None:
        ek = etag_key(o.key)
        old = prev.get(o.key)
        if old is not None and not full and acc.cursors.get(ek) == o.etag:
            return old
        try:
            b: Backup = parse_sentinel(await store.read(o.key), label, o.key)
        except NotFound:   # listed a moment ago: a race with retention. Keep what we knew; only a complete
            acc.issue("not_found_race", o.key, "sentinel vanished after listing")   # listing lacking it deletes
            return old
        except ParseError as e:
            acc.issue("metadata_error", o.key, str(e))
            b = Backup(label=label, type=BackupType.FULL, status=BackupStatus.FAILED, timeline=None, start_lsn=None,
                       stop_lsn=None, start_time=None, stop_time=None, error=f"unreadable sentinel: {e}", metadata_key=o.key)
        if b.stop_time is None:
            b = replace(b, stop_time=o.last_modified, stop_time_exact=False)
        acc.cursors[ek] = o.etag
        return replace(b, metadata_key=o.key)

    reads = []
    for o in blist.objects:
        name = o.key[len(bdir):]
        if not name.endswith("_backup_stop_sentinel.json"):
            acc.foreign(o.key, "unexpected object in basebackups_005/")
            continue
        label = name[: -len("_backup_stop_sentinel.json")]
        with_sentinel.add(label)
        reads.append(read_sentinel(o, label))
    src = WalSource(f"{root}wal_005/", classify_wal_key, flat_key)
    # sentinel reads and the WAL listing overlap: a scan costs about the longer of the two, not their sum
    found, seg_size = await asyncio.gather(
        bounded_gather(reads), list_wal(store, src, previous, acc, full, lookback, previous.seg_size or DEFAULT_SEG_SIZE))
    backups = [b for b in found if b is not None]
    for p in blist.prefixes:
        label = p[len(bdir):].rstrip("/")
        if label not in with_sentinel:
            backups.append(Backup(label=label, type=BackupType.FULL, status=BackupStatus.RUNNING, timeline=None,
                                  start_lsn=None, stop_lsn=None, start_time=None, stop_time=None,
                                  error="no stop sentinel: in progress, failed or abandoned"))
    pg_version = next((b.pg_version for b in backups if b.pg_version), None)
    system_id = next((b.system_id for b in backups if b.system_id), None)
    return LayoutScan(None, seg_size or DEFAULT_SEG_SIZE, tuple(backups), pg_version, system_id)


def scanner(parse_sentinel: Callable[[bytes, str, str], Backup],
            classify_wal_key: Callable[[str, int], Any]) -> ScanFn:
    """The layout's ``scan``: :func:`scan_005` with its sentinel parser and WAL key classification."""
    async def scan(store: ObjectStore, storage: Storage, previous: Previous, root: str, acc: Acc, full: bool,
                   lookback: int) -> LayoutScan:
        return await scan_005(parse_sentinel, classify_wal_key, store, previous, root, acc, full, lookback)
    return scan


def event_classifier(classify_wal_key: Callable[[str, int], Any]) -> Callable[[str | None, str, int], Target]:
    """The layout's ``classify_event``: ``wal_005/`` by its WAL key classification, a stop sentinel
    directly under ``basebackups_005/``, payload in a backup's directory."""
    def classify_event(stanza: str | None, rel: str, seg_size: int) -> Target:
        if rel.startswith("wal_005/"):
            return wal_target(classify_wal_key(rel[len("wal_005/"):], seg_size))
        if rel.startswith("basebackups_005/"):
            name = rel[len("basebackups_005/"):]
            if "/" not in name and name.endswith(_SENTINEL):
                return Target(Kind.BACKUP_META, label=name[: -len(_SENTINEL)])
            if "/" in name:
                return Target(Kind.BACKUP_PAYLOAD, label=name.split("/", 1)[0])
        return Target(Kind.FOREIGN, reason="not under wal_005/ or basebackups_005/")
    return classify_event


def wal_roots_of(classify_wal_key: Callable[[str, int], Any]
                 ) -> Callable[[ObjectStore, str, str | None], Awaitable[list[WalRoot]]]:
    """The layout's ``wal_roots``: ``wal_005/``, flat."""
    async def wal_roots(store: ObjectStore, root: str, stanza: str | None) -> list[WalRoot]:
        return [WalRoot(f"{root}wal_005/", classify_wal_key, False)]
    return wal_roots


def _lm(t: datetime | None) -> datetime | None:
    """An event time as a listing's LastModified (whole seconds)."""
    return t.replace(microsecond=0) if t is not None else None


def event_backups_of(parse_sentinel: Callable[[bytes, str, str], Backup]) -> EventBackupsFn:
    """The layout's ``event_backups``: each stop sentinel created is read (its time, when it has none, is
    the event's, as a scan takes LastModified); payload of a backup without one: in progress."""
    async def event_backups(store: ObjectStore, root: str, stanza: str | None, have: Mapping[str, Backup],
                            metas: Sequence[MetaEvent], unknown: frozenset[str],
                            acc: Acc) -> tuple[dict[str, Backup], int | None, int | None]:
        out = dict(have)
        for m in metas:
            label = m.label or ""
            try:
                b: Backup = parse_sentinel(await store.read(m.key), label, m.key)
            except NotFound:
                acc.issue("not_found_race", m.key, "sentinel created, then gone before it was read")
                continue
            except ParseError as e:
                acc.issue("metadata_error", m.key, str(e))
                b = Backup(label=label, type=BackupType.FULL, status=BackupStatus.FAILED, timeline=None,
                           start_lsn=None, stop_lsn=None, start_time=None, stop_time=None,
                           error=f"unreadable sentinel: {e}", metadata_key=m.key)
            if b.stop_time is None:
                b = replace(b, stop_time=_lm(m.time), stop_time_exact=False)
            out[label] = replace(b, metadata_key=m.key)
        for label in sorted(unknown - {m.label for m in metas}):
            out[label] = Backup(label=label, type=BackupType.FULL, status=BackupStatus.RUNNING, timeline=None,
                                start_lsn=None, stop_lsn=None, start_time=None, stop_time=None,
                                error="no stop sentinel: in progress, failed or abandoned")
        return out, None, None
    return event_backups


def purge_prefixes(root: str, stanza: str | None) -> tuple[str, ...]:
    """``<prefix>/basebackups_005/`` and ``<prefix>/wal_005/`` (no stanza)."""
    return (f"{root}basebackups_005/", f"{root}wal_005/")


_SENTINEL = "_backup_stop_sentinel.json"
DUPLICATES_NOTE = "the tool fetches one of the copies without comparing them"
